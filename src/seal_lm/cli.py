"""The `seal` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from seal_lm.errors import SealError
from seal_lm.formats.knowledge import FORMATS
from seal_lm.generation import BACKENDS
from seal_lm.grading import GRADERS
from seal_lm.inner_loop import InnerLoopSettings
from seal_lm.models import ModelSettings

if TYPE_CHECKING:
    from seal_lm.executors import ExecutorSettings
    from seal_lm.recipes.adapt import AdaptConfig
    from seal_lm.recipes.continual import ContinualConfig
    from seal_lm.recipes.fewshot import FewShotConfig
    from seal_lm.recipes.knowledge_eval import EvalConfig
    from seal_lm.recipes.knowledge_train import TrainConfig
    from seal_lm.recipes.rest_em import RestEmSettings

DEMO_PASSAGES = 6


def _add_model_args(parser: argparse.ArgumentParser, d: ModelSettings, backend: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=d.name,
                       help="Hugging Face id, local directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    group.add_argument("--dtype", default=d.dtype, choices=["auto", "float32", "bfloat16", "float16"],
                       help="auto: bfloat16 where the hardware computes it natively (recent GPUs, CPUs with AVX-512 BF16 "
                            "or AMX; float32 adapters, optimizer and loss), float32 otherwise")
    group.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    group.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    if backend:
        group.add_argument("--generation-backend", choices=BACKENDS,
                           help="auto (default, or SEAL_GENERATION_BACKEND): vLLM when the model is on a CUDA GPU and "
                                "`pip install seal-lm[vllm]` is done, else transformers; not part of the run's config")


def _add_inner_loop_args(parser: argparse.ArgumentParser, d: InnerLoopSettings) -> None:
    group = parser.add_argument_group("inner loop (LoRA update; defaults are the paper's)")
    group.add_argument("--lora-rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    group.add_argument("--lora-alpha", type=int, default=d.alpha, help=f"LoRA alpha (default {d.alpha})")
    group.add_argument("--lr", type=float, default=d.learning_rate, help=f"learning rate (default {d.learning_rate})")
    group.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs over the sequences (default {d.epochs})")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help=f"sequences per step (default {d.batch_size})")
    group.add_argument("--target-modules", default=",".join(d.target_modules) if isinstance(d.target_modules, tuple)
                       else d.target_modules,
                       help="comma-separated module names, or all-linear (default: every linear projection)")


def _add_eval_args(parser: argparse.ArgumentParser, d: EvalConfig, with_data: bool, held_out: str = "",
                   with_mode: bool = False) -> None:
    if with_mode:
        parser.add_argument("--mode", choices=["single", "cpt"], default=d.mode,
                            help="single: one LoRA update per passage (the paper's main setting); cpt: continued "
                                 "pretraining, one update on the pooled self-edits of --docs passages, then all their "
                                 "questions (its defaults follow SEAL's code: --self-edits 5 --epochs 3 --batch-size 8)")
        parser.add_argument("--docs", type=int, default=d.docs,
                            help="cpt: passages pooled into one update (default: all evaluated passages)")
    if with_data:
        parser.add_argument("--data", default=d.data, help=f"{held_out}passages: SEAL grouping or SQuAD v1.1 JSON "
                                                           "(default: demo corpus, validation split)")
        parser.add_argument("--teacher", default=d.teacher,
                            help="model that writes self-edits for the 'teacher' condition (any --model value)")
        parser.add_argument("--conditions", default=None,
                            help="comma-separated subset of base,passage,self-edit,teacher "
                                 "(default: base,passage,self-edit, plus teacher when --teacher is given)")
        parser.add_argument("--skip", type=int, default=d.skip, help=f"leave out the first N {held_out}passages")
    parser.add_argument("--limit", type=int, default=d.limit, help=f"evaluate only the first N {held_out}passages")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed for sampling and LoRA initialisation (default {d.seed})")
    parser.add_argument("--format", default=d.format, choices=sorted(FORMATS), help="self-edit format")
    parser.add_argument("--self-edits", type=int, default=d.self_edits_per_passage,
                        help="self-edits sampled per evaluated passage; accuracy is averaged over them, as in the paper "
                             f"(default {d.self_edits_per_passage})")
    sampling = d.self_edit_sampling
    parser.add_argument("--max-new-tokens", type=int, default=sampling.max_new_tokens,
                        help=f"length limit of a self-edit (default {sampling.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=sampling.temperature,
                        help=f"self-edit sampling temperature (default {sampling.temperature})")
    parser.add_argument("--top-p", type=float, default=sampling.top_p,
                        help=f"self-edit nucleus sampling (default {sampling.top_p})")
    parser.add_argument("--grader", default=d.grader, choices=sorted([*GRADERS, "judge"]),
                        help=f"which grader is the accuracy; all are recorded (default {d.grader}; judge needs --judge "
                             "or --judge-url, see README)")
    _add_judge_args(parser)
    parser.add_argument("--passages-per-batch", type=int, default=d.passages_per_batch,
                        help="passages whose self-edits, inner loops and answers run batched together "
                             f"(default {d.passages_per_batch})")
    parser.add_argument("--adapters-per-pass", type=int, default=d.adapters_per_pass,
                        help="inner loops trained together in one forward/backward pass; more is faster until memory "
                             f"or compute is full, 1 trains them one by one (default {d.adapters_per_pass})")
    _add_run_args(parser)
    _add_model_args(parser, d.model)
    _add_inner_loop_args(parser, d.inner_loop)


def _add_judge_args(parser: argparse.ArgumentParser) -> None:
    from seal_lm.judge import JudgeSettings

    group = parser.add_argument_group("LLM judge (grades every answer too; --grader judge makes it the accuracy)")
    group.add_argument("--judge", metavar="MODEL", help="a local judge model (any --model value; loaded with --dtype/--device)")
    group.add_argument("--judge-url", metavar="URL", help="an OpenAI-compatible endpoint as judge (seal serve, vLLM, a hosted API)")
    group.add_argument("--judge-model", metavar="NAME", help="the model the --judge-url endpoint serves, e.g. gpt-4.1")
    group.add_argument("--judge-api-key-env", metavar="VAR", default=JudgeSettings.api_key_env,
                       help=f"environment variable holding the endpoint's API key (default {JudgeSettings.api_key_env}; "
                            "the key itself is never stored)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run directory")
    group.add_argument("--out", help=f"run directory (default runs/<time>-{parser.prog.split()[-1]}); "
                                     "an existing one with the same config is resumed")
    group.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR with its saved config (other settings are ignored)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_domain_arg(parser: argparse.ArgumentParser, domain: str | None) -> None:
    parser.add_argument("--domain", choices=["knowledge", "arc"], default=domain or "knowledge",
                        help="knowledge: learn passages, answer questions closed-book (default); arc: few-shot grid "
                             "tasks with test-time training (`--domain arc --help` lists its options)")


def _add_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["paper", "cpu-demo"], default=None,
                        help="start from a named configuration (flags override it): paper (the paper's data and "
                             "settings) or cpu-demo (CPU-sized: the whole loop on the embedded model in under 30 min)")


def _add_fewshot_args(parser: argparse.ArgumentParser, d: FewShotConfig, train: bool) -> None:
    from seal_lm.recipes.fewshot import TASK_SOURCES

    _add_preset_arg(parser)
    sources = ", ".join(TASK_SOURCES)
    group = parser.add_argument_group("tasks")
    if train:
        group.add_argument("--tasks", default=d.tasks, help=f"training tasks: {sources}, or an ARC JSON file "
                                                           f"(default {d.tasks})")
        group.add_argument("--task-ids", default=",".join(d.task_ids), help="comma-separated ids to keep")
    group.add_argument("--eval-tasks", default=d.eval_tasks, help=f"evaluation tasks: {sources}, or an ARC JSON "
                                                                  f"challenges file (default {d.eval_tasks})")
    group.add_argument("--eval-task-ids", default=",".join(d.eval_task_ids), help="comma-separated ids to keep")
    group.add_argument("--eval-solutions", default=d.eval_solutions, help="solutions file for an ARC JSON challenges file")
    group.add_argument("--procedural-count", type=int, default=d.procedural_count,
                       help=f"procedural tasks per split (default {d.procedural_count})")
    group.add_argument("--procedural-seed", type=int, default=d.procedural_seed,
                       help="seed of the procedural training tasks; evaluation tasks use seed + 1")
    group.add_argument("--procedural-max-size", type=int, default=d.procedural_max_size,
                       help=f"largest procedural grid side, from 3 (default {d.procedural_max_size})")
    group.add_argument("--limit", type=int, default=d.limit, help="evaluate only the first N tasks")
    group = parser.add_argument_group("self-edits and test-time training")
    group.add_argument("--conditions", default=",".join(d.conditions), help="comma-separated subset of icl,ttt,oracle")
    group.add_argument("--self-edits", type=int, default=d.self_edits_per_task,
                       help=f"configurations sampled per evaluated task, success averaged (default {d.self_edits_per_task})")
    group.add_argument("--temperature", type=float, default=d.self_edit_sampling.temperature,
                       help=f"self-edit sampling temperature (default {d.self_edit_sampling.temperature})")
    group.add_argument("--max-new-tokens", type=int, default=d.self_edit_sampling.max_new_tokens,
                       help=f"length limit of a self-edit (default {d.self_edit_sampling.max_new_tokens})")
    group.add_argument("--max-examples", type=int, default=d.max_examples,
                       help=f"test-time training examples per task (default {d.max_examples})")
    group.add_argument("--max-epochs", type=int, default=d.max_epochs,
                       help=f"largest number of epochs a self-edit may choose, at most 10 (default {d.max_epochs})")
    group.add_argument("--lora-rank", type=int, default=d.ttt.rank, help=f"TTT LoRA rank (default {d.ttt.rank})")
    group.add_argument("--lora-alpha", type=int, default=d.ttt.alpha, help=f"TTT LoRA alpha (default {d.ttt.alpha})")
    group.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    group.add_argument("--tasks-per-batch", type=int, default=d.tasks_per_batch,
                       help=f"tasks evaluated together (default {d.tasks_per_batch})")
    group.add_argument("--adapters-per-pass", type=int, default=d.adapters_per_pass,
                       help=f"test-time trainings run together in one pass (default {d.adapters_per_pass})")
    if train:
        _add_rest_em_args(parser, d.rest_em, "task", "0 (any solve counts)")
    _add_run_args(parser)
    _add_model_args(parser, d.model)


def _fewshot_config(args: argparse.Namespace) -> FewShotConfig:
    from seal_lm.recipes.fewshot import FewShotConfig, preset

    base = preset(args.preset) if args.preset else FewShotConfig()
    config = dataclasses.replace(
        base,
        tasks=getattr(args, "tasks", base.tasks), task_ids=_comma_list(getattr(args, "task_ids", "")),
        eval_tasks=args.eval_tasks, eval_task_ids=_comma_list(args.eval_task_ids), eval_solutions=args.eval_solutions,
        procedural_count=args.procedural_count, procedural_seed=args.procedural_seed,
        procedural_max_size=args.procedural_max_size, limit=args.limit, max_epochs=args.max_epochs,
        model=ModelSettings(args.model, args.dtype, args.device, args.trust_remote_code), seed=args.seed,
        conditions=_comma_list(args.conditions), self_edits_per_task=args.self_edits,
        self_edit_sampling=dataclasses.replace(base.self_edit_sampling, temperature=args.temperature,
                                               max_new_tokens=args.max_new_tokens),
        max_examples=args.max_examples, ttt=dataclasses.replace(base.ttt, rank=args.lora_rank, alpha=args.lora_alpha),
        tasks_per_batch=args.tasks_per_batch, adapters_per_pass=args.adapters_per_pass,
    )
    if args.command == "train":
        config.rest_em = _rest_em_settings(args, base.rest_em)
    return config


def _add_train_args(parser: argparse.ArgumentParser, d: TrainConfig) -> None:
    _add_preset_arg(parser)
    group = parser.add_argument_group("training passages")
    group.add_argument("--train-data", default=d.train_data,
                       help="passages the policy learns from (default: demo corpus, train split)")
    group.add_argument("--train-skip", type=int, default=d.train_skip, help="leave out the first N training passages")
    group.add_argument("--train-limit", type=int, default=d.train_limit, help="use only the first N training passages")
    _add_rest_em_args(parser, d.rest_em, "passage", "training on the passage alone")


def _add_rest_em_args(parser: argparse.ArgumentParser, r: RestEmSettings, unit: str, baseline: str) -> None:
    """The outer loop's options, the same for every domain (`unit`: what a training context is called)."""
    group = parser.add_argument_group("ReST-EM outer loop")
    group.add_argument("--rounds", type=int, default=r.rounds, help=f"RL rounds (default {r.rounds})")
    group.add_argument(f"--{unit}s-per-round", dest="per_round", type=int, default=r.contexts_per_round,
                       help=f"training {unit}s per round; round r takes the next ones (default {r.contexts_per_round})")
    group.add_argument("--samples", type=int, default=r.samples_per_context,
                       help=f"self-edits sampled per training {unit} (K, default {r.samples_per_context})")
    group.add_argument("--reward-repeats", type=int, default=r.reward_repeats,
                       help=f"inner loops averaged per reward (default {r.reward_repeats})")
    group.add_argument("--keep", choices=["best", "positive", "top-k"], default=r.keep,
                       help=f"which self-edits train the policy: the best per {unit} if it beats the baseline "
                            f"({baseline}), all that beat it, or the --keep-k best that beat it (default {r.keep})")
    group.add_argument("--keep-k", type=int, default=r.keep_k, help=f"k for --keep top-k (default {r.keep_k})")
    group.add_argument("--adapt", choices=["policy", "base"], default=r.adapt,
                       help="which model the inner loop adapts: the current policy, as in the paper, or the "
                            f"original model (default {r.adapt})")
    group.add_argument(f"--{unit}s-per-rollout-batch", dest="per_rollout_batch", type=int, default=r.contexts_per_batch,
                       help=f"training {unit}s sampled and scored together (default {r.contexts_per_batch})")
    group = parser.add_argument_group("where the rewards' inner loops run (not part of the run's config)")
    group.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: in this process (default); ray: on a Ray cluster, one model replica per worker")
    group.add_argument("--ray-address", default=None,
                       help="join this Ray cluster (auto, or ray://host:10001); default: start a local one")
    group.add_argument("--workers", type=int, default=2, help="Ray workers, each holding one model (default 2)")
    group.add_argument("--cpus-per-worker", type=float, default=1, help="CPU slots per Ray worker (default 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0,
                       help="GPUs per Ray worker (default 0; 1 puts each replica on its own GPU)")
    p = r.policy_update
    group = parser.add_argument_group("policy update (LoRA SFT on kept self-edits, merged after each round)")
    group.add_argument("--policy-lr", type=float, default=p.learning_rate, help=f"default {p.learning_rate}")
    group.add_argument("--policy-epochs", type=int, default=p.epochs, help=f"default {p.epochs}")
    group.add_argument("--policy-batch-size", type=int, default=p.batch_size, help=f"default {p.batch_size}")
    group.add_argument("--policy-rank", type=int, default=p.rank, help=f"default {p.rank}")
    group.add_argument("--policy-alpha", type=int, default=p.alpha, help=f"default {p.alpha}")


