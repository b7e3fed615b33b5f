"""The `seal` command line.

Each recipe command takes one typed config: a domain's (`--domain`), started from a shipped preset
(`--preset`), a file (`--config`) or a run directory (`--resume`), with any field overridden by its
dotted name (`--inner_loop.learning_rate 3e-4`). The options are generated from the config classes
(seal_lm.config), so a new field needs no code here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seal_lm.config import (
    ConfigError,
    as_dict,
    at_least,
    checked,
    config_parser,
    flatten,
    parse_command_line,
    parse_values,
    preset_names,
    preset_source,
    read_file,
)
from seal_lm.errors import SealError
from seal_lm.models import ModelSettings
from seal_lm.tracking import REPORT_TO

COMMANDS = {
    "eval": ("a domain's table before RL: knowledge base / passage / passage + self-edit (/ teacher); ARC icl / ttt "
             "/ oracle", None),
    "demo": ("a quick SEAL demo on the embedded model and 6 invented demo passages", "demo"),
    "train": ("ReST-EM: teach the model to write better self-edits, evaluated before and after each round", None),
    "continual": ("self-edits applied one after another: the forgetting matrix, with or without a guard", None),
    "adapt": ("teach a model your documents with its own self-edits; save a PEFT adapter or a merged model", None),
    "serve": ("an OpenAI-compatible HTTP server for a model and any saved LoRA adapters", None),
    "report": ("write an HTML page and PNG plots for a run directory", None),
}


@dataclass
class ServeConfig:
    """`seal serve`: /v1/models, /v1/completions, /v1/chat/completions and vLLM's /v1/load_lora_adapter and
    /v1/unload_lora_adapter; a request's "model" picks the base model or an adapter by name."""

    model: ModelSettings = field(default_factory=ModelSettings)
    """the model to serve"""
    adapters: list[str] = field(default_factory=list)
    """PEFT adapters to serve, as NAME=PATH"""
    host: str = "127.0.0.1"
    """address to listen on (127.0.0.1: this machine only)"""
    port: int = 8000
    """port"""
    api_key: str | None = None
    """require 'Authorization: Bearer KEY' on every request (default: $SEAL_API_KEY, else none)"""
    api_key_file: str | None = None
    """read the API key from this file instead, so that it never shows in the process list"""
    max_batch: int = 32
    """most prompts generated together"""
    allow_runtime_adapters: bool = False
    """let clients load adapters with /v1/load_lora_adapter (only from under adapter_root)"""
    adapter_root: str | None = None
    """the directory runtime adapters must lie under (symbolic links and .. resolved first)"""

    def validate(self) -> None:
        at_least("max_batch", self.max_batch, 1)
        self.model.validate("model")
        if self.allow_runtime_adapters != (self.adapter_root is not None):
            raise ConfigError("adapter_root", "allow_runtime_adapters and adapter_root go together: runtime "
                                              "adapters are only loaded from under adapter_root")
        if self.api_key is not None and self.api_key_file is not None:
            raise ConfigError("api_key_file", "give api_key or api_key_file, not both")

    def key(self) -> str | None:
        if self.api_key_file is None:
            return self.api_key
        try:
            key = Path(self.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SealError(f"api_key_file {self.api_key_file}: cannot read ({exc.strerror})") from None
        if not key:
            raise SealError(f"api_key_file {self.api_key_file}: the file is empty")
        return key


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    _quiet_libraries(verbose)
    try:
        return _main(argv)
    except SealError as exc:
        print(f"seal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seal: interrupted; finished work is saved in the run directory (rerun with --resume to go on)",
              file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top = argparse.ArgumentParser(prog="seal", description="SEAL: language models that write their own "
                                      "finetuning data (self-edits), update themselves with LoRA, and learn to write "
                                      "better self-edits. `seal COMMAND --help` lists a command's settings.")
        top.add_argument("-v", "--verbose", action="store_true", help="log details")
        sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for name, (help_text, _) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
        top.parse_args(argv[:1])  # prints help or a usage error and exits
        return 0
    command, args = argv[0], argv[1:]
    if command == "report":
        return _report(args)
    if command == "serve":
        return _serve(args)
    return _run_recipe(command, args)


def _run_recipe(command: str, args: list[str]) -> int:
    from seal_lm.domains import DOMAINS, domain_class
    from seal_lm.runs import CONFIG_FILE, RunDir, read_config

    pre = argparse.ArgumentParser(add_help=False)
    for option in ("--domain", "--preset", "--config", "--resume"):
        pre.add_argument(option)
    known, _ = pre.parse_known_args(args)
    if sum(bool(x) for x in (known.preset, known.config, known.resume)) > 1:
        raise SealError("choose one of --preset, --config and --resume")
    values: dict[str, Any] = {}
    if known.resume:
        values, source = read_config(known.resume), str(Path(known.resume) / CONFIG_FILE)
    elif known.config:
        values, source = read_file(known.config), known.config
    chosen = values.pop("domain", None)
    values.pop("command", None)
    if known.domain and chosen and known.domain != chosen:
        raise SealError(f"{source} is for the {chosen} domain, not {known.domain}")
    name = chosen or known.domain or "knowledge"
    domain_type = domain_class(name)
    cls = domain_type.config_class
    preset = known.preset or (None if known.config or known.resume else COMMANDS[command][1])
    if preset:
        values, source = preset_source(name, preset)
    base = parse_values(cls, values, source if values else "defaults")
    usage = (f"seal {command} [--domain NAME] [--preset NAME | --config FILE | --resume RUN_DIR] [--out DIR] "
             f"[--KEY VALUE ...]{' [DOCUMENTS]' if command == 'adapt' else ''}")
    parser = config_parser(cls, f"seal {command}", COMMANDS[command][0], preset_source(name, "paper")[0], usage)
    parser.set_defaults(flatten(as_dict(base)))
    _add_run_options(parser, command, name, sorted(DOMAINS))
    namespace = parse_command_line(parser, cls, args)
    config = checked(cls, namespace, "command line")
    if known.resume and config != base:
        changed = sorted(k for k, v in flatten(as_dict(config)).items() if flatten(as_dict(base)).get(k) != v)
        raise SealError(f"--resume continues a run with its saved config; leave out --{changed[0]}")
    if namespace.get("documents"):
        config.adapt.documents = namespace.documents
    if namespace.get("generation_backend"):  # read by make_generator, also in executor workers
        os.environ["SEAL_GENERATION_BACKEND"] = namespace.generation_backend
    out = Path(known.resume or namespace.out or RunDir.new_path("runs", command))
    return _run(command, domain_type(config), out, not namespace.no_progress, namespace)


def _run(command: str, domain: Any, out: Path, progress: bool, namespace: Any) -> int:
    from seal_lm.report.terminal import print_adapt, print_eval_table, print_forgetting, print_rounds
    from seal_lm.runs import run_config
    from seal_lm.tracking import make_tracker

    _require(domain, {"continual": "sequence_contexts", "adapt": "load_documents"}.get(command, "evaluate"), command)
    tracker = make_tracker(namespace.report_to, out, run_config(command, domain.name, domain.config))
    try:
        if command in ("eval", "demo"):
            from seal_lm.recipes.eval import run_eval

            print_eval_table(run_eval(domain, out, progress, command, tracker=tracker))
        elif command == "train":
            from seal_lm.executors import ExecutorSettings
            from seal_lm.recipes.rest_em import run_rest_em

            summary = run_rest_em(domain, out, progress, ExecutorSettings(**namespace.executor.as_dict()),
                                  tracker=tracker)
            print_eval_table(summary)
            print_rounds(summary)
        elif command == "continual":
            from seal_lm.recipes.continual import run_continual

            print_forgetting(run_continual(domain, out, progress, tracker=tracker))
        else:
            from seal_lm.recipes.adapt import run_adapt

            print_adapt(run_adapt(domain, out, progress, tracker=tracker))
    finally:
        tracker.close()
    print(f"run directory: {out}  (seal report {out} draws the plots)")
    return 0


def _require(domain: Any, method: str, command: str) -> None:
    if not hasattr(domain, method):
        raise SealError(f"the {domain.name} domain does not support seal {command}")


def _add_run_options(parser: Any, command: str, domain: str, domains: list[str]) -> None:
    """Options that choose a config or a run directory, and how to run it; none of them decides results."""
    group = parser.add_argument_group("choosing the settings and the run directory")
    group.add_argument("--domain", default=domain, choices=domains, help="knowledge: learn passages and answer "
                       "questions closed-book; arc: few-shot grid tasks with test-time training")
    group.add_argument("--preset", help=f"start from a shipped config (this domain's: {', '.join(preset_names(domain))})")
    group.add_argument("--config", help="start from a YAML or JSON config file (a run's config.json works too)")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    group.add_argument("--out", help=f"run directory (default runs/<time>-{command}); an existing one with the "
                                     "same config is resumed")
    group.add_argument("--no_progress", "--no-progress", action="store_true", help="hide progress bars")
    group.add_argument("-v", "--verbose", action="store_true", help="log details")
    group.add_argument("--report_to", "--report-to", default="none", choices=REPORT_TO,
                       help="experiment tracking, as TRL's report_to: losses, rewards, accuracies with intervals and "
                            "timings, logged under the run directory (each backend an extra: seal-lm[tensorboard] ...)")
    if command in ("eval", "demo", "train"):
        from seal_lm.generation import BACKENDS

        group.add_argument("--generation_backend", choices=BACKENDS, help="auto (default, or SEAL_GENERATION_BACKEND): "
                           "vLLM when the model is on a CUDA GPU and seal-lm[vllm] is installed, else transformers")
    if command == "train":
        from seal_lm.executors import ExecutorSettings

        parser.add_class_arguments(ExecutorSettings, "executor")
    if command == "adapt":
        parser.add_argument("documents", nargs="?", help="a file, or a folder of .txt, .md and .json documents "
                                                         "(sets adapt.documents)")


def _serve(args: list[str]) -> int:
    from seal_lm.models import load_model

    parser = config_parser(ServeConfig, "seal serve", ServeConfig.__doc__, usage="seal serve [--KEY VALUE ...]")
    parser.set_defaults({"api_key": os.environ.get("SEAL_API_KEY")})
    config = checked(ServeConfig, parse_command_line(parser, ServeConfig, args), "command line")
    try:
        from seal_lm.serve import serve
    except ImportError as exc:
        raise SealError(f"seal serve needs the serve extra: pip install 'seal-lm[serve]' ({exc.name} is missing)") from None
    adapters: dict[str, str] = {}
    for item in config.adapters:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise SealError(f"adapters: {item!r}: expected NAME=PATH")
        if name in adapters:
            raise SealError(f"adapters: {name} is given twice")
        adapters[name] = path
    api_key = config.key()
    if api_key is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"seal serve: warning: listening on {config.host} without an API key", file=sys.stderr)
    loaded = load_model(config.model)
    serve(loaded, loaded.name, host=config.host, port=config.port, adapters=adapters, api_key=api_key,
          max_batch=config.max_batch, adapter_root=config.adapter_root)
    return 0


def _report(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seal report", description="Writes RUN_DIR/report/index.html "
                                     "(self-contained, opens offline) and the plots as PNG files.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by seal eval, demo, train, "
                                                           "continual or adapt")
    from seal_lm.report import write_report

    print(f"report: {write_report(parser.parse_args(args).run_dir)}")
    return 0


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # peft internals
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # hub retries end in our one-line error


if __name__ == "__main__":
    sys.exit(main())
