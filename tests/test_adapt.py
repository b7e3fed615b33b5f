import json

import pytest
from peft import PeftModel

from seal_lm.cli import main
from seal_lm.errors import SealError
from seal_lm.models import ModelSettings, load_model
from seal_lm.domains.knowledge.data import load_documents
from seal_lm.domains.knowledge.domain import parse_self_check

FAST = ["--inner_loop.epochs", "1", "--inner_loop.rank", "4", "--inner_loop.alpha", "8",
        "--self_edit_sampling.max_new_tokens", "16", "--self_check.questions", "2", "--no-progress"]


@pytest.fixture()
def documents(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-observatory.md").write_text("# The Marrowgate observatory\nOrlan Vesk built it of copper in 1874.\n")
    (folder / "b-loom.txt").write_text("The Quillfen loom is woven in green wool by the river.\n")
    (folder / "c-more.json").write_text(json.dumps([{"title": "Tessaly", "text": "Tessaly has three moons."},
                                                    "Brannock Ferry runs twice a day."]))
    (folder / "notes.bin").write_bytes(b"\x00ignored")
    return folder


def test_documents_come_from_text_markdown_and_json_files_in_name_order(documents):
    docs = load_documents(documents)
    assert [d.title for d in docs] == ["The Marrowgate observatory", "b-loom", "Tessaly", "c-more 2"]
    assert docs[0].context.startswith("# The Marrowgate") and not docs[0].questions


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "  \n", "empty document"),
    ("bad.json", "[{\"title\": \"x\"}]", "field 'text' must be a non-empty string"),
    ("broken.json", "[1,", "not valid JSON"),
])
def test_bad_documents_name_the_file_and_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SealError, match=message) as err:
        load_documents(tmp_path / name)
    assert name in str(err.value)
    with pytest.raises(SealError, match="documents not found"):
        load_documents(tmp_path / "nowhere")


def test_self_check_pairs_are_parsed_from_the_models_own_text():
    text = "Question: Who built it?\nAnswer: Orlan Vesk\n\nQuestion 2: When?\nAnswer 2: In 1874.\nQuestion: Who built it?\nAnswer: again"
    pairs = parse_self_check(text, 5)
    assert [(q.question, q.answers) for q in pairs] == [("Who built it?", ("Orlan Vesk",)), ("When?", ("In 1874.",))]
    assert len(parse_self_check(text, 1)) == 1 and parse_self_check("no pairs here", 3) == []


def test_adapt_saves_one_peft_adapter_and_prints_what_was_learned(tiny_model_dir, documents, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["adapt", str(documents), "--model.name", str(tiny_model_dir), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Self-check, closed-book" in printed and "Tessaly" in printed and "saved:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["documents"]) == 4 and summary["refused"] == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 * 4 and config["lora_alpha"] == 8 * 4  # the sum of 4 updates, scale unchanged
    base = load_model(ModelSettings(name=str(tiny_model_dir), device="cpu", dtype="float32"))
    PeftModel.from_pretrained(base.model, str(out / "adapter")).unload()
    steps = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "What was learned" in page and "Self-check questions and answers" in page
    before = next(json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "self-check-before")
    assert all(q["question"] and "prediction" in q for qs in before["answers"] for q in qs)
    assert main(["adapt", "--resume", str(out), "--no-progress"]) == 0  # finished: nothing redone
    assert sum(json.loads(line)["kind"] == "step" for line in (out / "results.jsonl").read_text().splitlines()) == 4


def test_adapt_can_save_a_merged_model_that_loads_like_any_other(tiny_model_dir, documents, tmp_path):
    out = tmp_path / "merged"
    assert main(["adapt", str(documents / "b-loom.txt"), "--model.name", str(tiny_model_dir), "--out", str(out),
                 "--adapt.save", "merged", *FAST]) == 0
    merged = load_model(ModelSettings(name=str(out / "model"), device="cpu", dtype="float32"))
    original = load_model(ModelSettings(name=str(tiny_model_dir), device="cpu", dtype="float32"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not merged.model.state_dict()[name].equal(original.model.state_dict()[name])
