import pytest

from longreach.bench import dataset_score, longbench_e_buckets, longbench_summary, score_answers
from longreach.bench.metrics import longbench as lb
from longreach.bench.metrics.rouge import rouge1_f, rouge_l_f
from longreach.bench.tasks.longbench_spec import CATEGORIES


def test_normalize_answer():
    assert lb.normalize_answer("The  Cat's hat, a-b!") == "cats hat ab"
    assert lb.normalize_answer("An apple. THE END") == "apple end"
    assert lb.normalize_answer("theater") == "theater"   # articles only as whole words


def test_qa_f1_by_hand():
    assert lb.qa_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)   # p=1, r=2/3
    assert lb.qa_f1("paris paris", "Paris") == pytest.approx(2 / 3)          # multiset overlap
    assert lb.qa_f1("The", "a") == 0.0                                       # both normalize to nothing


def test_rouge_l_counts_distinct_words_like_the_rouge_package():
    # LCS "the cat on the mat" has 5 words but 4 distinct; both texts have 5 distinct words.
    assert rouge_l_f("the cat sat on the mat", "the cat was on the mat") == pytest.approx(0.8, abs=1e-7)
    assert rouge_l_f("", "anything") == 0.0 and rouge_l_f("...", "anything") == 0.0
    assert rouge_l_f("a b. c d", "a c. b d") == pytest.approx(1.0, abs=1e-7)   # union LCS over sentences


def test_rouge_l_agrees_with_the_rouge_package():
    rouge = pytest.importorskip("rouge")
    import random
    rng = random.Random(0)
    vocab = "a b c the of . x y".split()
    for _ in range(300):
        hyp = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 20)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 20)))
        try:
            expected = rouge.Rouge().get_scores([hyp], [ref], avg=True)["rouge-l"]["f"]
        except Exception:  # noqa: BLE001 - LongBench scores any failure of the package as 0
            expected = 0.0
        assert rouge_l_f(hyp, ref) == pytest.approx(expected, abs=1e-12)


def test_rouge1_for_the_niah_metric_is_stemmed_as_franxyao_scores_it():
    assert rouge1_f("a b c d", "a b") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # eating -> eat, sandwiches -> sandwich: 2 of 5 predicted words, 2 of 3 reference words
    assert rouge1_f("Eating sandwiches in the park!", "eat a sandwich") == pytest.approx(0.5)
    assert rouge1_f("", "eat a sandwich") == 0.0


def test_classification_keeps_the_original_quirk():
    classes = ["Abbreviation", "Description", "Entity"]
    assert lb.classification("Type: Entity or Description", "Entity", classes) == 0.5
    assert lb.classification("Human being", "Human being", ["Human", "Human being", "Animal"]) == 1.0
    # "a" is dropped as a substring of the gold "abc"; the original's loop then skips "ab".
    assert lb.classification("abc", "abc", ["a", "ab", "abc"]) == 0.5
    assert lb.classification("nothing", "Entity", classes) == 0.0


def test_retrieval_count_and_code_sim():
    assert lb.retrieval("Paragraph 3, or paragraph 3, not 5", "Paragraph 3") == pytest.approx(2 / 3)
    assert lb.retrieval("none", "Paragraph 3") == 0.0
    assert lb.retrieval_zh("段落2", "段落2") == 1.0
    assert lb.count("There are 7 unique paragraphs", "7") == 1.0
    assert lb.count("7 or 8", "7") == 0.5
    assert lb.code_sim("```python\n# a comment\nx = foo(1)\nmore\n", "x = foo(2)") == 0.9
    assert lb.code_sim("", "") == 1.0 and lb.code_sim("# only comments", "x") == 0.0
    assert lb.fuzz_ratio("abcd", "abce") == 75


def test_scoring_rules_of_eval_py():
    meta = {"metric": "qa_f1", "first_line": True}
    assert score_answers("Paris\nLondon is big", ["London"], meta) == 0.0       # first line only
    assert score_answers("Paris\nLondon is big", ["London"], {"metric": "qa_f1"}) > 0
    assert score_answers("Paris", ["the city of Paris", "Paris"], {"metric": "qa_f1"}) == 1.0   # max
    trec = {"metric": "classification", "all_classes": ["Entity", "Location"], "first_line": True}
    assert score_answers("Location\nEntity", ["Location"], trec) == 1.0
    assert dataset_score([1.0, 0.0, 0.5]) == 50.0 and dataset_score([1 / 3]) == 33.33


def test_category_average_reproduces_the_llama2_row():
    row = {"Single-Doc QA": 24.9, "Multi-Doc QA": 22.6, "Summarization": 24.7, "Few-shot Learning": 60.0,
           "Code Completion": 48.1, "Synthetic Tasks": 5.9}
    scores = {dataset: row[category]
              for category, datasets in CATEGORIES["en"].items() for dataset in datasets}
    summary = longbench_summary(scores)
    assert summary.categories == row and summary.missing == []
    assert round(summary.average, 1) == 31.0
    partial = longbench_summary({"hotpotqa": 40.0, "2wikimqa": 20.0})
    assert partial.categories == {"Multi-Doc QA": 30.0} and "musique" in partial.missing


def test_longbench_e_buckets():
    assert longbench_e_buckets([(100, 1.0), (5000, 0.0), (5000, 1.0), (9000, 0.25)]) == {
        "0-4k": 100.0, "4-8k": 50.0, "8k+": 25.0}


def test_qa_f1_zh_by_hand():
    pytest.importorskip("jieba")
    # jieba: 北京/是/中国/的/首都 and 中国/的/首都/是/北京: the same words, in another order
    assert lb.qa_f1_zh("北京是中国的首都", "中国的首都是北京") == pytest.approx(1.0)
    # 首都/是/北京/。 -> the full stop normalizes to nothing and is dropped: p = 3/3, r = 3/5
    assert lb.qa_f1_zh("首都是北京。", "北京是中国的首都") == pytest.approx(0.75)
    assert lb.qa_f1_zh("BEIJING", "beijing") == 1.0 and lb.qa_f1_zh("上海", "北京") == 0.0
    meta = {"metric": "qa_f1_zh"}
    assert score_answers("首都是北京。", ["上海", "北京是中国的首都"], meta) == pytest.approx(0.75)  # max


def test_rouge_l_zh_by_hand():
    pytest.importorskip("jieba")
    # 我/爱/北京 vs 我/爱/上海: LCS 我 爱, 3 distinct words each -> p = r = 2/3
    assert lb.rouge_l_zh("我爱北京", "我爱上海") == pytest.approx(2 / 3, abs=1e-7)
    # 我/爱/北京/天安门 vs 我/爱/北京: p = 3/4, r = 1
    assert lb.rouge_l_zh("我爱北京天安门", "我爱北京") == pytest.approx(6 / 7, abs=1e-7)
    # punctuation stays a word, as LongBench joins jieba's output: 今天天气/很/好/，/我们/去/公园/。 vs
    # 今天天气/不好/。 -> LCS 今天天气 。: p = 2/8, r = 2/3
    assert lb.rouge_l_zh("今天天气很好，我们去公园。", "今天天气不好。") == pytest.approx(4 / 11, abs=1e-7)
    assert lb.rouge_l_zh("", "北京") == 0.0
