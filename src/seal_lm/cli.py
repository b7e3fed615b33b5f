"""The `seal` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from seal_lm.errors import SealError
from seal_lm.formats.knowledge import DEFAULT_FORMAT, FORMATS
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.models import EMBEDDED_MODEL, ModelSettings

DEMO_PASSAGES = 6


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=EMBEDDED_MODEL,
                       help="Hugging Face id, local directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="auto: bfloat16 where the hardware computes it natively (recent GPUs, CPUs with AVX-512 BF16 "
                            "or AMX; float32 adapters, optimizer and loss), float32 otherwise")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")


def _add_inner_loop_args(parser: argparse.ArgumentParser) -> None:
    d = InnerLoopSettings()
    group = parser.add_argument_group("inner loop (LoRA update; defaults are the paper's)")
    group.add_argument("--lora-rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    group.add_argument("--lora-alpha", type=int, default=d.alpha, help=f"LoRA alpha (default {d.alpha})")
    group.add_argument("--lr", type=float, default=d.learning_rate, help=f"learning rate (default {d.learning_rate})")
    group.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs over the sequences (default {d.epochs})")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help=f"sequences per step (default {d.batch_size})")
    group.add_argument("--target-modules", default="all-linear",
                       help="comma-separated module names, or all-linear (default: every linear projection)")


def _add_eval_args(parser: argparse.ArgumentParser, with_data: bool) -> None:
    if with_data:
        parser.add_argument("--data", help="passages: SEAL grouping or SQuAD v1.1 JSON (default: demo corpus, validation split)")
        parser.add_argument("--teacher", help="model that writes self-edits for the 'teacher' condition (any --model value)")
        parser.add_argument("--conditions", default=None,
                            help="comma-separated subset of base,passage,self-edit,teacher "
                                 "(default: base,passage,self-edit, plus teacher when --teacher is given)")
    parser.add_argument("--limit", type=int, default=DEMO_PASSAGES if not with_data else None,
                        help="evaluate only the first N passages")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and LoRA initialisation (default 0)")
    parser.add_argument("--format", default=DEFAULT_FORMAT, choices=sorted(FORMATS), help="self-edit format")
    parser.add_argument("--self-edits", type=int, default=1,
                        help="self-edits sampled per passage; accuracy is averaged over them, as in the paper (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="length limit of a self-edit (default 256)")
    parser.add_argument("--temperature", type=float, default=1.0, help="self-edit sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=0.95, help="self-edit nucleus sampling (default 0.95)")
    parser.add_argument("--grader", default="contains", choices=sorted(GRADERS),
                        help="which grader is the accuracy; all are recorded (default contains, see README)")
    parser.add_argument("--passages-per-batch", type=int, default=8,
                        help="passages whose self-edits, inner loops and answers run batched together (default 8)")
    parser.add_argument("--out", help="run directory (default runs/<time>-eval); an existing one is resumed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_model_args(parser)
    _add_inner_loop_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seal",
        description="SEAL: language models that write their own finetuning data (self-edits), "
                    "update themselves with LoRA, and are scored closed-book on what they learned.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ev = sub.add_parser(
        "eval", help="the paper's single-passage table (base / passage / passage + self-edit / teacher)",
        description="For each passage: closed-book accuracy of the base model, after LoRA on the passage, "
                    "after LoRA on the passage plus the model's own self-edit, and optionally plus a teacher's "
                    "self-edit. Writes config.json, results.jsonl and summary.json to the run directory.",
    )
    _add_eval_args(ev, with_data=True)
    demo = sub.add_parser(
        "demo", help=f"a quick SEAL demo on the embedded model and the demo corpus ({DEMO_PASSAGES} passages)",
        description="Runs `seal eval` conditions base, passage and passage + self-edit on the demo corpus' "
                    "validation passages (invented facts no model can know) and prints the table.",
    )
    _add_eval_args(demo, with_data=False)
    return parser


def _eval_config(args: argparse.Namespace):
    from seal_lm.generation import SamplingParams
    from seal_lm.recipes.knowledge_eval import EvalConfig

    teacher = getattr(args, "teacher", None)
    if getattr(args, "conditions", None):
        conditions = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    else:
        conditions = ("base", "passage", "self-edit") + (("teacher",) if teacher else ())
    targets = args.target_modules if args.target_modules == "all-linear" else tuple(args.target_modules.split(","))
    return EvalConfig(
        data=getattr(args, "data", None),
        limit=args.limit,
        seed=args.seed,
        model=ModelSettings(args.model, args.dtype, args.device, args.trust_remote_code),
        teacher=teacher,
        conditions=conditions,
        format=args.format,
        self_edits_per_passage=args.self_edits,
        self_edit_sampling=SamplingParams(temperature=args.temperature, top_p=args.top_p,
                                          max_new_tokens=args.max_new_tokens),
        grader=args.grader,
        passages_per_batch=args.passages_per_batch,
        inner_loop=InnerLoopSettings(rank=args.lora_rank, alpha=args.lora_alpha, learning_rate=args.lr,
                                     epochs=args.epochs, batch_size=args.batch_size, target_modules=targets),
    )


def _run_eval(args: argparse.Namespace) -> int:
    from seal_lm.recipes.knowledge_eval import run_eval
    from seal_lm.report import print_eval_table
    from seal_lm.runs import RunDir

    config = _eval_config(args)
    out = Path(args.out) if args.out else RunDir.new_path("runs", args.command)
    summary = run_eval(config, out, show_progress=not args.no_progress, label=f"seal {args.command}")
    print_eval_table(summary)
    print(f"run directory: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # peft internals
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # hub retries end in our one-line error
    try:
        return _run_eval(args)
    except SealError as exc:
        print(f"seal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seal: interrupted; finished work is saved in the run directory (rerun with the same --out to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
