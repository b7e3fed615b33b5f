"""Knowledge incorporation's sections: self-edits before and after RL side by side, and every passage with
its self-edits, training sequences, and each question's answer under every condition."""

from __future__ import annotations

from seal_lm.domains.knowledge.evaluation import PassageEval
from seal_lm.records import RolloutRecord
from seal_lm.report.page import esc, pre, section, table
from seal_lm.report.run import Run

MAX_EXAMPLES = 3


def _side(heading: str, text: str | None, note: str) -> str:
    return f'<div><h4>{esc(heading)}</h4><div class="note">{esc(note)}</div>{pre(text)}</div>\n'


def examples_section(run: Run) -> str:
    """Held-out passages with their first self-edit before RL and after the last round; without those, the
    first training rollout of the same passage in round 1 and in the last round."""
    grader = (run.summary or {}).get("grader", "contains")
    evals = [r for r in run.of(PassageEval) if r.condition == "self-edit" and r.self_edits]
    before = {r.context_id: r for r in evals if r.round == 0}
    after: dict[str, PassageEval] = {}
    for r in evals:
        if r.round > 0 and (r.context_id not in after or r.round >= after[r.context_id].round):
            after[r.context_id] = r
    pairs = []
    for pid in [p for p in before if p in after][:MAX_EXAMPLES]:
        sides = [_side(name, r.self_edits[0]["completion"],
                       f"accuracy ({grader}): {100 * r.accuracy.get(grader, 0):.1f}%; status: {r.self_edits[0]['status']}")
                 for r, name in ((before[pid], "before RL (round 0)"), (after[pid], f"after RL (round {after[pid].round})"))]
        pairs.append((before[pid].title, sides))
    note = ("Held-out passages evaluated with their own self-edit before RL and after the last round (the first "
            "self-edit of each evaluation, with that evaluation's accuracy).")
    if not pairs:
        rounds: dict[int, dict[str, RolloutRecord]] = {}
        for r in run.of(RolloutRecord):
            rounds.setdefault(r.round, {})[r.context_id] = r
        last = max((n for n in rounds if n > 1), default=None)
        if 1 in rounds and last is not None:
            for cid in [c for c in rounds[1] if c in rounds[last]][:MAX_EXAMPLES]:
                sides = [_side(f"round {n}", r.completions[0], f"reward {r.rewards[0]:.3f}; baseline {r.baseline:.3f}")
                         for n, r in ((1, rounds[1][cid]), (last, rounds[last][cid]))]
                pairs.append((rounds[1][cid].title, sides))
        note = ("Training rollouts of the same passage in round 1 and in the last round (the first sampled "
                "completion of each, with its reward).")
    if not pairs:
        return ""
    body = "".join(f'<h3>{esc(title)}</h3>\n<div class="pair">\n{"".join(sides)}</div>\n' for title, sides in pairs)
    return section("examples", "Example self-edits before and after RL", note, body)


def _label(record: PassageEval, labels: dict[str, str]) -> str:
    key = record.condition if record.round == 0 else f"round-{record.round}"
    return labels.get(key, key)


def passages_section(run: Run) -> str:
    """Per held-out passage (one collapsible block each): every condition's self-edits with the training
    sequences made of them, then a table of its questions with each condition's answer and verdict."""
    summary = run.summary or {}
    grader = summary.get("grader", "contains")
    labels = {key: row["label"] for key, row in (summary.get("conditions") or {}).items()}
    by_passage: dict[str, list[PassageEval]] = {}
    for r in run.of(PassageEval):
        by_passage.setdefault(r.context_id, []).append(r)
    if not by_passage:
        return ""
    blocks = []
    for records in by_passage.values():
        records.sort(key=lambda r: (r.round, r.condition))
        parts = []
        for r in records:
            for k, (edit, training) in enumerate(zip(r.self_edits, r.training or [{}] * len(r.self_edits))):
                sequences = "\n\n".join(training.get("sequences", []))
                parts.append(f"<h4>{esc(_label(r, labels))}: self-edit {k + 1} ({esc(edit['status'])})</h4>"
                             f"{pre(edit['completion'])}<details><summary>training sequences "
                             f"({len(training.get('sequences', []))})</summary>{pre(sequences)}</details>\n")
        header = ["question", "gold"] + [_label(r, labels) for r in records]
        rows = []
        for i, q in enumerate(records[0].questions):
            cells = [esc(q["question"]), esc(" | ".join(q["answers"]))]
            for r in records:
                asked = r.questions[i]
                verdict = "right" if asked["scores"][grader] >= 0.5 else "wrong"
                cells.append(f"{esc(' / '.join(asked['predictions']))} <b>({verdict})</b>")
            rows.append(cells)
        first = records[0]
        blocks.append(f"<details><summary><b>{esc(first.title)}</b>: "
                      + esc(", ".join(f"{_label(r, labels)} {100 * r.accuracy.get(grader, 0):.0f}%" for r in records))
                      + "</summary>\n" + "".join(parts) + table(header, rows) + "</details>\n")
    note = (f"Every held-out passage: the self-edits of each condition (completion, status, the sequences trained on) "
            f"and every question's answer, graded by {grader}. Click a passage to open it.")
    return section("passages", "Passages, self-edits and answers", note, *blocks)


SECTIONS = (examples_section, passages_section)