def _rest_em_settings(args: argparse.Namespace, base: RestEmSettings) -> RestEmSettings:
    return dataclasses.replace(
        base, rounds=args.rounds, contexts_per_round=args.per_round, samples_per_context=args.samples,
        reward_repeats=args.reward_repeats, keep=args.keep, keep_k=args.keep_k, adapt=args.adapt,
        contexts_per_batch=args.per_rollout_batch,
        policy_update=dataclasses.replace(base.policy_update, rank=args.policy_rank, alpha=args.policy_alpha,
                                          learning_rate=args.policy_lr, epochs=args.policy_epochs,
                                          batch_size=args.policy_batch_size))


def build_parser(preset_name: str | None = None, mode: str | None = None,
                 domain: str | None = None) -> argparse.ArgumentParser:
    """`preset_name` (train), `mode` (eval) and `domain` choose the arguments and the defaults that
    the other flags then override."""
    from seal_lm.recipes.fewshot import FewShotConfig
    from seal_lm.recipes.fewshot import preset as fewshot_preset
    from seal_lm.recipes.knowledge_eval import EvalConfig, cpt_defaults
    from seal_lm.recipes.knowledge_train import preset

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
    arc = (fewshot_preset(preset_name) if preset_name else FewShotConfig()) if domain == "arc" else None
    _add_domain_arg(ev, domain)
    if arc:
        _add_fewshot_args(ev, arc, train=False)
    else:
        _add_eval_args(ev, cpt_defaults() if mode == "cpt" else EvalConfig(), with_data=True, with_mode=True)
    demo = sub.add_parser(
        "demo", help=f"a quick SEAL demo on the embedded model and the demo corpus ({DEMO_PASSAGES} passages)",
        description="Runs `seal eval` conditions base, passage and passage + self-edit on the demo corpus' "
                    "validation passages (invented facts no model can know) and prints the table.",
    )
    _add_eval_args(demo, EvalConfig(limit=DEMO_PASSAGES), with_data=False)
    train = sub.add_parser(
        "train", help="ReST-EM: teach the model to write better self-edits (all rounds in one command)",
        description="Each round: sample self-edits for training passages, score each by an inner loop "
                    "(closed-book accuracy after the update, against training on the passage alone), finetune "
                    "the policy on the best ones and merge it into a new checkpoint; then evaluate on held-out "
                    "passages. Prints base / passage / passage + self-edit / SEAL round 1 / SEAL round 2 ...",
    )
    _add_domain_arg(train, domain)
    if arc:
        _add_fewshot_args(train, arc, train=True)
    else:
        config = preset(preset_name or "paper")
        _add_train_args(train, config)
        _add_eval_args(train, config.eval, with_data=True, held_out="held-out ")
    continual = sub.add_parser(
        "continual", help="self-edits applied one after another: the forgetting matrix, with or without a guard",
        description="For several random orders of N passages: the model writes a self-edit for each passage in "
                    "turn and is updated on it (each update starts from the model the previous one left); after "
                    "every update it answers the questions of every passage seen so far. Prints the N x N "
                    "forgetting matrix (mean and spread over orders). --guard on refuses updates that lower "
                    "accuracy on earlier passages (and on optional general prompts) by more than --max-drop.",
    )
    from seal_lm.recipes.continual import ContinualConfig

    _add_continual_args(continual, ContinualConfig())
    adapt = sub.add_parser(
        "adapt", help="teach a model your documents with its own self-edits; save a PEFT adapter or merged model",
        description="Each document (a .txt/.md/.json file, or every such file in a folder) is learned in turn: the "
                    "model writes a self-edit and is updated on it (with --guard, only if earlier documents are not "
                    "forgotten). Saves RUN_DIR/adapter (PEFT) or RUN_DIR/model (--save merged) and prints what was "
                    "learned: questions the model wrote about each document (with the document in view), answered "
                    "closed-book before and after, graded against its own open-book answers (no gold answers).",
    )
    from seal_lm.recipes.adapt import AdaptConfig

    defaults = AdaptConfig()
    adapt.add_argument("documents", metavar="DOCUMENTS", nargs="?",
                       help="a file or a folder of .txt, .md or .json documents (not needed with --resume)")
    adapt.add_argument("--save", choices=["adapter", "merged"], default=defaults.save,
                       help="adapter: one PEFT adapter, the sum of all accepted updates (default); merged: the "
                            "whole model with the updates merged (transformers format)")
    adapt.add_argument("--self-check", type=int, default=defaults.self_check_questions,
                       help=f"questions the model writes per document to check itself (default "
                            f"{defaults.self_check_questions}; 0: none)")
    _add_continual_args(adapt, defaults)
    serve_cmd = sub.add_parser(
        "serve", help="an OpenAI-compatible HTTP server for the model and any saved LoRA adapters",
        description="Serves /v1/models, /v1/completions, /v1/chat/completions and vLLM's /v1/load_lora_adapter and "
                    "/v1/unload_lora_adapter; a request's \"model\" picks the base model or an adapter by name. "
                    "Concurrent requests are batched.",
    )
    _add_model_args(serve_cmd, ModelSettings(), backend=False)
    serve_cmd.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                           help="serve the PEFT adapter saved in PATH under the name NAME (repeatable)")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve_cmd.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve_cmd.add_argument("--api-key", default=os.environ.get("SEAL_API_KEY"),
                           help="require 'Authorization: Bearer KEY' on every request (default: $SEAL_API_KEY, else none)")
    serve_cmd.add_argument("--max-batch", type=int, default=32, help="most prompts generated together (default 32)")
    report = sub.add_parser("report", help="write an HTML page and PNG plots for a run directory",
                            description="Writes RUN_DIR/report/index.html (self-contained) and the plots as PNG files.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by seal eval, demo or train")
    return parser


