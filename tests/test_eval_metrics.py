"""Metric values against the libraries' own results on fixed strings, and intervals with known answers."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_score")
np = pytest.importorskip("numpy")  # the eval extra brings it

from rouge_score import rouge_scorer  # noqa: E402
from sacrebleu.metrics import BLEU, CHRF  # noqa: E402
from sacrebleu.significance import PairedTest  # noqa: E402

from aigc.eval.checks import CheckSettings, check_columns, language_code  # noqa: E402
from aigc.eval.metrics import METRICS, References, parse_label  # noqa: E402
from aigc.eval.stats import Resampler, holm, interval, mcnemar_p, paired_p, sign_test_p  # noqa: E402
from aigc.eval.text import detect_language, parse_length, rouge_tokenizer, script_language  # noqa: E402

REFS = ["The council approved the harbour bridge repairs on Monday.",
        "Heavy rain flooded the old town and thirty cellars.",
        "From March the library opens on Sundays.",
        "Bus line 12 will run every ten minutes.",
        "A wolf was seen near the village for the first time in a century.",
        "Water will cost six percent more from January."]
SYS_A = ["The council approved repairs to the harbour bridge.",
         "Rain flooded the old town; firefighters pumped thirty cellars.",
         "The library will open on Sundays from March.",
         "Line 12 buses will come every ten minutes.",
         "A wolf was seen near the village.",
         "Water prices rise six percent in January."]
SYS_B = ["The bridge is being repaired.", "It rained.", "Library news.", "Buses.", "An animal was seen.",
         "Prices change."]


def columns(metric: str, hyps: list[str], refs=REFS, languages=None, labels=None):
    refs_obj = References([[r] for r in refs], languages or ["en"] * len(refs), labels)
    scorer = METRICS[metric].make(refs_obj)
    return scorer, {c.name: c for c in scorer.columns([hyps])}


@pytest.mark.parametrize("metric, library", [("bleu", BLEU), ("chrf", CHRF)])
def test_bleu_and_chrf_equal_sacrebleu_with_its_interval_and_signature(metric, library):
    scorer, cols = columns(metric, SYS_A)
    col = cols[metric]
    theirs = library().corpus_score(SYS_A, [REFS], n_bootstrap=1000)
    assert col.value() == pytest.approx(theirs.score, abs=1e-9)
    lo, hi = interval(Resampler.draw(len(REFS)).statistic(col.stats, col.corpus))
    assert (hi - lo) / 2 == pytest.approx(theirs._ci, abs=1e-4)  # sacrebleu prints mean ± this half-width
    signed = library()
    signed.corpus_score(SYS_A, [REFS], n_bootstrap=1000)
    assert scorer.signature().endswith(signed.get_signature().format())
    assert scorer.signature().startswith("BLEU|nrefs:1|bs:1000|seed:12345" if metric == "bleu" else "chrF2|")


@pytest.mark.parametrize("metric, library", [("bleu", BLEU), ("chrf", CHRF)])
def test_paired_bootstrap_p_value_equals_sacrebleus_paired_test(metric, library):
    resampler = Resampler.draw(len(REFS))
    _, a = columns(metric, SYS_A)
    _, b = columns(metric, SYS_B)
    a, b = a[metric], b[metric]
    ours = paired_p(resampler.statistic(a.stats, a.corpus), resampler.statistic(b.stats, b.corpus),
                    b.value() - a.value())
    _, results = PairedTest([("a", SYS_A), ("b", SYS_B)], {metric: library()}, [REFS], test_type="bs")()
    theirs = next(v for k, v in results.items() if k != "System")[1]
    assert ours == pytest.approx(theirs.p_value)
    assert ours < 0.05


def test_chinese_bleu_uses_tok_zh_and_scores_like_sacrebleu_zh():
    refs, hyps = ["市议会批准了港口大桥的修复计划。", "图书馆周日开放。"], ["市议会批准了大桥修复。", "图书馆星期日开放。"]
    scorer, cols = columns("bleu", hyps, refs, languages=["zh", "zh"])
    assert "tok:zh" in scorer.signature()
    assert cols["bleu"].value() == pytest.approx(BLEU(tokenize="zh").corpus_score(hyps, [refs]).score)
    assert cols["bleu"].value() > BLEU().corpus_score(hyps, [refs]).score  # 13a sees one "word" per sentence


def test_rouge_english_equals_rouge_score_with_its_stemmer():
    _, cols = columns("rouge", SYS_A)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(r, h) for r, h in zip(REFS, SYS_A, strict=True)]
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert cols[kind].value() == pytest.approx(np.mean([e[kind].fmeasure for e in expected]))
        assert list(cols[kind].item_means()) == pytest.approx([e[kind].fmeasure for e in expected])


def test_rouge_scores_chinese_with_characters_where_the_default_tokenizer_gives_zero():
    ref, hyp = "市议会批准了港口大桥的修复计划。", "市议会批准了大桥修复。"
    default = rouge_scorer.RougeScorer(["rouge1"]).score(ref, hyp)["rouge1"].fmeasure
    assert default == 0.0  # rouge-score keeps only a-z0-9
    scorer, cols = columns("rouge", [hyp], [ref], languages=["zh"])
    chars = rouge_scorer.RougeScorer(["rouge1"], tokenizer=rouge_tokenizer("chars", stem=False))
    assert cols["rouge1"].value() == pytest.approx(chars.score(ref, hyp)["rouge1"].fmeasure)
    assert cols["rouge1"].value() > 0.6
    assert "tok:chars(zh)" in scorer.signature() and "stem:no" in scorer.signature()


def test_rouge_signature_records_each_languages_tokenizer_and_the_stemmer():
    scorer, _ = columns("rouge", ["a", "b", "c"], ["the cat", "die Katze", "猫"], languages=["en", "de", "zh"])
    sig = scorer.signature()
    assert sig.startswith("ROUGE|types:rouge1,rouge2,rougeL|score:f|")
    assert "tok:chars(zh)+default(en)+words(de)" in sig and "stem:porter(en)" in sig and "version:0.1.2" in sig


@pytest.mark.parametrize("hyp, ref, em, f1", [
    ("The Eiffel Tower.", "eiffel tower", 1.0, 1.0),
    ("in Paris, France", "Paris", 0.0, 0.5),
    ("1889", "in 1889", 0.0, 2 / 3),
    ("London", "Paris", 0.0, 0.0),
])
def test_exact_match_and_token_f1_follow_squad(hyp, ref, em, f1):
    _, e = columns("exact_match", [hyp], [ref])
    _, f = columns("token_f1", [hyp], [ref])
    assert e["exact_match"].value() == em and e["exact_match"].binary
    assert f["token_f1"].value() == pytest.approx(f1)


def test_accuracy_and_macro_f1_on_a_worked_example():
    labels = ["positive", "negative", "neutral"]
    gold = ["positive", "positive", "negative", "negative", "neutral", "positive"]
    said = ["Positive.", "negative", "The answer is negative", "negative", "I cannot say", "positive"]
    assert [parse_label(s, labels) for s in said] == ["positive", "negative", "negative", "negative", None,
                                                      "positive"]
    _, acc = columns("accuracy", said, gold, labels=labels)
    _, mf = columns("macro_f1", said, gold, labels=labels)
    assert acc["accuracy"].value() == pytest.approx(4 / 6)
    # positive: tp 2, fp 0, fn 1 → 0.8; negative: tp 2, fp 1, fn 0 → 0.8; neutral: tp 0 → 0
    assert mf["macro_f1"].value() == pytest.approx((0.8 + 0.8 + 0.0) / 3)


def test_checks_flag_empty_cut_length_language_and_json():
    texts = [["", "Eins. Zwei. Drei. Vier.", "The bridge will be repaired next spring.", '{"a": 1}']]
    finish = [["stop", "length", None, "stop"]]
    cols = {c.name: c for c in check_columns(texts, finish, CheckSettings.build(
        length="1 sentence", tolerance=0.5, language="English", schema={"type": "object", "required": ["a"]}))}
    assert list(cols["empty"].per_item[0]) == [1, 0, 0, 0]
    assert list(cols["truncated"].per_item[0][:2]) == [0, 1] and math.isnan(cols["truncated"].per_item[0][2])
    assert list(cols["length_ok"].per_item[0][1:3]) == [0, 1]
    assert cols["language_ok"].per_item[0][1] == 0 and cols["language_ok"].per_item[0][2] == 1
    assert list(cols["json_valid"].per_item[0]) == [0, 0, 0, 1]


def test_language_helpers():
    assert script_language("市议会周一决定修复大桥。") == "zh" and script_language("ひらがなと漢字") == "ja"
    assert detect_language("Der Stadtrat hat am Montag beschlossen, die Brücke zu reparieren.")[0] == "de"
    assert detect_language("short") == (None, 0.0)
    assert language_code("English") == "en" and language_code("pt-BR") == "pt" and language_code("??") is None
    assert parse_length("about 50 words") == (50, "word") and parse_length("two sentences") == (2, "sentence")


# -- statistics ---------------------------------------------------------------------------------------------

def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation():
    values = np.array([1.0, 0.0] * 200)  # p = 0.5, n = 400: standard error 0.025
    lo, hi = interval(Resampler.draw(len(values), resamples=4000).means(values))
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
    assert hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


def test_bootstrap_interval_of_a_constant_has_no_width_and_resamples_use_every_item_n_times():
    resampler = Resampler.draw(50)
    assert interval(resampler.means(np.full(50, 0.7))) == pytest.approx((0.7, 0.7))
    assert (resampler.counts.sum(axis=1) == 50).all()


def test_exact_tests_and_holm_on_known_values():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    p, only_a, only_b = mcnemar_p(a, b)
    assert (only_a, only_b) == (10, 2)
    assert p == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(5, 5) == 1.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert paired_p(np.ones(10), np.ones(10), 0.0) == 1.0


def test_scores_split_over_worker_processes_equal_scores_in_one_process():
    from aigc.eval.jobs import Output
    from aigc.eval.score import CandidateOutputs, Item, Scoring, score

    items = [Item(str(i), "", [r], "en") for i, r in enumerate(REFS * 3)]
    systems = [CandidateOutputs(name, {}, [[Output(h) for h in hyps * 3]]) for name, hyps in (("a", SYS_A), ("b", SYS_B))]
    scoring = Scoring(items, systems, ["bleu", "chrf", "rouge"], "a")
    alone, split = score(scoring), score(scoring, min_parallel=1)
    for mine, theirs in zip(alone["candidates"], split["candidates"], strict=True):
        assert mine["scores"] == theirs["scores"]
    assert alone["items"] == split["items"]
