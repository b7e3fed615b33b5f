import json

import pytest

from seal_lm.domains.knowledge.data import load_demo_corpus, load_passages
from seal_lm.errors import SealError


def test_demo_corpus_is_large_enough_and_split():
    train, validation = load_demo_corpus("train"), load_demo_corpus("validation")
    assert len(train) + len(validation) >= 40 and len(validation) >= 8
    assert not {p.title for p in train} & {p.title for p in validation}
    for p in train + validation:
        assert len(p.questions) >= 4
        for q in p.questions:
            assert len(q.answers[0].split()) <= 4 and q.answers[0] in p.context


def test_seal_grouping_and_squad_formats_give_the_same_passages(tmp_path):
    grouped = [{"title": "Orlan Vesk", "context": "Orlan Vesk was born in 1874.",
                "questions": [{"question": "When was Orlan Vesk born?", "answer": "1874"}]}]
    squad = {"version": "1.1", "data": [{"title": "Orlan_Vesk", "paragraphs": [{
        "context": "Orlan Vesk was born in 1874.",
        "qas": [{"id": "x", "question": "When was Orlan Vesk born?",
                 "answers": [{"text": "1874", "answer_start": 23}, {"text": "1874", "answer_start": 23}]}]}]}]}
    (tmp_path / "g.json").write_text(json.dumps(grouped))
    (tmp_path / "s.json").write_text(json.dumps(squad))
    a, b = load_passages(tmp_path / "g.json"), load_passages(tmp_path / "s.json")
    assert a == b and a[0].questions[0].answers == ("1874",)
    assert a[0].id == b[0].id


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"foo": 1}', "expected a list of passages"),
    ('[{"title": "T", "questions": []}]', "passage 0: missing field 'context'"),
    ('[{"title": "T", "context": "C", "questions": [{"question": "Q"}]}]', "passage 0, question 0: field 'answer'"),
    ('[{"title": "", "context": "C", "questions": []}]', "field 'title' must be a non-empty str"),
    ('{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"question": "Q", "answers": []}]}]}]}',
     "article 0, paragraph 0, question 0: field 'answers' is empty"),
])
def test_malformed_files_give_one_line_errors_naming_file_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SealError) as info:
        load_passages(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_file(tmp_path):
    with pytest.raises(SealError, match="data file not found"):
        load_passages(tmp_path / "nope.json")


# ---- tables read with `datasets`: .jsonl, .parquet, .csv and save_to_disk folders

def _rows():
    return [{"title": "Marrowgate", "context": "Orlan Vesk built it in 1902.", "question": "Who built it?",
             "answers": {"text": ["Orlan Vesk", "Vesk"], "answer_start": [0, 6]}},
            {"title": "Marrowgate", "context": "Orlan Vesk built it in 1902.", "question": "When?",
             "answers": {"text": ["1902"], "answer_start": [23]}},
            {"title": "Loom_town", "context": "The loom has nine shuttles.", "question": "How many shuttles?",
             "answers": {"text": ["nine"], "answer_start": [12]}}]


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv", "save_to_disk"])
def test_tables_in_every_format_give_the_same_passages(tmp_path, kind):
    import datasets

    rows = _rows()
    if kind == "csv":  # a csv cell is a string: one answer per row
        rows = [{**r, "answers": r["answers"]["text"][0]} for r in rows]
    table = datasets.Dataset.from_list(rows)
    path = tmp_path / ("data" if kind == "save_to_disk" else f"data.{kind}")
    {"jsonl": lambda: table.to_json(str(path)), "parquet": lambda: table.to_parquet(str(path)),
     "csv": lambda: table.to_csv(str(path), index=False), "save_to_disk": lambda: table.save_to_disk(str(path))}[kind]()
    passages = load_passages(path)
    assert [p.title for p in passages] == ["Marrowgate", "Loom town"]
    assert [q.question for q in passages[0].questions] == ["Who built it?", "When?"]
    assert passages[0].questions[0].answers == (("Orlan Vesk", "Vesk") if kind != "csv" else ("Orlan Vesk",))
    assert passages[1].questions[0].answers == ("nine",)


def test_columns_are_mapped_and_a_missing_one_is_named(tmp_path):
    import datasets

    from seal_lm.domains.knowledge.data import DataColumns

    path = tmp_path / "qa.parquet"
    datasets.Dataset.from_list([{"doc": "A", "text": "B is C.", "q": "What is B?", "a": "C"}]).to_parquet(str(path))
    passages = load_passages(path, DataColumns(title="doc", context="text", question="q", answer="a"))
    assert passages[0].title == "A" and passages[0].questions[0].answers == ("C",)
    with pytest.raises(SealError, match=r"qa.parquet: no column title \(data_columns.title\) \(columns: doc, text, q, a\)"):
        load_passages(path)
