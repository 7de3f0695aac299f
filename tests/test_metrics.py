"""Tests for sdict_jax.metrics: hand-computed caption and VQA scores, input checks.

Caption tests start Java (PTB tokenizer, METEOR); the first one pays METEOR's ~10 s
start, the rest reuse its process.
"""

import math
import random

import pytest

from sdict_jax import metrics
from sdict_jax.data import shapes

# Three images; the dog image has four consensus captions and one outlier, the horse
# image five identical captions, so CIDEr's document frequencies are not all equal.
REFERENCES = {
    1: ["a dog runs across the grass", "a brown dog running on the grass",
        "a dog runs on green grass", "the dog is running in the grass",
        "a red kite flies high in the sky"],
    2: ["a man riding a horse on a beach"] * 5,
    3: ["a plate of food with broccoli and rice", "a white plate with rice and broccoli",
        "broccoli and rice on a plate"],
}
CONSENSUS_DOG = "a dog running on the grass"
OUTLIER_DOG = "a red kite flies high in the sky"
EXACT_HORSE = "a man riding a horse on a beach"
PLATE = "a plate with rice and broccoli"


# ---------------------------------------------------------------------------------------
# Caption scores.
# ---------------------------------------------------------------------------------------


def test_bleu_and_rouge_match_hand_computed_values():
  # Prediction "the cat sat on the mat" vs reference "the cat is on the mat":
  # clipped 1-gram matches 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3; equal lengths
  # so no brevity penalty. Case and the final period vanish in PTB tokenisation.
  scores = metrics.caption_scores({"img": ["the cat is on the mat"]},
                                  {"img": "The cat sat on the mat."})
  assert scores["BLEU-1"] == pytest.approx(5 / 6, rel=1e-6)
  assert scores["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), rel=1e-6)
  assert scores["BLEU-3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), rel=1e-6)
  assert scores["BLEU-4"] < 1e-3  # no 4-gram matches; only pycocoevalcap's smoothing
  # Longest common subsequence "the cat on the mat": precision = recall = 5/6.
  assert scores["ROUGE-L"] == pytest.approx(5 / 6, rel=1e-6)


def test_bleu_brevity_penalty_for_short_prediction():
  # All 1- and 2-grams of "the cat" match, but it has 2 words against 6 in the
  # reference: brevity penalty exp(1 - 6/2).
  scores = metrics.caption_scores({0: ["the cat sat on the mat"]}, {0: "the cat"})
  assert scores["BLEU-1"] == pytest.approx(math.exp(-2), rel=1e-6)
  assert scores["BLEU-2"] == pytest.approx(math.exp(-2), rel=1e-6)


def test_identical_captions_score_above_unrelated_ones():
  identical = metrics.caption_scores(
      REFERENCES, {i: refs[0] for i, refs in REFERENCES.items()})
  unrelated = metrics.caption_scores(
      REFERENCES, {1: "two cups of coffee", 2: "a train at a station", 3: "snow on a hill"})
  assert set(identical) >= {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L",
                            "CIDEr"}
  assert identical["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
  assert identical["ROUGE-L"] == pytest.approx(1.0)
  for name in identical:
    assert identical[name] > unrelated[name], name


def test_cider_rewards_consensus_over_an_outlier_reference():
  # The IDF weights come from the references alone, so images 2 and 3 score the same in
  # both corpora: the difference is image 1's. Even an exact copy of the outlier caption
  # scores below a caption that agrees with the other four.
  consensus = metrics.caption_scores(REFERENCES, {1: CONSENSUS_DOG, 2: EXACT_HORSE, 3: PLATE})
  outlier = metrics.caption_scores(REFERENCES, {1: OUTLIER_DOG, 2: EXACT_HORSE, 3: PLATE})
  assert consensus["CIDEr"] > outlier["CIDEr"]


def test_cider_exact_match_of_all_references_beats_partial_match():
  exact = metrics.caption_scores(REFERENCES, {1: CONSENSUS_DOG, 2: EXACT_HORSE, 3: PLATE})
  partial = metrics.caption_scores(
      REFERENCES, {1: CONSENSUS_DOG, 2: "a man riding a bike", 3: PLATE})
  assert exact["CIDEr"] > partial["CIDEr"] + 1.0


def test_spice_is_omitted_with_one_log_line_when_its_jars_are_missing(
    monkeypatch, caplog, tmp_path):
  monkeypatch.setattr(metrics, "_SPICE_CORENLP_JARS", (str(tmp_path / "missing.jar"),))
  with caplog.at_level("INFO"):
    scores = metrics.caption_scores({0: ["a cat"]}, {0: "a cat"})
  assert "SPICE" not in scores
  spice_lines = [r for r in caplog.records if "SPICE" in r.getMessage()]
  assert len(spice_lines) == 1
  assert "get_stanford_models" in spice_lines[0].getMessage()


@pytest.mark.parametrize("references, predictions, message", [
    ({1: ["a cat"]}, {}, "empty"),
    ({1: ["a cat"]}, {1: "a cat", 7: "a dog"}, r"ids \[7\]"),
    ({1: []}, {1: "a cat"}, r"ids \[1\]"),
    ({1: "a cat"}, {1: "a cat"}, "list of caption strings"),
    ({1: ["a cat"]}, {1: ["a cat"]}, "one caption string"),
])
def test_caption_scores_rejects_bad_input(references, predictions, message):
  with pytest.raises(ValueError, match=message):
    metrics.caption_scores(references, predictions)


def test_caption_scores_without_java_says_how_to_install_it(monkeypatch):
  monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
  with pytest.raises(RuntimeError, match="apt-get install default-jre"):
    metrics.caption_scores({1: ["a cat"]}, {1: "a cat"})


# ---------------------------------------------------------------------------------------
# VQA accuracy.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, normalized", [
    ("Two", "2"),
    ("none", "0"),
    ("the dog.", "dog"),
    ("An apple", "apple"),
    ("dont", "don't"),
    ("Isnt it?", "isn't it"),
    ("1,000", "1000"),
    ("1,000 dogs!", "1000 dogs"),  # a thousands comma drops every mark
    ("3.5", "3.5"),                # a period before a digit stays
    ("5.", "5"),
    ("red,white", "red white"),    # a mark inside a word becomes a space
    ("red, white", "red white"),   # a mark next to a space is dropped
    ("x-ray", "x ray"),
    ("Yes!", "yes"),
    ("  A\tCat\n", "cat"),
    ("black and white", "black and white"),
])
def test_normalize_answer(text, normalized):
  assert metrics.normalize_answer(text) == normalized


@pytest.mark.parametrize("matches, accuracy", [
    # Over the ten leave-one-out subsets of ten answers with m matches: m subsets keep
    # m - 1 matches, 10 - m keep m; each scores min(1, kept / 3).
    (0, 0.0),
    (1, (1 * 0 + 9 * 1 / 3) / 10),      # 0.3
    (2, (2 * 1 / 3 + 8 * 2 / 3) / 10),  # 0.6
    (3, (3 * 2 / 3 + 7 * 1) / 10),      # 0.9
    (4, 1.0),
    (10, 1.0),
])
def test_vqa_accuracy_averages_min_one_third_over_leave_one_out_subsets(matches, accuracy):
  answers = ["cat"] * matches + ["dog"] * (10 - matches)
  result = metrics.vqa_accuracy({"q": "cat"}, {"q": answers})
  assert result == {"overall": pytest.approx(accuracy)}


def test_vqa_accuracy_normalises_prediction_and_human_answers():
  answers = ["2", "two", "2.", "3", "3", "3", "3", "3", "3", "3"]
  assert metrics.vqa_accuracy({0: "Two"}, {0: answers})["overall"] == pytest.approx(0.9)


# Expected values worked out by hand from vqaEval.py (GT-Vision-Lab/VQA, master):
# whitespace is cleaned on every answer; only if the ten cleaned human answers are not all
# identical are the prediction and the human answers normalised (processPunctuation, then
# processDigitArticle); accuracy is the mean over the ten leave-one-out subsets of
# min(1, matches / 3), i.e. 0.3, 0.6, 0.9, 1.0 for 1, 2, 3, 4+ matching humans. "full"
# normalises everything always, so the two differ only where all humans agree.
@pytest.mark.parametrize("prediction, answers, official, full", [
    # Humans disagree, so "three" -> "3" on their side too: 2 matches, 0.6. (An older
    # vqaEval.py, which gave the humans punctuation only, scored this 0.)
    ("3", ["three"] * 2 + ["four"] * 8, 0.6, 0.6),
    # All agree: nothing is normalised, "dog" != "a dog". Fully normalised: 10 matches.
    ("dog", ["a dog"] * 10, 0.0, 1.0),
    # One dissenter switches normalisation on: all ten become "dog".
    ("dog", ["a dog"] * 9 + ["dog"], 1.0, 1.0),
    # All agree: the comparison is exact, so case matters.
    ("A dog", ["a dog"] * 10, 0.0, 1.0),
    ("Yes", ["yes"] * 10, 0.0, 1.0),
    # Whitespace is cleaned even when all agree.
    ("yes\n", ["yes"] * 10, 1.0, 1.0),
    # "Two." -> "Two" (the period is not before a digit) -> "2", but only if normalised.
    ("Two.", ["2"] * 10, 0.0, 1.0),
    ("2", ["Two."] * 10, 0.0, 1.0),
    ("2", ["Two."] * 2 + ["2"] + ["3"] * 7, 0.9, 0.9),
    ("Two.", ["2"] * 5 + ["two"] * 5, 1.0, 1.0),
    # "isnt" -> "isn't" (the apostrophe is not a punctuation mark there).
    ("isnt", ["isn't"] * 10, 0.0, 1.0),
    ("isnt", ["isn't"] * 9 + ["is not"], 1.0, 1.0),
    # "Red!": the "!" touches no space, so it becomes a space; lower case gives "red".
    ("Red!", ["red"] * 10, 0.0, 1.0),
    ("red", ["Red!"] * 4 + ["blue"] * 6, 1.0, 1.0),
    # A thousands comma drops every mark: "1,000" -> "1000" on the human side.
    ("1000", ["1,000"] * 2 + ["many"] * 8, 0.6, 0.6),
])
def test_vqa_accuracy_official_quirks_and_full_normalization(prediction, answers, official,
                                                             full):
  questions = {0: prediction}, {0: answers}
  assert metrics.vqa_accuracy(*questions) == {"overall": pytest.approx(official)}
  assert metrics.vqa_accuracy(*questions, normalization="official") == {
      "overall": pytest.approx(official)}
  assert metrics.vqa_accuracy(*questions, normalization="full") == {
      "overall": pytest.approx(full)}


def test_vqa_accuracy_modes_agree_on_clean_lower_case_answers():
  # Answers already normalised (an answer vocabulary, or the shapes data's exact words)
  # score the same either way; random mixes cover both of vqaEval.py's branches.
  words = shapes.answer_vocabulary() + ["black and white", "don't know"]
  rng = random.Random(0)
  predictions, answers = {}, {}
  for question in range(300):
    choices = rng.sample(words, rng.choice([1, 1, 2, 3]))
    answers[question] = [rng.choice(choices) for _ in range(10)]
    predictions[question] = rng.choice(choices + [rng.choice(words)])
  types = {question: str(question % 3) for question in predictions}
  official = metrics.vqa_accuracy(predictions, answers, types)
  assert official == metrics.vqa_accuracy(predictions, answers, types, normalization="full")
  assert 0 < official["overall"] < 1


# The first release of vqaEval.py (07aecec): the prediction always fully normalised,
# the humans' answers given the punctuation step only, and only when they disagree.
@pytest.mark.parametrize("prediction, answers, expected", [
    ("3", ["three"] * 2 + ["four"] * 8, 0.0),  # "three" stays a word on the human side
    ("three", ["3"] * 2 + ["four"] * 8, 0.6),  # the prediction becomes "3"
    ("dog", ["a dog"] * 10, 0.0),  # the humans keep their article
    ("A dog", ["dog"] * 10, 1.0),  # the prediction loses its article and capital
    ("Red!", ["red"] * 10, 1.0),
    ("red", ["Red!"] * 4 + ["blue"] * 6, 0.0),  # "Red!" -> "Red ", not lower-cased
])
def test_vqa_accuracy_official_2015(prediction, answers, expected):
  score = metrics.vqa_accuracy({0: prediction}, {0: answers},
                               normalization="official_2015")
  assert score == {"overall": pytest.approx(expected)}


def test_vqa_accuracy_rejects_unknown_normalization():
  with pytest.raises(ValueError, match="'official', 'full'|'full', 'official'"):
    metrics.vqa_accuracy({1: "yes"}, {1: ["yes"]}, normalization="lenient")


def test_vqa_accuracy_breaks_down_by_answer_type():
  answers = {
      "a": ["yes"] * 10,
      "b": ["2"] * 2 + ["3"] * 8,
      "c": ["4"] * 10,
      "d": ["red"] * 10,
  }
  predictions = {"a": "yes", "b": "2", "c": "5", "d": "blue"}
  types = {"a": "yes/no", "b": "number", "c": "number", "d": "other"}
  result = metrics.vqa_accuracy(predictions, answers, types)
  assert result == pytest.approx(
      {"overall": (1.0 + 0.6 + 0.0 + 0.0) / 4, "yes/no": 1.0, "number": 0.3, "other": 0.0})


def test_vqa_accuracy_scores_only_predicted_questions():
  answers = {1: ["yes"] * 10, 2: ["no"] * 10}
  assert metrics.vqa_accuracy({1: "yes"}, answers) == {"overall": 1.0}


@pytest.mark.parametrize("predictions, answers, answer_types, message", [
    ({}, {1: ["yes"]}, None, "empty"),
    ({1: "yes", 9: "no"}, {1: ["yes"]}, None, r"\[9\]"),
    ({1: "yes"}, {1: []}, None, r"\[1\]"),
    ({1: "yes", 2: "no"}, {1: ["yes"], 2: ["no"]}, {1: "yes/no"}, r"answer_types lacks.*\[2\]"),
])
def test_vqa_accuracy_rejects_bad_input(predictions, answers, answer_types, message):
  with pytest.raises(ValueError, match=message):
    metrics.vqa_accuracy(predictions, answers, answer_types)
