"""What makes the embedded model's self-edits help? A study on the tuning split, then one held-out evaluation.

SQuAD passages in SEAL's grouping (`squad_dev200.json`): passages 0-99 are the tuning split, where every
choice below is made; passages 100-199 are held out and evaluated once, with the chosen recipe.

    python experiments/small_scale.py tune [--passages 20]      # stages 1-3 below, resumable
    python experiments/small_scale.py heldout [--passages 100]  # the chosen arm on passages 100-..., once
    python experiments/small_scale.py rest-em [--passages 64]   # ReST-EM with it: tuning passages train,
                                                                # held-out passages 100-... evaluate
    python experiments/small_scale.py table                     # docs/results/small_scale.{md,json}

Tuning stages, each arm a `seal eval` run of the self-edit condition only (base and passage-only training
are run once, with the same seeds every arm's passage condition would use), each scored as the paired
difference "passage + self-edit" - "train on passage" over the same questions, resampling passages:
  1. sampling temperature of the default format (implications): 1.0, 0.7, 0.4;
  2. formats at the best temperature: rewrite, self-qa, open-book-qa, and SEAL's reference prompts (with
     SEAL's split);
  3. the update rule: context distillation (--update distill) on the best arm so far, against its SFT.
The best arm is the one with the largest mean paired difference. The rest-em stage runs `seal train` with
the held-out run's config (the best arm): by default 2 rounds x 20 tuning passages x 5 self-edits (the
training passages are the tuning split's, never the held-out ones; each reward the mean of 3 inner loops, as
the held-out config says: about 90 min of rewards and 45 min of evaluation a round in float32 on 2 cores),
every round evaluated on the first 64 held-out passages (322 questions), paired against each other. Its
round 0 is the heldout stage's records for those passages (same config, seeds and groups), the first
group recomputed as the check. Every run directory keeps its config;
the table records which split each run used. A rerun resumes each run where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from seal_lm.records import append_jsonl, read_jsonl
from seal_lm.stats import mean_with_interval, paired_difference

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "squad_dev200.json"
HELD_OUT_START = 100
GRADER = "contains"
TEMPERATURES = (1.0, 0.7, 0.4)
FORMATS = ("rewrite", "self-qa", "open-book-qa", "reference-implications", "reference-rewrite",
           "reference-self-qa")


def arm_args(format_: str, temperature: float, update: str = "sft") -> list[str]:
    split = "reference" if format_.startswith("reference-") else "seal"
    return ["--format", format_, "--split", split, "--self_edit_sampling.temperature", str(temperature),
            "--update", update]


def arm_name(format_: str, temperature: float, update: str = "sft") -> str:
    return f"{format_}-t{temperature}" + ("" if update == "sft" else f"-{update}")


def run_seal(runs: Path, name: str, arguments: list[str], meta: dict) -> Path:
    """One `seal` command writing to runs/name, resumed if that directory exists with the same config (seal's own
    resume); `meta` is recorded beside it in study.json. Returns the directory."""
    out = runs / name
    if not (out / "summary.json").exists() or (out / "incomplete").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "incomplete").touch()
        started = time.time()
        command = [str(Path(sys.executable).parent / "seal"), *arguments, "--out", str(out), "--no_progress"]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True)
        (out / "incomplete").unlink()
        (out / "study.json").write_text(json.dumps({**meta, "seconds_this_attempt": time.time() - started}))
    return out


def run_eval(runs: Path, name: str, split_args: list[str], args: list[str], data: Path,
             common: list[str]) -> Path:
    """One `seal eval` run on `data`; returns its directory."""
    return run_seal(runs, name, ["eval", "--data", str(data), *split_args, *args, *common],
                    {"split_args": split_args, "args": args})


def scores(run: Path, condition: str) -> dict[str, list[float]]:
    """context id -> its questions' scores (in the order every run asks them) under `condition`."""
    return {r["context_id"]: [q["scores"][GRADER] for q in r["questions"]]
            for r in read_jsonl(run / "results.jsonl") if r.get("condition") == condition}


