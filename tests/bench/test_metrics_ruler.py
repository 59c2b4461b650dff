import pytest

from longreach.bench import effective_length, ruler_summary, task_score
from longreach.bench.metrics.ruler import postprocess, rank_weights, string_match_all, string_match_part


def test_postprocess_like_ruler():
    assert postprocess("  7 and\x00 8\t9 \n") == "7 and\n 8\n9"
    assert postprocess("\n\n") == ""


def test_string_match_all_counts_each_reference():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert string_match_all("APPLE-Tree", ["apple-tree"]) == 1.0   # case-insensitive substring
    assert string_match_all("", ["1"]) == 0.0


def test_string_match_part_needs_any_reference():
    assert string_match_part("It is Paris, France.", ["London", "paris"]) == 1.0
    assert string_match_part("It is Rome.", ["London", "Paris"]) == 0.0


def test_task_score_rounds_like_ruler():
    assert task_score([1.0, 0.0, 0.5]) == 50.0
    assert task_score([1.0, 0.0, 0.0]) == 33.33
    assert task_score([2 / 3, 1.0]) == 83.33


def test_summary_reproduces_the_readme_row():
    # Llama3.1-8B-Instruct, README: 95.5/93.8/91.6/87.4/84.7/77.0 | Avg 88.3, effective length 32K.
    lengths = [4096, 8192, 16384, 32768, 65536, 131072]
    scores = dict(zip(lengths, [95.5, 93.8, 91.6, 87.4, 84.7, 77.0], strict=True))
    summary = ruler_summary({"all": scores})
    assert summary.average == 88.33
    assert summary.effective_length == 32768
    assert summary.weighted_increasing == pytest.approx(1793 / 21, abs=0.01)   # derived by hand
    assert summary.weighted_decreasing == pytest.approx(1917 / 21, abs=0.01)


def test_summary_means_tasks_per_length_and_lists_missing():
    scores = {"a": {4096: 100.0, 8192: 80.0}, "b": {4096: 90.0, 8192: 70.0}, "qa_1": {4096: 50.0}}
    summary = ruler_summary(scores, expected_tasks=["a", "b", "qa_1", "qa_2"])
    assert summary.average_by_length == {4096: 80.0, 8192: 75.0}
    assert summary.missing_by_length == {4096: ["qa_2"], 8192: ["qa_1", "qa_2"]}
    assert summary.effective_length is None
    assert effective_length({4096: 90.0, 8192: 85.6}) == 4096   # strictly above the threshold
    assert effective_length({4096: 90.0, 8192: 80.0}, threshold=70) == 8192


def test_rank_weights_are_the_maintainers():
    weights = rank_weights([4096, 8192, 16384, 32768, 65536, 131072])
    assert [round(w, 3) for w in weights.values()] == [0.048, 0.095, 0.143, 0.19, 0.238, 0.286]
    decreasing = rank_weights([4096, 8192, 16384, 32768, 65536, 131072], increasing=False)
    assert round(decreasing[4096], 3) == 0.286