def _add_continual_args(parser: argparse.ArgumentParser, d: ContinualConfig | AdaptConfig) -> None:
    """Options shared by `seal continual` and `seal adapt` (the same sequence of guarded updates)."""
    from seal_lm.recipes.continual import ContinualConfig

    group = parser.add_argument_group("updates")
    if isinstance(d, ContinualConfig):
        group.add_argument("--data", default=d.data, help="passages: SEAL grouping or SQuAD v1.1 JSON "
                                                          "(default: demo corpus, validation split)")
        group.add_argument("--skip", type=int, default=d.skip, help="leave out the first N passages")
        group.add_argument("--limit", type=int, default=d.limit, help=f"N, the passages learned in turn (default {d.limit})")
        group.add_argument("--orders", type=int, default=d.orders,
                           help=f"random orders to average over; the first is the file's order (default {d.orders})")
    group.add_argument("--accumulate", choices=["merge", "stack"], default=d.accumulate,
                       help="merge: each update is merged into the weights in turn; stack: updates stay separate "
                            f"adapters whose exact sum is applied (default {d.accumulate})")
    group.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    group.add_argument("--format", default=d.format, choices=sorted(FORMATS), help="self-edit format")
    group.add_argument("--max-new-tokens", type=int, default=d.self_edit_sampling.max_new_tokens,
                       help=f"length limit of a self-edit (default {d.self_edit_sampling.max_new_tokens})")
    group.add_argument("--temperature", type=float, default=d.self_edit_sampling.temperature,
                       help=f"self-edit sampling temperature (default {d.self_edit_sampling.temperature})")
    group.add_argument("--grader", default=d.grader, choices=sorted(GRADERS), help=f"default {d.grader}")
    g = d.guard_settings
    group = parser.add_argument_group("retention guard")
    if isinstance(d, ContinualConfig):
        group.add_argument("--guard", choices=["off", "on", "both"], default=d.guard,
                           help="off (default); on: check every update before accepting it; both: run every order "
                                "with and without the guard, side by side")
    else:
        group.add_argument("--guard", action="store_true",
                           help="check every update before accepting it (probe: earlier documents' self-check "
                                "questions and the --general-prompts)")
    group.add_argument("--max-drop", type=float, default=g.max_drop,
                       help=f"largest allowed drop of the probe score, 0-1 (default {g.max_drop})")
    group.add_argument("--guard-action", choices=["reject", "retry"], default=g.action,
                       help=f"reject: roll the update back; retry: train again with a smaller learning rate "
                            f"(default {g.action})")
    group.add_argument("--retry-factor", type=float, default=g.retry_factor,
                       help=f"learning rate multiplier per retry (default {g.retry_factor})")
    group.add_argument("--max-retries", type=int, default=g.max_retries, help=f"default {g.max_retries}")
    group.add_argument("--general-prompts", default=g.general_prompts,
                       help="text file, one prompt per line, whose greedy answers must not change (part of the probe)")
    _add_run_args(parser)
    _add_model_args(parser, d.model, backend=False)  # updates are merged in memory: transformers generates
    _add_inner_loop_args(parser, d.inner_loop)


