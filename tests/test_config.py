"""Configs as files: shipped presets, a user's file, dotted overrides, and one-line errors naming the key."""

from __future__ import annotations

import json

import pytest

from seal_lm.cli import main
from seal_lm.config import parse_values, preset_names, preset_source
from seal_lm.domains import DOMAINS, domain_class
from seal_lm.domains.knowledge import KnowledgeConfig
from seal_lm.errors import SealError


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_shipped_preset_is_a_valid_config(domain):
    cls = domain_class(domain).config_class
    assert {"paper", "cpu-demo"} <= set(preset_names(domain))
    for name in preset_names(domain):
        config = parse_values(cls, *preset_source(domain, name))
        assert isinstance(config, cls)


def test_a_preset_only_changes_what_it_names():
    demo = parse_values(KnowledgeConfig, *preset_source("knowledge", "cpu-demo"))
    assert demo.limit == 6 and demo.self_edit_sampling.max_new_tokens == 160 and demo.rest_em.samples_per_context == 3
    assert demo.rest_em.policy_update == KnowledgeConfig().rest_em.policy_update  # untouched: the domain's default
    assert demo.inner_loop == KnowledgeConfig().inner_loop


@pytest.mark.parametrize("text, message", [
    ("inner_loop:\n  rnk: 8\n", "unknown key inner_loop.rnk"),
    ("limit: x\n", "limit: expected an integer or null, got 'x'"),
    ("inner_loop:\n  epochs: 0\n", "inner_loop.epochs: must be at least 1 (got 0)"),
    ("rest_em:\n  keep: worst\n", "rest_em.keep: unknown value 'worst' (choose one of: best, best-over-baseline, positive, top-k)"),
    ("format: poem\n", "format: unknown value 'poem'"),
    ("[1, 2]\n", "expected a mapping of settings"),
    ("limit: [\n", "not valid YAML or JSON"),
])
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, text, message):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    assert main(["eval", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "run").exists()  # nothing started


@pytest.mark.parametrize("args, message", [
    (["--inner_loop.epochs", "0"], "command line: inner_loop.epochs: must be at least 1"),
    (["--inner_loop.rank", "abc"], "inner_loop.rank: expected an integer, got 'abc'"),
    (["--preset", "fast"], "unknown preset 'fast' for the knowledge domain (choose one of: cpu-demo, cpu-paper, demo, paper)"),
    (["--domain", "poetry"], "unknown domain 'poetry'"),
    (["--preset", "paper", "--config", "x.yaml"], "choose one of --preset, --config and --resume"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["eval", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_help_gives_every_field_its_default_and_the_papers_value(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--preset", "cpu-demo", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--inner_loop.learning_rate" in text and "--rest_em.policy_update.rank" in text
    assert "K: self-edits sampled per training context [paper: 5] (type: int, default: 3)" in text


def test_a_runs_config_json_is_a_config_file_and_resume_takes_no_other_settings(tiny_model_dir, passages_file,
                                                                                 tmp_path, capsys):
    first = tmp_path / "first"
    fast = ["--model.name", str(tiny_model_dir), "--data", str(passages_file), "--limit", "1", "--conditions",
            "[base]", "--no-progress"]
    assert main(["eval", *fast, "--out", str(first)]) == 0
    assert main(["eval", "--config", str(first / "config.json"), "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads((first / "config.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--resume", str(first), "--limit", "2"]) == 2
    assert "--resume continues a run with its saved config; leave out --limit" in capsys.readouterr().err
    assert main(["train", "--resume", str(first)]) == 2  # an eval run is not a train run
    assert "different config (fields: command)" in capsys.readouterr().err


def test_parse_values_names_its_source():
    with pytest.raises(SealError, match="^somewhere: unknown key bogus$"):
        parse_values(KnowledgeConfig, {"bogus": 1}, "somewhere")
