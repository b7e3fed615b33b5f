"""Experiment tracking, as TRL's `report_to` names it: TensorBoard, Weights & Biases or MLflow.

A tracker sees every record a run appends and every summary it writes (runs.py calls it), and turns
them into metrics: inner-loop and policy-update losses per step, each training context's rewards,
per-round means and kept fractions, accuracies with their intervals and paired differences, and time
per phase. Logs go under the run directory unless the backend is pointed elsewhere (WANDB_DIR,
MLFLOW_TRACKING_URI). Each backend is an optional extra; a missing one is a one-line error.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seal_lm.config import flatten
from seal_lm.errors import SealError
from seal_lm.records import EvalRecord, PolicyUpdateRecord, Record, RolloutRecord, StepRecord

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")


class Tracker:
    """Turns records and summaries into metrics; `write` is the backend's. Without a backend, nothing."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def on_record(self, record: Record) -> None:
        for namespace, metrics in record_metrics(record):
            step = self.counters[namespace] = self.counters.get(namespace, -1) + 1
            self.write(namespace, metrics, step)

    def on_summary(self, summary: dict[str, Any]) -> None:
        for namespace, metrics, step in summary_metrics(summary):
            self.write(namespace, metrics, step)

    def write(self, namespace: str, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


def record_metrics(record: Record) -> Iterator[tuple[str, dict[str, float]]]:
    """Per record: the loss of each step of each update it trained, a rollout's rewards."""
    if isinstance(record, EvalRecord):
        for training in getattr(record, "training", []):
            for loss in training.get("step_losses", []):
                yield "inner_loop", {"step_loss": loss}
    elif isinstance(record, RolloutRecord):
        yield "rollouts", {"round": record.round, "mean_reward": sum(record.rewards) / max(len(record.rewards), 1),
                           "baseline": record.baseline, "best_gain": max(record.gains, default=0.0),
                           "kept": len(record.kept), "seconds_generation": record.seconds.get("generation", 0.0),
                           "seconds_rewards": record.seconds.get("rewards", 0.0)}
    elif isinstance(record, PolicyUpdateRecord):
        for loss in record.step_losses:
            yield "policy_update", {"step_loss": loss}
        if record.nll_before is not None:
            yield "policy_update_nll", {"before": record.nll_before, "after": record.nll_after or 0.0,
                                        "round": record.round}
    elif isinstance(record, StepRecord):
        for attempt in record.attempts:
            yield "continual", {"final_loss": attempt["final_loss"], "accepted": float(attempt["accepted"])}


def summary_metrics(summary: dict[str, Any]) -> Iterator[tuple[str, dict[str, float], int]]:
    """Accuracies with their intervals and paired differences (step 0), and each round's means and time."""
    grader = summary.get("grader")
    for key, row in (summary.get("conditions") or {}).items():
        estimate = row["accuracy"][grader]
        yield f"accuracy/{key}", {"mean": estimate["mean"], "low": estimate["low"], "high": estimate["high"],
                                  "n": estimate["n"]}, 0
    for key, d in (summary.get("paired") or {}).items():
        yield f"paired/{key}", {"mean": d["mean"], "low": d["low"], "high": d["high"], "p": d["p"]}, 0
    for row in summary.get("rounds") or []:
        yield "rounds", {"mean_reward": row["mean_reward"], "mean_baseline": row["mean_baseline"],
                         "kept_fraction": row["kept"] / max(row["contexts"], 1),
                         **{f"seconds_{k}": v for k, v in row["seconds"].items()}}, row["round"]


class TensorBoardTracker(Tracker):
    def __init__(self, directory: Path):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def write(self, namespace: str, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{namespace}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """Each namespace has its own step (W&B wants one increasing step per metric)."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]):
        super().__init__()
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="seal-lm", name=name, dir=str(directory), config=config, reinit="finish_previous")
        self.defined: set[str] = set()

    def write(self, namespace: str, metrics: dict[str, float], step: int) -> None:
        if namespace not in self.defined:
            self.run.define_metric(f"{namespace}/step")
            self.run.define_metric(f"{namespace}/*", step_metric=f"{namespace}/step")
            self.defined.add(namespace)
        self.run.log({**{f"{namespace}/{k}": v for k, v in metrics.items()}, f"{namespace}/step": step})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, directory: Path, name: str, config: dict[str, Any]):
        super().__init__()
        import os

        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:  # a file store in the run directory, as MLflow's own default
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to keep file stores
            mlflow.set_tracking_uri(directory.resolve().as_uri())
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(config).items()})

    def write(self, namespace: str, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({f"{namespace}/{k}".replace(" ", "_"): float(v) for k, v in metrics.items()},
                                step=step)

    def close(self) -> None:
        self.mlflow.end_run()


_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}


def make_tracker(report_to: str, run_dir: Path, config: dict[str, Any]) -> Tracker:
    """The tracker `report_to` names, logging under `run_dir`."""
    if report_to not in REPORT_TO:
        raise SealError(f"unknown report_to '{report_to}' (choose one of: {', '.join(REPORT_TO)})")
    if report_to == "none":
        return Tracker()
    try:
        importlib.import_module(report_to)
    except ImportError:
        raise SealError(f"report_to {report_to} needs the {report_to} extra: pip install 'seal-lm[{report_to}]' "
                        f"(package {_EXTRAS[report_to]})") from None
    name = run_dir.resolve().name
    if report_to == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard")
    if report_to == "wandb":
        return WandbTracker(run_dir, name, config)
    return MlflowTracker(run_dir / "mlruns", name, config)
