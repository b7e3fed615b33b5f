"""`seal eval`: a domain's conditions on its held-out contexts, before any RL (round 0).

The domain decides what the conditions are (base / passage / self-edit / teacher for knowledge,
icl / ttt / oracle for ARC); this recipe loads the model, lets the domain append the records the run
directory lacks, and writes the domain's summary. Rerunning with the same directory resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seal_lm.domain import Domain
from seal_lm.generation import backend_name
from seal_lm.models import load_model
from seal_lm.records import record_types
from seal_lm.tracking import Tracker
from seal_lm.runs import RunDir, config_defaults, one_writer, run_config, runtime_info


@one_writer
def run_eval(domain: Domain, out: str | Path, show_progress: bool = True, command: str = "eval",
             tracker: Tracker | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation into `out`; return the summary that is also written there."""
    run = RunDir(out, run_config(command, domain.name, domain.config), record_types(domain.eval_record), tracker,
                 defaults=config_defaults(domain.config))
    model = load_model(run.pinned_model(domain.config.model))
    run.note_runtime(runtime_info(model, backend_name(model)))
    domain.evaluate(model, 0, run, show_progress)
    summary = domain.summarize(run.records)
    run.write_summary(summary)
    return summary
