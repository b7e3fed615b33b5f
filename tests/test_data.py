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