def versus(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict:
    shared = [c for c in a if c in b]
    return paired_difference([[x - y for x, y in zip(a[c], b[c])] for c in shared]).as_dict()


def accuracy(s: dict[str, list[float]]) -> dict:
    return mean_with_interval([v for values in s.values() for v in values]).as_dict()


def tune(runs: Path, passages: int, data: Path, common: list[str], temperatures: list[float],
         formats: list[str]) -> dict:
    split = ["--limit", str(passages)]  # passages 0..passages-1 of the tuning split 0-99
    baselines = run_eval(runs, "tune-baselines", split, ["--conditions", "[base,passage]"], data, common)
    passage = scores(baselines, "passage")
    arms: dict[str, dict] = {}

    edits: dict[str, dict[str, list[float]]] = {}

    def score(name: str, args: list[str]) -> float:
        run = run_eval(runs, f"tune-{name}", split, ["--conditions", "[self-edit]", *args], data, common)
        edits[name] = scores(run, "self-edit")
        arms[name] = {"args": args, "self-edit": accuracy(edits[name]), "vs_passage": versus(edits[name], passage),
                      "run": str(run.relative_to(runs))}
        return arms[name]["vs_passage"]["mean"]

    by_temperature = {t: score(arm_name("implications", t), arm_args("implications", t)) for t in temperatures}
    temperature = max(by_temperature, key=by_temperature.get)
    by_format = {"implications": by_temperature[temperature]}
    by_format |= {f: score(arm_name(f, temperature), arm_args(f, temperature)) for f in formats}
    format_ = max(by_format, key=by_format.get)
    distill, sft = arm_name(format_, temperature, "distill"), arm_name(format_, temperature)
    score(distill, arm_args(format_, temperature, "distill"))
    # The same self-edits (same seeds) learned by distillation and by SFT: the update rule's own effect.
    arms[distill]["vs_sft"] = versus(edits[distill], edits[sft])
    best = max(arms, key=lambda n: arms[n]["vs_passage"]["mean"])
    return {"split": f"tuning: passages 0-{passages - 1}", "data": str(data),
            "base": accuracy(scores(baselines, "base")), "passage": accuracy(passage), "arms": arms, "best": best}


def heldout(runs: Path, passages: int, data: Path, common: list[str], arm: dict, start: int) -> dict:
    split = ["--skip", str(start), "--limit", str(passages)]
    run = run_eval(runs, "heldout", split, ["--conditions", "[base,passage,self-edit]", *arm["args"]], data,
                   common)
    summary = json.loads((run / "summary.json").read_text())
    return {"split": f"held out: passages {start}-{start + passages - 1}",
            "args": arm["args"], "conditions": {k: v["accuracy"][GRADER] for k, v in summary["conditions"].items()},
            "paired": summary.get("paired", {})}


REST_EM_SCALE = {"rounds": 2, "contexts_per_round": 20, "samples_per_context": 5}


def rest_em(runs: Path, passages: int, data: Path, common: list[str], start: int, scale: dict[str, int]) -> dict:
    """`seal train` with the held-out run's config (so the chosen arm and every evaluation setting are its own):
    rounds learn from the tuning split, every row is on held-out passages. Round 0 (base, passage and self-edit
    before RL) on these passages is what the heldout stage computed, with the same seeds and groups: its
    records are copied in, except the first group's, which the run recomputes as the check of the copy."""
    heldout_run = runs / "heldout"
    if not (heldout_run / "summary.json").exists() or (heldout_run / "incomplete").exists():
        sys.exit("small_scale.py: run the heldout stage first: rest-em starts from its config and its round 0")
    scale_args = [x for key, value in scale.items() for x in (f"--rest_em.{key}", str(value))]
    arguments = ["train", "--config", str(heldout_run / "config.json"), "--train_data", str(data), "--train_limit",
                 str(start), "--limit", str(passages), *scale_args, *common]
    copied = round_zero_copied(heldout_run, data, start, passages)
    if not (runs / "rest-em" / "results.jsonl").exists():  # a new run: it starts with the copied records
        copy_round_zero(heldout_run, runs / "rest-em", copied)
    out = run_seal(runs, "rest-em", arguments, {"args": scale_args})
    summary = json.loads((out / "summary.json").read_text())
    return {"split": f"trained on passages 0-{start - 1}, held out: passages {start}-{start + passages - 1}",
            "args": scale_args,
            "round_0": {"copied_from_heldout": sorted(copied), **round_zero_check(heldout_run, out, copied)},
            "conditions": {k: v["accuracy"][GRADER] for k, v in summary["conditions"].items()},
            "paired": summary.get("paired", {})}


def round_zero_copied(heldout: Path, data: Path, start: int, passages: int) -> set[str]:
    """The held-out passages whose round 0 comes from the heldout run: every whole evaluation group but the first."""
    from seal_lm.domains.knowledge.data import select_passages

    size = json.loads((heldout / "config.json").read_text())["passages_per_batch"]
    ids = [p.id for p in select_passages(str(data), "validation", start, passages)]
    return {c for i in range(size, len(ids) - size + 1, size) for c in ids[i : i + size]}


def copy_round_zero(heldout: Path, out: Path, copied: set[str]) -> None:
    records = [r for r in read_jsonl(heldout / "results.jsonl") if r.get("round") == 0 and r.get("context_id") in copied]
    out.mkdir(parents=True, exist_ok=True)
    append_jsonl(out / "results.jsonl", records)


def round_zero_check(heldout: Path, out: Path, copied: set[str]) -> dict:
    """The round-0 records the rest-em run computed itself against the heldout run's for the same passages: how
    many (passage, condition) records have exactly the same answers."""
    def answers(run: Path) -> dict[tuple[str, str], list[str]]:
        return {(r["context_id"], r["condition"]): [a for q in r["questions"] for a in q["predictions"]]
                for r in read_jsonl(run / "results.jsonl") if r.get("kind") == "eval" and r.get("round") == 0}

    mine, theirs = answers(out), answers(heldout)
    recomputed = [key for key in mine if key[0] not in copied and key in theirs]
    return {"recomputed_records": len(recomputed),
            "identical_answers": sum(mine[key] == theirs[key] for key in recomputed)}


def percent(e: dict, digits: int) -> str:
    """An accuracy with its interval and n, for the study tables."""
    return f"{100 * e['mean']:.{digits}f}% [{100 * e['low']:.{digits}f}, {100 * e['high']:.{digits}f}] (n={e['n']})"


def difference(d: dict, digits: int, units: str) -> str:
    """A paired difference in points with its interval, p-value and number of contexts."""
    p = "p<0.001" if d["p"] < 0.001 else f"p={d['p']:.3f}"
    return (f"{100 * d['mean']:+.{digits}f} [{100 * d['low']:+.{digits}f}, {100 * d['high']:+.{digits}f}], "
            f"{p}, {d['contexts']} {units}")


def write_table(study: dict, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "small_scale.json").write_text(json.dumps(study, indent=1))
    pct = lambda e: percent(e, 1)  # noqa: E731
    diff = lambda d: difference(d, 1, "passages")  # noqa: E731
    lines = [f"# Small-scale study ({time.strftime('%Y-%m-%d')})", "",
             f"`{study['tune']['command']}`, contains grader. "
             f"Split: {study['tune']['split']}. Base {pct(study['tune']['base'])}, train on passage "
             f"{pct(study['tune']['passage'])}.", "",
             "| arm | passage + self-edit | minus train on passage (paired, points) |", "|---|---|---|"]
    for name, arm in study["tune"]["arms"].items():
        lines.append(f"| {name} | {pct(arm['self-edit'])} | {diff(arm['vs_passage'])} |")
    for name, arm in study["tune"]["arms"].items():
        if "vs_sft" in arm:
            lines += ["", f"{name} minus {name.removesuffix('-distill')} (the same self-edits, distillation against "
                          f"SFT): {diff(arm['vs_sft'])}."]
    lines += ["", f"Best on the tuning split: **{study['tune']['best']}**."]
    for stage, title in (("heldout", "Held out, evaluated once"), ("rest_em", "ReST-EM")):
        if stage in study:
            h = study[stage]
            lines += ["", f"{title} ({h['split']}, `{' '.join(h['args'])}`):", ""]
            lines += [f"- {k}: {pct(v)}" for k, v in h["conditions"].items()]
            if "round_0" in h:
                check = h["round_0"]
                lines += [f"- round 0 for {len(check['copied_from_heldout'])} passages copied from the held-out run; "
                          f"of {check['recomputed_records']} records recomputed here, {check['identical_answers']} "
                          "have the held-out run's answers exactly"]
            lines += [f"- {v['label']}: {diff(v)}" for v in h["paired"].values()]
    (docs / "small_scale.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("tune", "heldout", "rest-em", "table"))
    parser.add_argument("--passages", type=int, default=None,
                        help="tune: 20 (of 0-99); heldout: 100 (100-199); rest-em: 64 held-out passages")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--held_out_start", type=int, default=HELD_OUT_START,
                        help="the first held-out passage; the tuning split is every passage before it")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "small-scale")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    for key, value in REST_EM_SCALE.items():
        parser.add_argument(f"--{key}", type=int, default=value, help=f"rest-em: rest_em.{key} (default {value})")
    parser.add_argument("--seal_args", default="", help="more `seal eval` options for every run (e.g. a model)")
    args = parser.parse_args()
    common = args.seal_args.split()
    if not args.data.exists():
        sys.exit(f"small_scale.py: data file not found: {args.data} (pass --data squad_dev200.json)")
    study_file = args.runs / "study.json"
    study = json.loads(study_file.read_text()) if study_file.exists() else {}
    if args.stage == "tune":
        if (args.passages or 20) > args.held_out_start:
            sys.exit(f"small_scale.py: --passages: the tuning split has only {args.held_out_start} passages")
        study["tune"] = tune(args.runs, args.passages or 20, args.data, common, args.temperatures, args.formats)
        study["tune"]["command"] = " ".join(["python experiments/small_scale.py", *sys.argv[1:]])
    elif args.stage in ("heldout", "rest-em"):
        if "tune" not in study:
            sys.exit("small_scale.py: run the tune stage first: the held-out split is evaluated with its choice")
        if args.stage == "heldout":
            best = study["tune"]["arms"][study["tune"]["best"]]
            study["heldout"] = heldout(args.runs, args.passages or 100, args.data, common, best, args.held_out_start)
        else:
            scale = {key: getattr(args, key) for key in REST_EM_SCALE}
            study["rest_em"] = rest_em(args.runs, args.passages or 64, args.data, common, args.held_out_start, scale)
    elif "tune" not in study:
        sys.exit(f"small_scale.py: no study in {args.runs} yet: run the tune stage first")
    study_file.parent.mkdir(parents=True, exist_ok=True)
    study_file.write_text(json.dumps(study, indent=1))
    write_table(study, args.docs)
    print((args.docs / "small_scale.md").read_text())


if __name__ == "__main__":
    main()
