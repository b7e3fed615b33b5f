import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from seal_lm.errors import SealError
from seal_lm.records import Record, record_types
from seal_lm.runs import RESULTS_FILE, RUNTIME_FILE, RunDir


@dataclass
class Note(Record):
    kind: ClassVar[str] = "note"
    k: int


TYPES = record_types(Note)


def test_records_are_appended_and_reread_as_their_types(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1}, TYPES)
    run.append(Note(1))
    run.append(Note(2))
    assert RunDir(tmp_path / "r", {"a": 1}, TYPES).records == [Note(1), Note(2)]
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"a": 1}
    assert (tmp_path / "r" / RESULTS_FILE).read_text() == '{"kind": "note", "k": 1}\n{"kind": "note", "k": 2}\n'


def test_a_line_cut_by_a_kill_is_dropped_and_the_file_repaired(tmp_path):
    run = RunDir(tmp_path, {}, TYPES)
    run.append(Note(1))
    with (tmp_path / RESULTS_FILE).open("a") as f:
        f.write('{"kind": "note", "k": 2, "trunc')
    reopened = RunDir(tmp_path, {}, TYPES)
    assert reopened.records == [Note(1)]
    reopened.append(Note(3))
    assert [json.loads(l)["k"] for l in (tmp_path / RESULTS_FILE).read_text().splitlines()] == [1, 3]


@pytest.mark.parametrize("line, message", [
    ('{"kind": "other", "k": 1}\n', "line 1: unknown record kind 'other'"),
    ('{"kind": "note", "k": 1, "x": 2}\n', "line 1: a 'note' record with unknown field"),
    ('{"kind": "note"}\n', "line 1: a 'note' record with missing field"),
    ('not json\n{"kind": "note", "k": 1}\n', "line 1 is not a JSON object"),
])
def test_a_bad_record_is_an_error_naming_the_file_and_line(tmp_path, line, message):
    (tmp_path / RESULTS_FILE).write_text(line)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SealError, match=message):
        RunDir(tmp_path, {}, TYPES)


def test_a_different_config_is_refused(tmp_path):
    RunDir(tmp_path, {"seed": 0, "limit": 2}, TYPES)
    with pytest.raises(SealError, match="different config .*fields: seed"):
        RunDir(tmp_path, {"seed": 1, "limit": 2}, TYPES)


def test_runtime_is_recorded_per_process_and_a_change_warns_in_one_line(tmp_path, caplog):
    run = RunDir(tmp_path, {}, TYPES)
    first = {"generation_backend": "hf", "torch": "2.13.0", "device": "cpu"}
    run.note_runtime(first)
    caplog.clear()
    run.note_runtime(first)
    assert not caplog.records
    run.note_runtime({**first, "generation_backend": "vllm"})
    message, = [r.getMessage() for r in caplog.records]
    assert "generation_backend vllm (was hf)" in message and "\n" not in message
    assert len(json.loads((tmp_path / RUNTIME_FILE).read_text())) == 3


def test_a_resumed_run_resolves_dtype_auto_as_its_first_process_did(tmp_path):
    from seal_lm.models import ModelSettings

    run = RunDir(tmp_path, {}, TYPES)
    assert run.pinned_model(ModelSettings()).dtype == "auto"  # a new run: auto is this machine's choice
    run.note_runtime({"dtype": "float32"})
    run.note_runtime({"dtype": "bfloat16"})  # a later process of a run from before the pin
    assert run.pinned_model(ModelSettings()).dtype == "float32"
    assert run.pinned_model(ModelSettings(dtype="bfloat16")).dtype == "bfloat16"  # an explicit dtype stays


def test_one_writer_per_run_directory_and_a_killed_holder_never_blocks(tmp_path):
    """A real second process holds the lock; this one is refused with its pid; once it is SIGKILLed the lock is
    free again (the OS drops it), although the lock file with its pid stays."""
    import signal
    import subprocess
    import sys
    import time

    from seal_lm.runs import LOCK_FILE, locked

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom seal_lm.runs import locked\n"
                               f"with locked({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SealError, match=rf"another process \(pid {holder.pid}\) is running this run directory"):
            with locked(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:
        try:
            with locked(tmp_path):
                break
        except SealError:
            assert time.time() < deadline
            time.sleep(0.1)
    assert (tmp_path / LOCK_FILE).exists()


def test_a_setting_added_since_a_run_started_resumes_at_its_default_and_not_otherwise(tmp_path):
    """A run started before seal-lm had `update` resumes when the setting is at its default; config.json is
    completed; a non-default value is refused as any other change."""
    RunDir(tmp_path, {"seed": 0, "inner_loop": {"epochs": 10}}, TYPES)
    defaults = {"seed": 0, "update": "sft", "inner_loop": {"epochs": 10, "top_k": 64}}
    RunDir(tmp_path, {"seed": 0, "update": "sft", "inner_loop": {"epochs": 10, "top_k": 64}}, TYPES, defaults=defaults)
    assert json.loads((tmp_path / "config.json").read_text())["inner_loop"]["top_k"] == 64
    with pytest.raises(SealError, match="different config .*update"):
        RunDir(tmp_path, {"seed": 0, "update": "distill", "inner_loop": {"epochs": 10, "top_k": 64}}, TYPES,
               defaults=defaults)
    RunDir(tmp_path / "other", {"seed": 0}, TYPES)
    with pytest.raises(SealError, match="different config .*update"):  # without defaults, nothing is assumed
        RunDir(tmp_path / "other", {"seed": 0, "update": "sft"}, TYPES)
