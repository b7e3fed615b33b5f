"""Few-shot ARC at the embedded model's size: where does the choice of self-edit matter, and does SEAL find it?

Procedural tasks (seal-lm's seeded grid tasks; `procedural_seed` S gives training tasks of seed S and evaluation
tasks of seed S + 1). The tuning seed chooses the setting; the evaluation seed reports it, once.

    python experiments/arc_small_scale.py sweep     # tuning seed: icl and oracle TTT, task sizes x TTT budgets
    python experiments/arc_small_scale.py report    # evaluation seed, the chosen cell: icl / TTT + self-edit /
                                                    # SEAL rounds / oracle, with paired differences
    python experiments/arc_small_scale.py table     # docs/results/arc_small_scale.{md,json}

Sweep: for every largest grid side (3, 4, 5) and TTT budget (1, 3 or 5 epochs; self-edits may ask for at most
that many, and the oracle tries no augmentation and the basic ones at that many), `seal eval --domain arc` of the
icl and oracle conditions on 6 tasks. A cell qualifies when oracle TTT solves at least a third of the tasks and
in-context learning at most one; the chosen cell is the qualifying one where oracle beats icl by most (the
smaller, cheaper cell on ties), or, if none qualifies, the one with the largest gap, said so in the table.
Report: `seal train --domain arc` in that cell on the evaluation seed (cpu-demo's 2 rounds x 5 tasks x 3
self-edits), every row on the same evaluation tasks, tasks counted as in the reference (solved or not).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from small_scale import difference, percent, run_seal

ROOT = Path(__file__).resolve().parent.parent
SIZES = (3, 4, 5)
EPOCHS = (1, 3, 5)
TUNING_SEED, EVALUATION_SEED = 0, 100
TASKS = 6


def common(tasks: int) -> list[str]:
    return ["--domain", "arc", "--preset", "cpu-demo", "--procedural_count", str(tasks)]


def cell_args(size: int, epochs: int) -> list[str]:
    oracle = [json.dumps({"augmentations": augmentations, "loss": "output", "learning_rate": 0.001, "epochs": epochs})
              for augmentations in ([], ["basic"])]
    return ["--procedural_max_size", str(size), "--max_epochs", str(epochs), "--oracle_configs", json.dumps(oracle)]


def rate(summary: dict, condition: str) -> dict:
    return summary["conditions"][condition]["accuracy"]["exact"]


def sweep(runs: Path, sizes: list[int], budgets: list[int], tasks: int, extra: list[str]) -> dict:
    cells = {}
    for size in sizes:
        for epochs in budgets:
            name = f"sweep-size{size}-epochs{epochs}"
            args = [*common(tasks), "--procedural_seed", str(TUNING_SEED), *cell_args(size, epochs),
                    "--conditions", "[icl,oracle]", *extra]
            run = run_seal(runs, name, ["eval", *args], {"args": args})
            summary = json.loads((run / "summary.json").read_text())
            icl, oracle = rate(summary, "icl"), rate(summary, "oracle")
            cells[name] = {"size": size, "epochs": epochs, "icl": icl, "oracle": oracle,
                           "oracle - icl": summary["paired"]["oracle - icl"],
                           "qualifies": oracle["mean"] >= 1 / 3 and icl["mean"] * icl["n"] <= 1}
    qualifying = [n for n, c in cells.items() if c["qualifies"]] or list(cells)
    # max gap; ties go to the cell listed first (smaller grids, then fewer epochs)
    chosen = max(qualifying, key=lambda n: (cells[n]["oracle"]["mean"] - cells[n]["icl"]["mean"],
                                            -list(cells).index(n)))
    return {"seed": f"procedural_seed {TUNING_SEED} (evaluation tasks of seed {TUNING_SEED + 1})", "tasks": tasks,
            "cells": cells, "chosen": chosen, "criterion_met": cells[chosen]["qualifies"]}


def report(runs: Path, sweep_result: dict, extra: list[str]) -> dict:
    cell = sweep_result["cells"][sweep_result["chosen"]]
    args = [*common(sweep_result["tasks"]), "--procedural_seed", str(EVALUATION_SEED), *cell_args(cell["size"], cell["epochs"]), *extra]
    run = run_seal(runs, "report", ["train", *args], {"args": args})
    summary = json.loads((run / "summary.json").read_text())
    return {"seed": f"procedural_seed {EVALUATION_SEED} (training tasks of seed {EVALUATION_SEED}, evaluation "
                    f"tasks of seed {EVALUATION_SEED + 1})", "args": args,
            "conditions": {k: {"label": v["label"], **v["accuracy"]["exact"]} for k, v in summary["conditions"].items()},
            "paired": summary.get("paired", {})}


def write_table(study: dict, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "arc_small_scale.json").write_text(json.dumps(study, indent=1))
    pct = lambda e: percent(e, 0)  # noqa: E731
    diff = lambda d: difference(d, 0, "tasks")  # noqa: E731
    s = study["sweep"]
    lines = [f"# ARC at the embedded model's size ({time.strftime('%Y-%m-%d')})", "",
             f"`python experiments/arc_small_scale.py`, preset cpu-demo, {s['tasks']} procedural tasks per cell. "
             f"Sweep on the tuning seed: {s['seed']}.", "",
             "| largest grid | TTT epochs | icl | oracle TTT | oracle - icl (paired, points) | qualifies |",
             "|---|---|---|---|---|---|"]
    for c in s["cells"].values():
        lines.append(f"| {c['size']} | {c['epochs']} | {pct(c['icl'])} | {pct(c['oracle'])} | "
                     f"{diff(c['oracle - icl'])} | {'yes' if c['qualifies'] else 'no'} |")
    chosen = s["cells"][s["chosen"]]
    lines += ["", f"Chosen: grids up to {chosen['size']}, {chosen['epochs']} epochs"
              + ("." if s["criterion_met"] else " (no cell met the criterion: the largest oracle - icl gap).")]
    if "report" in study:
        r = study["report"]
        lines += ["", f"Evaluation seed, once: {r['seed']}.", ""]
        lines += [f"- {v['label']}: {pct(v)}" for v in r["conditions"].values()]
        lines += [f"- {v['label']}: {diff(v)}" for v in r["paired"].values()]
    (docs / "arc_small_scale.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("sweep", "report", "table"))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "arc-small-scale")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="largest grid sides to sweep")
    parser.add_argument("--epochs", type=int, nargs="+", default=list(EPOCHS), help="TTT budgets (epochs) to sweep")
    parser.add_argument("--tasks", type=int, default=TASKS, help="procedural tasks per split")
    parser.add_argument("--seal_args", default="", help="more seal options for every run (e.g. a model)")
    args = parser.parse_args()
    extra = args.seal_args.split()
    study_file = args.runs / "study.json"
    study = json.loads(study_file.read_text()) if study_file.exists() else {}
    if args.stage == "sweep":
        study["sweep"] = sweep(args.runs, args.sizes, args.epochs, args.tasks, extra)
    elif "sweep" not in study:
        sys.exit(f"arc_small_scale.py: no sweep in {args.runs} yet: run the sweep stage first")
    elif args.stage == "report":
        study["report"] = report(args.runs, study["sweep"], extra)
    study_file.parent.mkdir(parents=True, exist_ok=True)
    study_file.write_text(json.dumps(study, indent=1))
    write_table(study, args.docs)
    print((args.docs / "arc_small_scale.md").read_text())


if __name__ == "__main__":
    main()
