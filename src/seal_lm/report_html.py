"""A self-contained HTML report for a run directory (`seal report RUN_DIR`).

Reads config.json, results.jsonl and (when present) summary.json, and writes report/index.html with
every plot embedded as a base64 PNG (no external assets, no JavaScript), plus the same plots as PNG
files next to it. Sections without data are left out, so an eval-only run gets just its accuracy.
Every string that comes from a record (titles, self-edits: model output) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from seal_lm.errors import SealError
from seal_lm.runs import CONFIG_FILE, RESULTS_FILE, SUMMARY_FILE
from seal_lm.stats import Estimate, mean_with_interval

REPORT_DIR = "report"

CONDITION_ORDER = ("base", "passage", "self-edit", "teacher")
CONDITION_LABELS = {
    "base": "base model",
    "passage": "train on passage",
    "self-edit": "passage + self-edit",
    "teacher": "passage + self-edit by teacher",
}
DEFAULT_GRADER = "contains"
FIGSIZE = (7.0, 3.5)
DPI = 110
MAX_EXAMPLES = 3
DASH = "\u2013"

CSS = """
table.grid { border-collapse: collapse; margin: 0.3em 0; }
table.grid td { width: 12px; height: 12px; padding: 0; border: 1px solid #555; }
table.grids td { vertical-align: top; padding: 0 1em 0 0; border: none; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; border: 1px solid #e4e4e4; padding: 0.6em; white-space: pre-wrap;
      word-wrap: break-word; font-size: 0.85em; max-height: 30em; overflow: auto; }
.meta { color: #555; }
.note { color: #666; font-size: 0.9em; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.pair h4 { margin: 0.3em 0; font-size: 0.95em; }
"""


# ----------------------------------------------------------------------------------------------
# Reading the run directory


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SealError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise SealError(f"{path}: cannot read ({exc.strerror})") from None


def _read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects in results.jsonl, and how many lines were skipped (a line cut short by a
    killed process, or anything that is not a JSON object). The file is never modified."""
    records, skipped = [], 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise SealError(f"{path}: cannot read ({exc.strerror})") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _num(value: Any) -> float | None:
    """A finite number, or None for anything else (missing keys, null, strings, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nums(values: Any) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    return [v for v in (_num(x) for x in values) if v is not None]


def _round_of(record: dict[str, Any]) -> int:
    value = record.get("round", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _kind_of(record: dict[str, Any]) -> str:
    return record.get("kind") or "eval"  # older eval runs: no "kind", no "round"


def _dedupe(records: list[dict[str, Any]], key) -> list[dict[str, Any]]:
    """One record per key, the last one written, in order of first appearance."""
    latest: dict[Any, dict[str, Any]] = {}
    for r in records:
        latest[key(r)] = r
    return list(latest.values())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _dig(obj: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _model_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else None


# ----------------------------------------------------------------------------------------------
# Formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, spec: str = ".3f") -> str:
    value = _num(value)
    return DASH if value is None else format(value, spec)


def _fmt_estimate(est: Estimate | None) -> str:
    if est is None or est.n == 0 or not math.isfinite(est.mean):
        return DASH
    return str(est)


def _table(header: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    """`rows` hold already-escaped HTML strings; columns in `numeric` are right-aligned."""
    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{_esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


# ----------------------------------------------------------------------------------------------
# Plots


class _Plots:
    """Renders matplotlib figures to PNG files in the report directory and to data URIs."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: list[Path] = []

    @staticmethod
    def figure(nrows: int = 1, ncols: int = 1, height: float | None = None, **kwargs):
        # A Figure without pyplot: no global state, no GUI backend; imported here to keep `seal` fast to start.
        try:
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - depends on the environment
            raise SealError("the HTML report needs matplotlib (pip install matplotlib)") from None
        fig = Figure(figsize=(FIGSIZE[0], height or FIGSIZE[1] * nrows), dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
        return fig, axes

    def save(self, fig, name: str, alt: str) -> str:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        fig.clear()  # Figure objects made without pyplot are not registered anywhere; free the artists now
        data = buffer.getvalue()
        path = self.out_dir / f"{name}.png"
        path.write_bytes(data)
        self.files.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="{_esc(alt)}">\n'


# ----------------------------------------------------------------------------------------------
# Sections


def _condition_rank(key: str) -> tuple[int, int]:
    if key in CONDITION_ORDER:
        return (0, CONDITION_ORDER.index(key))
    if key.startswith("round-"):
        try:
            return (1, int(key.split("-", 1)[1]))
        except ValueError:
            pass
    return (2, 0)


def _condition_key(record: dict[str, Any]) -> str:
    condition = str(record.get("condition", "?"))
    rnd = _round_of(record)
    if rnd <= 0:
        return condition
    return f"round-{rnd}" if condition == "self-edit" else f"round-{rnd}/{condition}"


def _condition_label(key: str, teacher: str | None) -> str:
    if key == "teacher" and teacher:
        return f"passage + self-edit by {teacher}"
    if key in CONDITION_LABELS:
        return CONDITION_LABELS[key]
    if key.startswith("round-"):
        rest = key.split("-", 1)[1]
        number, _, condition = rest.partition("/")
        return f"SEAL round {number}" + (f" ({condition})" if condition else "")
    return key


def _question_scores(records: list[dict[str, Any]], grader: str) -> tuple[list[float], int]:
    scores, questions = [], 0
    for r in records:
        qs = r.get("questions")
        if not isinstance(qs, list):
            continue
        for q in qs:
            questions += 1
            s = _num(_dig(q, "scores", grader))
            if s is not None:
                scores.append(s)
    return scores, questions


def _record_accuracy(record: dict[str, Any], grader: str) -> float | None:
    acc = _num(_dig(record, "accuracy", grader))
    if acc is None:
        acc = _mean(_question_scores([record], grader)[0])
    return acc


def _status_text(statuses: Any) -> str:
    if not isinstance(statuses, dict) or not statuses:
        return ""
    return ", ".join(f"{k} {v}" for k, v in statuses.items())


def _accuracy_rows(summary: dict[str, Any] | None, evals: list[dict[str, Any]], grader: str,
                   teacher: str | None) -> list[dict[str, Any]]:
    conditions = _dig(summary, "conditions")
    rows = []
    if isinstance(conditions, dict) and conditions:
        for key, row in conditions.items():
            if not isinstance(row, dict):
                continue
            acc = _dig(row, "accuracy", grader)
            est = None
            if isinstance(acc, dict) and _num(acc.get("mean")) is not None:
                est = Estimate(float(acc["mean"]), float(_num(acc.get("low")) or 0.0),
                               float(_num(acc.get("high")) or 0.0), int(_num(acc.get("n")) or 0))
            rows.append({
                "key": str(key), "label": str(row.get("label") or _condition_label(str(key), teacher)),
                "estimate": est, "passages": row.get("passages"), "questions": row.get("questions"),
                "seconds": row.get("seconds_per_passage"), "status": _status_text(row.get("self_edit_status")),
            })
    else:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in evals:
            groups[_condition_key(r)].append(r)
        for key, recs in groups.items():
            scores, questions = _question_scores(recs, grader)
            statuses: dict[str, int] = defaultdict(int)
            for r in recs:
                for edit in r.get("self_edits") or []:
                    if isinstance(edit, dict) and edit.get("status"):
                        statuses[str(edit["status"])] += 1
            rows.append({
                "key": key, "label": _condition_label(key, teacher), "estimate": mean_with_interval(scores),
                "passages": len(recs), "questions": questions,
                "seconds": _mean([s for s in (_num(r.get("seconds")) for r in recs) if s is not None]),
                "status": _status_text(dict(statuses)),
            })
    rows.sort(key=lambda row: _condition_rank(row["key"]))  # stable: unknown keys keep their order
    return rows


def _accuracy_section(rows: list[dict[str, Any]], grader: str, plots: _Plots) -> str:
    if not rows:
        return ""
    with_status = any(row["status"] for row in rows)
    header = ["condition", "accuracy [95% CI]", "passages", "questions", "s / passage"]
    if with_status:
        header.append("self-edits")
    table_rows = []
    for row in rows:
        cells = [_esc(row["label"]), _esc(_fmt_estimate(row["estimate"])),
                 _esc(row["passages"] if row["passages"] is not None else DASH),
                 _esc(row["questions"] if row["questions"] is not None else DASH), _esc(_fmt(row["seconds"], ".1f"))]
        if with_status:
            cells.append(_esc(row["status"]))
        table_rows.append(cells)
    parts = [(f'<h2 id="accuracy">Accuracy per condition with 95% intervals</h2>\n'
              f'<p class="note">Closed-book accuracy under the <b>{_esc(grader)}</b> grader, averaged over '
              f"questions; 95% interval (Wilson for 0/1 scores, normal approximation otherwise).</p>\n"),
             _table(header, table_rows, numeric={1, 2, 3, 4})]
    plotted = [row for row in rows if row["estimate"] is not None and row["estimate"].n > 0]
    if plotted:
        fig, axes = plots.figure(height=max(1.6, min(FIGSIZE[1], 0.9 + 0.45 * len(plotted))))
        ax = axes[0][0]
        ys = list(range(len(plotted)))
        means = [100 * row["estimate"].mean for row in plotted]
        lows = [_error_below(row["estimate"]) for row in plotted]
        highs = [_error_above(row["estimate"]) for row in plotted]
        colors = ["#4c72b0" if not row["key"].startswith("round-") else "#dd8452" for row in plotted]
        ax.barh(ys, means, color=colors, alpha=0.35, height=0.6)
        ax.errorbar(means, ys, xerr=[lows, highs], fmt="o", color="#222", capsize=4, markersize=5)
        ax.set_yticks(ys, [f"{row['label']} (n={row['estimate'].n})" for row in plotted])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"accuracy, % ({grader}; 95% interval)")
        ax.grid(axis="x", alpha=0.3)
        parts.append(plots.save(fig, "accuracy", "accuracy per condition with 95% intervals"))
    return "".join(parts)


def _judge_section(summary: dict[str, Any] | None) -> str:
    """How often the LLM judge agrees with each string grader (present when the run had a judge)."""
    agreement = _dig(summary, "judge_agreement")
    if not isinstance(agreement, dict) or not agreement:
        return ""
    rows = []
    for grader, a in agreement.items():
        rate = _num(_dig(a, "agreement"))
        rows.append([_esc(grader), _esc(DASH if rate is None else f"{100 * rate:.1f}%"),
                     _esc(_fmt(_dig(a, "kappa"), ".2f")), _esc(_dig(a, "n") or 0)])
    return ('<h2 id="judge">Judge agreement</h2>\n<p class="note">Per question, the LLM judge\'s verdict against '
            "each string grader's score (both 0/1 at 0.5): the share of questions where they agree, and Cohen's "
            "kappa, the agreement beyond chance (1: always agree, 0: no better than chance).</p>\n"
            + _table(["grader", "agreement", "kappa", "n"], rows, numeric={1, 2, 3}))


def _rollout_stats(rollouts: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per round: one entry per passage with its rewards, baseline, best and mean gain."""
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rollouts:
        rewards = _nums(r.get("rewards"))
        baseline = _num(r.get("baseline"))
        kept = r.get("kept") if isinstance(r.get("kept"), list) else []
        by_round[_round_of(r)].append({
            "id": str(r.get("context_id", "?")), "rewards": rewards, "baseline": baseline,
            "best_gain": max(rewards) - baseline if rewards and baseline is not None else None,
            "mean_gain": _mean(rewards) - baseline if rewards and baseline is not None else None,
            "beat": (max(rewards) > baseline + 1e-12) if rewards and baseline is not None else None,
            "kept": len(kept), "completions": len(r.get("completions") or []) or len(rewards),
        })
    return dict(sorted(by_round.items()))


def _rewards_section(stats: dict[int, list[dict[str, Any]]], plots: _Plots) -> str:
    rounds = [rnd for rnd, entries in stats.items() if any(e["rewards"] for e in entries)]
    if not rounds:
        return ""
    rows = []
    for rnd in rounds:
        entries = stats[rnd]
        rewards = [x for e in entries for x in e["rewards"]]
        baselines = [e["baseline"] for e in entries if e["baseline"] is not None]
        best = [max(e["rewards"]) for e in entries if e["rewards"]]
        rows.append([_esc(rnd), _esc(len(entries)), _esc(len(rewards)), _esc(_fmt(_mean(rewards))),
                     _esc(_fmt(_mean(baselines))), _esc(_fmt(_mean(best))),
                     _esc(sum(e["kept"] for e in entries))])
    parts = [('<h2 id="rewards">Reward distribution per round</h2>\n'
              '<p class="note">Rewards: accuracy after the inner-loop update on each sampled self-edit (all K per '
              "passage). Baseline: accuracy after training on the passage alone.</p>\n"),
             _table(["round", "passages", "rewards", "mean reward", "mean baseline", "mean best reward",
                     "kept completions"], rows, numeric={0, 1, 2, 3, 4, 5, 6})]
    fig, axes = plots.figure()
    ax = axes[0][0]
    width = 0.35
    reward_data = [[x for e in stats[rnd] for x in e["rewards"]] for rnd in rounds]
    baseline_data = [[e["baseline"] for e in stats[rnd] if e["baseline"] is not None] for rnd in rounds]
    handles = []
    for offset, data, color, name in [(-width / 2 - 0.02, reward_data, "#4c72b0", "rewards (all K)"),
                                      (width / 2 + 0.02, baseline_data, "#999999", "passage-only baseline")]:
        positions = [i + offset for i, d in enumerate(data) if d]
        values = [d for d in data if d]
        if not values:
            continue
        box = ax.boxplot(values, positions=positions, widths=width, patch_artist=True, showmeans=True,
                         manage_ticks=False, meanprops={"marker": "D", "markerfacecolor": "white",
                                                        "markeredgecolor": "#222", "markersize": 4})
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        handles.append((box["boxes"][0], name))
    ax.set_xticks(range(len(rounds)),
                  [f"round {rnd}\n(n={len(reward_data[i])} / {len(baseline_data[i])})" for i, rnd in enumerate(rounds)])
    ax.set_ylabel("reward (accuracy)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(axis="y", alpha=0.3)
    if handles:
        ax.legend([h for h, _ in handles], [n for _, n in handles], loc="upper right", fontsize=8)
    parts.append(plots.save(fig, "rewards", "reward and baseline distribution per round"))
    return "".join(parts)


def _beat_section(stats: dict[int, list[dict[str, Any]]], plots: _Plots) -> str:
    rounds, estimates, counts = [], [], []
    for rnd, entries in stats.items():
        outcomes = [1.0 if e["beat"] else 0.0 for e in entries if e["beat"] is not None]
        if outcomes:
            rounds.append(rnd)
            estimates.append(mean_with_interval(outcomes))
            counts.append((int(sum(outcomes)), len(outcomes)))
    if not rounds:
        return ""
    rows = [[_esc(rnd), _esc(f"{k} of {n}"), _esc(_fmt_estimate(est))]
            for rnd, (k, n), est in zip(rounds, counts, estimates)]
    parts = [('<h2 id="beat-baseline">Passages whose best self-edit beat the passage-only baseline</h2>\n'
              '<p class="note">A passage counts when the highest reward among its K self-edits is strictly above '
              "its baseline; 95% Wilson interval.</p>\n"),
             _table(["round", "passages", "fraction [95% CI]"], rows, numeric={0, 1, 2})]
    fig, axes = plots.figure()
    ax = axes[0][0]
    xs = list(range(len(rounds)))
    means = [100 * e.mean for e in estimates]
    ax.bar(xs, means, color="#55a868", alpha=0.7, width=0.6)
    ax.errorbar(xs, means, yerr=[[_error_below(e) for e in estimates],
                                 [_error_above(e) for e in estimates]],
                fmt="none", ecolor="#222", capsize=5)
    for x, e, (k, n) in zip(xs, estimates, counts):
        ax.text(x, min(100 * e.high + 3, 103), f"{k} of {n}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs, [f"round {rnd}" for rnd in rounds])
    ax.set_ylim(0, 112)
    ax.set_ylabel("passages where best > baseline, %")
    ax.grid(axis="y", alpha=0.3)
    parts.append(plots.save(fig, "beat_baseline", "fraction of passages whose best self-edit beat the baseline"))
    return "".join(parts)


def _gains_section(stats: dict[int, list[dict[str, Any]]], plots: _Plots) -> str:
    rounds = {rnd: sorted((e for e in entries if e["best_gain"] is not None),
                          key=lambda e: e["best_gain"], reverse=True)
              for rnd, entries in stats.items()}
    rounds = {rnd: entries for rnd, entries in rounds.items() if entries}
    if not rounds:
        return ""
    rows = [[_esc(rnd), _esc(len(entries)), _esc(_fmt(_mean([e["best_gain"] for e in entries]), "+.3f")),
             _esc(_fmt(_mean([e["mean_gain"] for e in entries]), "+.3f")),
             _esc(sum(1 for e in entries if e["best_gain"] > 1e-12)),
             _esc(sum(1 for e in entries if e["best_gain"] < -1e-12))]
            for rnd, entries in rounds.items()]
    parts = [('<h2 id="gains">Gain per passage</h2>\n'
              '<p class="note">Best gain: highest reward minus the passage-only baseline; mean gain: mean reward minus '
              "baseline. Bars sorted by best gain.</p>\n"),
             _table(["round", "passages", "mean best gain", "mean of mean gain", "best gain > 0", "best gain < 0"],
                    rows, numeric={0, 1, 2, 3, 4, 5})]
    ncols = min(len(rounds), 3)
    nrows = math.ceil(len(rounds) / ncols)
    fig, axes = plots.figure(nrows, ncols, sharey=True)
    for i, (rnd, entries) in enumerate(rounds.items()):
        ax = axes[i // ncols][i % ncols]
        xs = list(range(len(entries)))
        best = [e["best_gain"] for e in entries]
        ax.bar(xs, best, color=["#55a868" if g > 0 else "#c44e52" for g in best], alpha=0.7, width=0.8,
               label="best gain")
        ax.plot(xs, [e["mean_gain"] for e in entries], "o", color="#222", markersize=3.5, label="mean gain")
        ax.axhline(0, color="#222", linewidth=0.8)
        ax.set_title(f"round {rnd} (n={len(entries)} passages)", fontsize=9)
        if len(entries) <= 12:
            ax.set_xticks(xs, [e["id"] for e in entries], rotation=60, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_xlabel("passages, sorted", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel("gain over baseline")
        if i == 0:
            ax.legend(fontsize=7, loc="upper right")
    for j in range(len(rounds), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    parts.append(plots.save(fig, "gains", "best and mean gain per passage, per round"))
    return "".join(parts)


def _first_completion(record: dict[str, Any]) -> tuple[str | None, str | None]:
    edits = record.get("self_edits")
    if isinstance(edits, list) and edits and isinstance(edits[0], dict):
        completion = edits[0].get("completion")
        return (str(completion) if completion is not None else None,
                str(edits[0]["status"]) if edits[0].get("status") else None)
    return None, None


def _example_pairs(evals: list[dict[str, Any]], rollouts: list[dict[str, Any]], grader: str) -> tuple[list, str]:
    """Up to MAX_EXAMPLES (title, before, after) pairs; each side is (heading, text, note)."""
    self_edit = [r for r in evals if r.get("condition") == "self-edit"]
    before = {}
    after: dict[str, dict[str, Any]] = {}
    for r in self_edit:
        pid = str(r.get("passage_id", r.get("context_id", "?")))
        rnd = _round_of(r)
        if rnd == 0:
            before.setdefault(pid, r)
        elif pid not in after or rnd >= _round_of(after[pid]):
            after[pid] = r
    pairs = []
    for pid, r0 in before.items():
        if pid not in after:
            continue
        r1 = after[pid]
        sides = []
        for r, name in ((r0, "before RL (round 0)"), (r1, f"after RL (round {_round_of(r1)})")):
            text, status = _first_completion(r)
            acc = _record_accuracy(r, grader)
            note = f"accuracy ({grader}): " + (DASH if acc is None else f"{100 * acc:.1f}%")
            if status:
                note += f"; status: {status}"
            sides.append((name, text, note))
        pairs.append((str(r0.get("title") or r1.get("title") or pid), sides[0], sides[1]))
        if len(pairs) == MAX_EXAMPLES:
            break
    if pairs:
        return pairs, ("Held-out passages evaluated with their own self-edit before RL and after the last round; "
                       "the first self-edit of each evaluation, with that evaluation's accuracy.")
    # Fall back to training rollouts: round 1 against the last round, same passage.
    by_round: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rollouts:
        if r.get("completions"):
            by_round[_round_of(r)][str(r.get("context_id", "?"))] = r
    later = [rnd for rnd in by_round if rnd > 1]
    if 1 not in by_round or not later:
        return [], ""
    last = max(later)
    for cid, r1 in by_round[1].items():
        if cid not in by_round[last]:
            continue
        sides = []
        for r, name in ((r1, "round 1"), (by_round[last][cid], f"round {last}")):
            completions = r.get("completions") or []
            rewards = r.get("rewards") if isinstance(r.get("rewards"), list) else []
            reward = _num(rewards[0]) if rewards else None
            note = f"reward: {_fmt(reward)}; baseline: {_fmt(r.get('baseline'))}"
            sides.append((name, str(completions[0]) if completions else None, note))
        pairs.append((str(r1.get("title") or cid), sides[0], sides[1]))
        if len(pairs) == MAX_EXAMPLES:
            break
    note = ("No held-out passage was evaluated both before and after RL; these are training rollouts of the same "
            "passage in round 1 and in the last round (first sampled completion of each, with its reward).")
    return pairs, note if pairs else ""


def _examples_section(evals: list[dict[str, Any]], rollouts: list[dict[str, Any]], grader: str) -> str:
    pairs, note = _example_pairs(evals, rollouts, grader)
    if not pairs:
        return ""
    parts = ['<h2 id="examples">Example self-edits before and after RL</h2>\n', f'<p class="note">{_esc(note)}</p>\n']
    for title, *sides in pairs:
        parts.append(f"<h3>{_esc(title)}</h3>\n<div class=\"pair\">\n")
        for name, text, side_note in sides:
            body = _esc(text) if text is not None else "<i>(no self-edit recorded)</i>"
            parts.append(f"<div><h4>{_esc(name)}</h4><div class=\"note\">{_esc(side_note)}</div>"
                         f"<pre>{body}</pre></div>\n")
        parts.append("</div>\n")
    return "".join(parts)


def _timing_rows(summary: dict[str, Any] | None, records: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Seconds per phase for each RL round, from summary.json's rounds or else summed from records."""
    timing: dict[int, dict[str, float]] = {}
    rounds = _dig(summary, "rounds")
    if isinstance(rounds, list):
        for entry in rounds:
            seconds = _dig(entry, "seconds")
            if isinstance(seconds, dict):
                phases = {str(k): v for k, v in ((k, _num(v)) for k, v in seconds.items()) if v is not None}
                if phases:
                    timing[_round_of(entry)] = phases
    if timing:
        return dict(sorted(timing.items()))
    acc: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        rnd, kind = _round_of(r), _kind_of(r)
        if rnd < 1:
            continue
        if kind == "rollout" and isinstance(r.get("seconds"), dict):
            for phase, value in r["seconds"].items():
                if _num(value) is not None:
                    acc[rnd][str(phase)] += _num(value)
        elif kind == "sft" and _num(r.get("seconds")) is not None:
            acc[rnd]["policy_update"] += _num(r["seconds"])
        elif kind == "eval" and _num(r.get("seconds")) is not None:
            acc[rnd]["evaluation"] += _num(r["seconds"])
    return {rnd: dict(phases) for rnd, phases in sorted(acc.items()) if phases}


def _policy_section(sfts: list[dict[str, Any]], timing: dict[int, dict[str, float]]) -> str:
    if not sfts and not timing:
        return ""
    parts = ['<h2 id="policy">Policy updates</h2>\n']
    if sfts:
        rows = []
        for r in sorted(sfts, key=_round_of):
            kept, total = r.get("contexts_kept"), r.get("contexts")
            kept_text = f"{kept} of {total}" if kept is not None and total is not None else DASH
            losses = _nums(r.get("epoch_losses"))
            loss_text = ", ".join(f"{x:.3f}" for x in losses) if losses else DASH
            nll = f"{_fmt(r.get('nll_before'))} \u2192 {_fmt(r.get('nll_after'))}"
            if _num(r.get("nll_before")) is None and _num(r.get("nll_after")) is None:
                nll = DASH
            rows.append([_esc(_round_of(r)), _esc(kept_text), _esc(r.get("examples", DASH)), _esc(loss_text),
                         _esc(nll), _esc(_fmt(r.get("seconds"), ".1f")), _esc(r.get("checkpoint") or DASH)])
        parts.append('<p class="note">Supervised update of the policy on the kept self-edits; NLL of the kept '
                     "completions under the policy before and after the update.</p>\n")
        parts.append(_table(["round", "passages kept", "examples", "epoch losses", "NLL before \u2192 after",
                             "seconds", "checkpoint"], rows, numeric={0, 1, 2, 3, 4, 5}))
    if timing:
        order = ["generation", "rewards", "policy_update", "evaluation"]
        phases = [p for p in order if any(p in t for t in timing.values())]
        phases += sorted({p for t in timing.values() for p in t} - set(phases))
        rows = [[_esc(rnd)] + [_esc(_fmt(t.get(p), ".1f")) for p in phases] + [_esc(_fmt(sum(t.values()), ".1f"))]
                for rnd, t in timing.items()]
        parts.append("<h3>Time per round (seconds)</h3>\n")
        parts.append(_table(["round"] + [p.replace("_", " ") for p in phases] + ["total"], rows,
                            numeric=set(range(len(phases) + 2))))
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# Entry point


ARC_COLOURS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
               "#870C25")  # the usual ARC palette, colour 0 to 9


def _grid_html(text: str | None) -> str:
    """A grid (rows of digits) as a small table of coloured cells; '(no grid)' for a missing prediction."""
    if not text:
        return '<span class="note">(no grid)</span>'
    rows = "".join("<tr>" + "".join(f'<td style="background:{ARC_COLOURS[int(c)]}"></td>' for c in line) + "</tr>"
                   for line in text.splitlines() if line.isdigit())
    return f'<table class="grid">{rows}</table>'


def _grids_section(evals: list[dict[str, Any]], max_tasks: int = 4) -> str:
    """Few-shot runs: a few tasks' test input, true output and each condition's voted prediction."""
    grid_records = [r for r in evals if "expected" in r and "predictions" in r]
    if not grid_records:
        return ""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in grid_records:
        by_task[str(r.get("context_id", "?"))].append(r)
    parts = ["<h2>Grid tasks: test input, true output and predictions</h2>\n"]
    for task_id, recs in list(by_task.items())[:max_tasks]:
        cells = [f"<td><b>test input</b><br>{_grid_html(recs[0].get('test_input'))}</td>",
                 f"<td><b>true output</b><br>{_grid_html(recs[0]['expected'])}</td>"]
        for r in sorted(recs, key=lambda r: (_round_of(r), str(r.get("condition")))):
            label = f"{r.get('condition')}" + (f" (round {_round_of(r)})" if _round_of(r) else "")
            prediction = (r.get("predictions") or [None])[0]
            verdict = "solved" if prediction == r["expected"] else "wrong"
            cells.append(f"<td><b>{_esc(label)}</b>: {verdict}<br>{_grid_html(prediction)}</td>")
        parts.append(f"<h3>{_esc(task_id)}</h3>\n<table class=\"grids\"><tr>{''.join(cells)}</tr></table>\n")
    return "".join(parts)


def _continual_section(summary: dict[str, Any] | None, steps: list[dict[str, Any]], plots: _Plots) -> str:
    """Forgetting matrices (one heatmap per variant, side by side), final accuracies and the guard's decisions."""
    matrices = (summary or {}).get("matrices")
    if not matrices or not steps:
        return ""
    n = summary["passages"]
    parts = ['<h2 id="forgetting">Forgetting matrix</h2>\n'
             '<p class="note">Row i: closed-book accuracy after the i-th update; column j: the j-th passage learned. '
             "Mean over orders (standard deviation in the table). The last row shows what is left of every passage "
             "at the end.</p>\n"]
    rows = [[_esc(v), _esc(m["orders"]), _esc(_fmt_estimate(Estimate(**m["final_first"]))),
             _esc(_fmt_estimate(Estimate(**m["final_all"]))), _esc(f"{m['refused']} of {m['updates']}"),
             _esc(m["retried"])] for v, m in matrices.items()]
    parts.append(_table(["variant", "orders", "final, first passage [95% CI]", "final, all passages [95% CI]",
                         "updates refused", "updates retried"], rows, numeric={1, 2, 3, 4, 5}))
    fig, axes = plots.figure(1, len(matrices), height=FIGSIZE[1] * 1.1)
    for ax, (variant, m) in zip(axes[0], matrices.items()):
        values = [[float("nan") if v is None else 100 * v for v in row] for row in m["mean"]]
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 50 else "black")
        ax.set_title(variant)
        ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
        ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
        ax.set_xlabel("passage (position learned)")
        ax.set_ylabel("after update")
    fig.colorbar(image, ax=list(axes[0]), label="accuracy, %", shrink=0.8)
    parts.append(plots.save(fig, "forgetting", "forgetting matrices, one per variant"))
    guarded = [r for r in steps if any("drop" in a for a in r.get("attempts", []))]
    if guarded:
        decision_rows = [[_esc(r["order"]), _esc(r["step"] + 1), _esc(r.get("title", r["passage_id"])),
                          _esc(" / ".join(f"lr {a['learning_rate']:g}: {_fmt(a['probe_before'], '.2f')} -> "
                                          f"{_fmt(a['probe_after'], '.2f')}" for a in r["attempts"])),
                          _esc("accepted" if r["accepted"] else "refused")] for r in guarded]
        parts.append("<h3>Guard decisions</h3>\n<p class=\"note\">Probe score (earlier passages' questions and "
                     "general prompts whose answers must not change) before -> after each attempt.</p>\n")
        parts.append(_table(["order", "update", "passage", "attempts", "decision"], decision_rows, numeric={0, 1}))
    return "".join(parts)


def _adapt_section(summary: dict[str, Any] | None, plots: _Plots) -> str:
    """`seal adapt`: self-check accuracy per document, closed-book, before and after the updates."""
    if not summary or summary.get("kind") != "adapt":
        return ""
    estimate = lambda e: Estimate(**e) if e else None
    docs = summary["documents"]
    rows = [[_esc(d["title"]), _esc(d["questions"]), _esc(_fmt_estimate(estimate(d["before"]))),
             _esc(_fmt_estimate(estimate(d["after"]))), _esc("accepted" if d["accepted"] else "refused")]
            for d in docs]
    rows.append(["<b>all</b>", _esc(sum(d["questions"] for d in docs)),
                 _esc(_fmt_estimate(estimate(summary["before"]))), _esc(_fmt_estimate(estimate(summary["after"]))),
                 _esc(f"{summary['refused']} refused")])
    parts = ['<h2 id="adapt">What was learned</h2>\n<p class="note">Questions the model wrote about each document '
             "with the document in view, answered closed-book before and after the updates and graded against its "
             f"own open-book answers ({_esc(summary['grader'])}); no gold answers. Saved: "
             f"{_esc(summary.get('saved') or 'nothing')}.</p>\n",
             _table(["document", "questions", "before [95% CI]", "after [95% CI]", "update"], rows,
                    numeric={1, 2, 3})]
    fig, axes = plots.figure()
    ax = axes[0][0]
    xs = range(len(docs))
    for offset, key, colour in ((-0.2, "before", "#999999"), (0.2, "after", "#4c72b0")):
        ax.bar([x + offset for x in xs], [100 * d[key]["mean"] if d[key] else 0 for d in docs], width=0.4,
               color=colour, label=key)
    ax.set_xticks(list(xs), [d["title"][:18] for d in docs], rotation=30, ha="right")
    ax.set_ylabel(f"self-check {summary['grader']}, %")
    ax.legend()
    parts.append(plots.save(fig, "adapt", "self-check accuracy per document before and after"))
    return "".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report/index.html` (plots embedded) and the plots as PNG files; return the HTML path."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, RESULTS_FILE):
        if not (run_dir / name).is_file():
            raise SealError(f"{run_dir / name}: not a run directory (no {name})")
    config = _read_json(run_dir / CONFIG_FILE)
    records, skipped = _read_records(run_dir / RESULTS_FILE)
    summary = _read_json(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).is_file() else None
    if not isinstance(summary, dict):
        summary = None

    evals = _dedupe([r for r in records if _kind_of(r) == "eval"],
                    key=lambda r: (_round_of(r), r.get("passage_id", r.get("context_id")), r.get("condition")))
    rollouts = _dedupe([r for r in records if _kind_of(r) == "rollout"],
                       key=lambda r: (_round_of(r), r.get("context_id")))
    sfts = _dedupe([r for r in records if _kind_of(r) == "sft"], key=_round_of)
    steps = [r for r in records if _kind_of(r) == "step"]

    grader = str((summary or {}).get("grader") or _dig(config, "grader") or _dig(config, "eval", "grader")
                 or DEFAULT_GRADER)
    model = (_model_name((summary or {}).get("model")) or _model_name(_dig(config, "model"))
             or _model_name(_dig(config, "eval", "model")) or "unknown model")
    teacher = _model_name(_dig(config, "teacher")) or _model_name(_dig(config, "eval", "teacher"))

    out_dir = run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _Plots(out_dir)
    stats = _rollout_stats(rollouts)
    sections = [
        _accuracy_section(_accuracy_rows(summary, evals, grader, teacher), grader, plots),
        _judge_section(summary),
        _rewards_section(stats, plots),
        _beat_section(stats, plots),
        _gains_section(stats, plots),
        _examples_section(evals, rollouts, grader),
        _policy_section(sfts, _timing_rows(summary, records)),
        _grids_section(evals),
        _continual_section(summary, steps, plots),
        _adapt_section(summary, plots),
    ]
    body = "".join(s for s in sections if s) or '<p class="note">This run has no records to report yet.</p>\n'

    name = run_dir.resolve().name
    meta = [f"model: <b>{_esc(model)}</b>", f"grader: <b>{_esc(grader)}</b>", f"run: <b>{_esc(name)}</b>",
            f"records: {len(records)} ({len(evals)} eval, {len(rollouts)} rollout, {len(sfts)} sft)"]
    if summary is None:
        meta.append("no summary.json (run unfinished?): accuracy computed from the records")
    if skipped:
        meta.append(f"{skipped} unreadable line(s) in {RESULTS_FILE} skipped")
    config_text = json.dumps(config, indent=2, default=str, ensure_ascii=False)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>SEAL report: {_esc(name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>SEAL report: {_esc(name)}</h1>\n"
        f"<p class=\"meta\">{' &middot; '.join(meta)}</p>\n"
        f"<details><summary>configuration</summary><pre>{_esc(config_text)}</pre></details>\n"
        f"{body}</body>\n</html>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _error_below(estimate: Estimate) -> float:
    """Error-bar length in percentage points; interval bounds can sit a rounding error past the mean."""
    return max(0.0, 100 * (estimate.mean - estimate.low))


def _error_above(estimate: Estimate) -> float:
    return max(0.0, 100 * (estimate.high - estimate.mean))