def _update_fields(args: argparse.Namespace, d: ContinualConfig | AdaptConfig) -> dict:
    """The fields `seal continual` and `seal adapt` share, from their shared options."""
    from seal_lm.recipes.continual import GuardSettings

    targets = args.target_modules if args.target_modules == "all-linear" else _comma_list(args.target_modules)
    return dict(
        seed=args.seed, model=ModelSettings(args.model, args.dtype, args.device, args.trust_remote_code),
        format=args.format, grader=args.grader, accumulate=args.accumulate, guard=args.guard,
        self_edit_sampling=dataclasses.replace(d.self_edit_sampling, temperature=args.temperature,
                                               max_new_tokens=args.max_new_tokens),
        inner_loop=InnerLoopSettings(rank=args.lora_rank, alpha=args.lora_alpha, learning_rate=args.lr,
                                     epochs=args.epochs, batch_size=args.batch_size, target_modules=targets),
        guard_settings=GuardSettings(max_drop=args.max_drop, action=args.guard_action, retry_factor=args.retry_factor,
                                     max_retries=args.max_retries, general_prompts=args.general_prompts),
    )


def _continual_config(args: argparse.Namespace) -> ContinualConfig:
    from seal_lm.recipes.continual import ContinualConfig

    return ContinualConfig(data=args.data, skip=args.skip, limit=args.limit, orders=args.orders,
                           **_update_fields(args, ContinualConfig()))


