import dataclasses
import pytest

from seal_lm.domains.knowledge.data import Passage, Question
from seal_lm.errors import SealError
from seal_lm.domains.knowledge.formats import FORMATS, get_format, parse_completion, training_sequences

PASSAGE = Passage("Orlan Vesk", "Orlan Vesk was an astronomer born in Marrowgate in 1874.",
                  (Question("Where was Orlan Vesk born?", ("Marrowgate",)),))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_has_chat_and_base_prompts_with_the_passage(name):
    prompt = get_format(name).prompt(PASSAGE)
    (role, user), = prompt.messages
    assert role == "user" and PASSAGE.context in user and PASSAGE.title in user
    assert PASSAGE.context in prompt.text and prompt.text.rstrip().endswith(":")


def test_unknown_format():
    with pytest.raises(SealError, match="unknown self-edit format 'poem'"):
        get_format("poem")


def test_implications_split_into_items_by_segments_then_lines():
    completion = ("1. Orlan Vesk studied the stars.\n- He was born in the nineteenth century.\n\n"
                  "---\nMarrowgate is his home town.\nok\n\nMarrowgate is his home town.")
    parsed = parse_completion(completion, get_format("implications"))
    assert parsed.status == "ok"
    assert parsed.items == ("Orlan Vesk studied the stars.", "He was born in the nineteenth century.",
                            "Marrowgate is his home town.")  # marker stripped, fragment and duplicate dropped
    sequences = training_sequences(PASSAGE, [parsed])
    assert sequences[0] == "Orlan Vesk\n" + PASSAGE.context
    assert sequences[1:] == [f"Orlan Vesk\n{item}" for item in parsed.items]


def test_self_qa_keeps_question_and_answer_together():
    completion = "Question: Where was Vesk born?\nAnswer: In Marrowgate.\nQuestion: What was Vesk?\nAnswer: An astronomer."
    parsed = parse_completion(completion, get_format("self-qa"))
    assert parsed.items == ("Question: Where was Vesk born?\nAnswer: In Marrowgate.",
                            "Question: What was Vesk?\nAnswer: An astronomer.")


@pytest.mark.parametrize("completion, status", [("", "empty"), ("   \n\n", "empty"), ("!!! ??\n--\n##", "unusable")])
def test_empty_and_garbage_completions_leave_only_the_passage(completion, status):
    parsed = parse_completion(completion, get_format("implications"))
    assert parsed.status == status and parsed.items == ()
    assert training_sequences(PASSAGE, [parsed]) == ["Orlan Vesk\n" + PASSAGE.context]


def test_open_book_questions_are_parsed_and_learned_as_closed_book_pairs():
    from seal_lm.domains.knowledge.evaluation import QuestionSettings
    from seal_lm.inner_loop import Example

    fmt = get_format("open-book-qa")
    parsed = parse_completion("1. Who built the observatory?\n2. Who built the observatory?\nA statement.\nWhy? ", fmt)
    assert parsed.items == ("Who built the observatory?",) and parsed.status == "ok"
    assert parse_completion("No questions here.", fmt).status == "unusable"
    paired = dataclasses.replace(parsed, pairs=(("Who built the observatory?", "Orlan Vesk"),))
    sequences = training_sequences(PASSAGE, [paired], ask=QuestionSettings().asker(PASSAGE))
    assert sequences[0] == f"{PASSAGE.title}\n{PASSAGE.context}"
    example, = sequences[1:]
    assert isinstance(example, Example) and example.completion == "Orlan Vesk"
    assert example.prompt.messages[0][1].endswith(f"Question: Topic: {PASSAGE.title}\nWho built the observatory?")
