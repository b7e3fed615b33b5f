import json

import pytest

from seal_lm.errors import SealError
from seal_lm.runs import RESULTS_FILE, RunDir


def test_records_are_appended_and_reread(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1})
    run.append({"k": 1})
    run.append({"k": 2})
    assert [r["k"] for r in RunDir(tmp_path / "r", {"a": 1}).records] == [1, 2]
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"a": 1}


def test_a_line_cut_by_a_kill_is_dropped_and_the_file_repaired(tmp_path):
    run = RunDir(tmp_path, {})
    run.append({"k": 1})
    with (tmp_path / RESULTS_FILE).open("a") as f:
        f.write('{"k": 2, "trunc')
    reopened = RunDir(tmp_path, {})
    assert reopened.records == [{"k": 1}]
    reopened.append({"k": 3})
    assert [json.loads(l)["k"] for l in (tmp_path / RESULTS_FILE).read_text().splitlines()] == [1, 3]


def test_a_different_config_is_refused(tmp_path):
    RunDir(tmp_path, {"seed": 0, "limit": 2})
    with pytest.raises(SealError, match="different config .*fields: seed"):
        RunDir(tmp_path, {"seed": 1, "limit": 2})