def _adapt_config(args: argparse.Namespace) -> AdaptConfig:
    from seal_lm.recipes.adapt import AdaptConfig

    if not args.documents:
        raise SealError("seal adapt needs DOCUMENTS (a file or folder), or --resume RUN_DIR")
    return AdaptConfig(documents=args.documents, self_check_questions=args.self_check, save=args.save,
                       **_update_fields(args, AdaptConfig()))


def _eval_config(args: argparse.Namespace) -> EvalConfig:
    from seal_lm.generation import SamplingParams
    from seal_lm.recipes.knowledge_eval import EvalConfig

    teacher = getattr(args, "teacher", None)
    if getattr(args, "conditions", None):
        conditions = _comma_list(args.conditions)
    else:
        conditions = ("base", "passage", "self-edit") + (("teacher",) if teacher else ())
    targets = args.target_modules if args.target_modules == "all-linear" else _comma_list(args.target_modules)
    from seal_lm.judge import JudgeSettings

    judge = None
    if args.judge or args.judge_url or args.judge_model:  # JudgeSettings.validate explains a bad combination
        judge = JudgeSettings(model=args.judge, url=args.judge_url, endpoint_model=args.judge_model,
                              api_key_env=args.judge_api_key_env)
    return EvalConfig(
        judge=judge,
        data=getattr(args, "data", None),
        skip=getattr(args, "skip", 0),
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
        adapters_per_pass=args.adapters_per_pass,
        mode=getattr(args, "mode", "single"),
        docs=getattr(args, "docs", None),
        inner_loop=InnerLoopSettings(rank=args.lora_rank, alpha=args.lora_alpha, learning_rate=args.lr,
                                     epochs=args.epochs, batch_size=args.batch_size, target_modules=targets),
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from seal_lm.recipes.knowledge_train import TrainConfig, preset

    return TrainConfig(
        eval=_eval_config(args),
        train_data=args.train_data,
        train_skip=args.train_skip,
        train_limit=args.train_limit,
        rest_em=_rest_em_settings(args, preset(getattr(args, "preset", None) or "paper").rest_em),
    )


def _run_command(args: argparse.Namespace) -> int:
    from seal_lm.report import print_eval_table
    from seal_lm.runs import RunDir, config_from_dict, read_config

    if args.command == "report":
        from seal_lm.report_html import write_report

        print(f"report: {write_report(args.run_dir)}")
        return 0
    if args.command == "serve":
        return _serve(args)
    if getattr(args, "generation_backend", None):  # read by make_generator, also in executor workers
        os.environ["SEAL_GENERATION_BACKEND"] = args.generation_backend
    from seal_lm.recipes.fewshot import FewShotConfig, run_fewshot_eval, run_fewshot_train
    from seal_lm.recipes.knowledge_eval import EvalConfig, run_eval
    from seal_lm.recipes.knowledge_train import TrainConfig, run_train

    out = Path(args.resume or args.out or RunDir.new_path("runs", args.command))
    stored = read_config(out) if args.resume else None
    if args.command == "continual":
        from seal_lm.recipes.continual import ContinualConfig, run_continual
        from seal_lm.report import print_forgetting

        config = config_from_dict(ContinualConfig, stored, str(out)) if stored else _continual_config(args)
        print_forgetting(run_continual(config, out, not args.no_progress))
        print(f"run directory: {out}  (seal report {out} draws the heatmaps)")
        return 0
    if args.command == "adapt":
        from seal_lm.recipes.adapt import AdaptConfig, run_adapt
        from seal_lm.report import print_adapt

        config = config_from_dict(AdaptConfig, stored, str(out)) if stored else _adapt_config(args)
        print_adapt(run_adapt(config, out, not args.no_progress))
        print(f"run directory: {out}")
        return 0
    domain = stored.get("domain", "knowledge") if stored else getattr(args, "domain", "knowledge")
    progress = not args.no_progress
    executor = _executor_settings(args) if args.command == "train" else None
    if domain == "arc":
        config = config_from_dict(FewShotConfig, stored, str(out)) if stored else _fewshot_config(args)
        summary = (run_fewshot_train(config, out, progress, executor) if args.command == "train"
                   else run_fewshot_eval(config, out, progress))
    elif args.command == "train":
        config = config_from_dict(TrainConfig, stored, str(out)) if stored else _train_config(args)
        summary = run_train(config, out, progress, executor)
    else:
        config = config_from_dict(EvalConfig, stored, str(out)) if stored else _eval_config(args)
        summary = run_eval(config, out, progress, label=f"seal {args.command}")
    print_eval_table(summary)
    for row in summary.get("rounds", []):
        print(f"round {row['round']}: mean reward {100 * row['mean_reward']:.1f}% vs baseline "
              f"{100 * row['mean_baseline']:.1f}%; a self-edit beat it on {row['kept']} of {row['contexts']} contexts")
    print(f"run directory: {out}  (seal report {out} draws the plots)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from seal_lm.serve import serve
    except ImportError as exc:
        raise SealError(f"seal serve needs the serve extra: pip install 'seal-lm[serve]' ({exc.name} is missing)") from None
    from seal_lm.models import load_model

    adapters: dict[str, str] = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise SealError(f"--adapter {item!r}: expected NAME=PATH")
        if name in adapters:
            raise SealError(f"--adapter {name}: given twice")
        adapters[name] = path
    if args.max_batch < 1:
        raise SealError(f"--max-batch must be at least 1 (got {args.max_batch})")
    if args.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"seal serve: warning: listening on {args.host} without --api-key", file=sys.stderr)
    loaded = load_model(ModelSettings(args.model, args.dtype, args.device, args.trust_remote_code))
    serve(loaded, loaded.name, host=args.host, port=args.port, adapters=adapters, api_key=args.api_key,
          max_batch=args.max_batch)
    return 0


def _executor_settings(args: argparse.Namespace) -> ExecutorSettings:
    from seal_lm.executors import ExecutorSettings

    return ExecutorSettings(args.executor, args.ray_address, args.workers, args.cpus_per_worker, args.gpus_per_worker)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _value_in(argv: list[str], flag: str) -> str | None:
    """A flag's value, read before parsing so that it can supply the defaults (and --help shows them)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(_value_in(argv, "--preset"), _value_in(argv, "--mode"), _value_in(argv, "--domain"))
    except SealError as exc:
        print(f"seal: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # peft internals
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # hub retries end in our one-line error
    try:
        return _run_command(args)
    except SealError as exc:
        print(f"seal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seal: interrupted; finished work is saved in the run directory (rerun with the same --out to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
