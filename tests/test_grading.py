import pytest

from seal_lm.grading import contains, exact_match, grade_all, normalize_answer, token_f1
from seal_lm.stats import mean_with_interval


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The Quick, brown FOX!  ") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"


def test_exact_match_uses_any_gold_answer():
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "tower"]) == 0.0
    assert exact_match("Tower", ["Eiffel Tower", "tower"]) == 1.0


def test_token_f1_partial_credit():
    assert token_f1("built in 1902", ["1902"]) == pytest.approx(0.5)
    assert token_f1("nothing here", ["1902"]) == 0.0
    assert token_f1("copper mirrors", ["copper mirrors", "copper"]) == 1.0


def test_contains_respects_word_boundaries():
    assert contains("It was built in 1902 by Vesk.", ["1902"]) == 1.0
    assert contains("It was built in 19021.", ["1902"]) == 0.0
    assert contains("The cat sat.", ["at"]) == 0.0
    assert contains("anything", [""]) == 0.0


def test_grade_all_reports_every_grader():
    scores = grade_all("Paris", ["Paris"])
    assert scores == {"exact": 1.0, "f1": 1.0, "contains": 1.0}


def test_wilson_interval_for_binary_outcomes():
    est = mean_with_interval([1.0] * 7 + [0.0] * 3)
    assert est.mean == pytest.approx(0.7) and est.n == 10
    assert est.low == pytest.approx(0.3968, abs=1e-3) and est.high == pytest.approx(0.8922, abs=1e-3)
    all_wrong = mean_with_interval([0.0] * 9)
    assert all_wrong.low == 0.0 and 0.25 < all_wrong.high < 0.35


def test_interval_for_fractional_scores_and_empty():
    est = mean_with_interval([0.5, 0.25, 0.75, 0.5])
    assert est.low < 0.5 < est.high
    assert mean_with_interval([]).n == 0
    single = mean_with_interval([0.9])  # one F1 value: no spread to estimate, so no false precision
    assert (single.mean, single.low, single.high, single.n) == (0.9, 0.0, 1.0, 1)


def test_paired_difference_resamples_contexts_and_flips_signs():
    from seal_lm.stats import paired_difference

    same = paired_difference([[0.0, 0.0], [0.0]])
    assert same.mean == 0 and same.low == 0 == same.high and same.p == 1.0 and not same.significant
    better = paired_difference([[1.0, 1.0, 0.0]] * 12, resamples=2000)  # every context gains 2 of 3 items
    assert better.mean == pytest.approx(2 / 3) and better.low == better.high == pytest.approx(2 / 3)
    assert better.p < 0.001 and better.significant and (better.contexts, better.items) == (12, 36)
    mixed = paired_difference([[1.0], [-1.0], [1.0, 1.0], [0.0], [-1.0]], resamples=2000)
    assert mixed.low < 0 < mixed.high and mixed.p > 0.3 and not mixed.significant
    assert paired_difference([[1.0], [-1.0]], seed=3) == paired_difference([[1.0], [-1.0]], seed=3)
    assert "points [" in str(mixed)
