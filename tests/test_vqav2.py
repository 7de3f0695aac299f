"""VQAv2 from files in the official layout: joining, normalisation, missing and corrupt
images, the cached answer vocabulary, trainval/minival, and the pipeline end to end."""

import io
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from sdict_jax import metrics
from sdict_jax.data import pipeline
from sdict_jax.data import sources
from sdict_jax.data import tokenizer
from sdict_jax.data import vqav2

# subset -> image id -> [(question id, question, 10 answers, multiple-choice answer, type)]
TRAIN = {
    1: [(1000, "How many dogs are there?", ["Two"] * 6 + ["2"] * 2 + ["three"] * 2, "two",
         "number"),
        (1001, "Is it sunny?", ["yes."] * 9 + ["no"], "Yes", "yes/no")],
    2: [(2000, "What color is the café?", ["caf\udce9 red"] + ["red"] * 9, "red", "other")],
    3: [(3000, "Is this image missing?", ["yes"] * 10, "yes", "yes/no")],  # no image file
}
VAL = {
    4: [(4000, "What is on the table?", ["a cat"] * 10, "cat", "other")],
    5: [(5000, "Any people?", ["no"] * 10, "no", "yes/no")],
}
PRESENT = {"train2014": (1, 2), "val2014": (4, 5)}


def _jpeg(color, size=(40, 30)):
  buffer = io.BytesIO()
  Image.new("RGB", size, color).save(buffer, format="JPEG")
  return buffer.getvalue()


def _write_json(path, obj):
  # The café answer holds a lone surrogate: written as the raw invalid byte 0xE9.
  text = json.dumps(obj, ensure_ascii=False)
  with open(path, "wb") as f:
    f.write(text.encode("utf-8", errors="surrogateescape"))


def _write_subset(vqa_dir, coco_dir, subset, questions):
  _write_json(os.path.join(vqa_dir, vqav2.QUESTIONS_FILE.format(subset=subset)), {
      "info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
      "data_subtype": subset, "license": {},
      "questions": [{"image_id": i, "question": q, "question_id": qid}
                    for i, qs in questions.items() for qid, q, _, _, _ in qs]})
  _write_json(os.path.join(vqa_dir, vqav2.ANNOTATIONS_FILE.format(subset=subset)), {
      "info": {}, "data_type": "mscoco", "data_subtype": subset, "license": {},
      "annotations": [{
          "question_type": "what", "multiple_choice_answer": mc, "image_id": i,
          "answer_type": kind, "question_id": qid,
          "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                      for k, a in enumerate(answers)]}
                      for i, qs in questions.items() for qid, _, answers, mc, kind in qs]})
  os.makedirs(os.path.join(coco_dir, subset), exist_ok=True)
  for image_id in PRESENT[subset]:
    path = os.path.join(coco_dir, vqav2.IMAGE_FILE.format(subset=subset, image_id=image_id))
    with open(path, "wb") as f:
      f.write(_jpeg((image_id * 40, 100, 50)))


@pytest.fixture
def dirs(tmp_path):
  vqa_dir, coco_dir = str(tmp_path / "vqa"), str(tmp_path / "coco")
  os.makedirs(vqa_dir)
  _write_subset(vqa_dir, coco_dir, "train2014", TRAIN)
  _write_subset(vqa_dir, coco_dir, "val2014", VAL)
  return vqa_dir, coco_dir, str(tmp_path / "cache")


def _load(dirs, split="train", **kwargs):
  vqa_dir, coco_dir, cache_dir = dirs
  return vqav2.load(split, vqa_dir=vqa_dir, coco_dir=coco_dir, cache_dir=cache_dir,
                    **kwargs)


def test_one_example_per_question_with_missing_images_skipped_and_logged(dirs, caplog):
  with caplog.at_level("WARNING"):
    source = _load(dirs)
  assert len(source) == 3  # question 3000's image file is missing
  assert [source[i]["id"] for i in range(3)] == [1000, 1001, 2000]
  messages = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
  assert len(messages) == 1 and "skipped 1 of 4 questions (1 images)" in messages[0]
  example = source[0]
  assert example["image"].shape == (30, 40, 3) and example["image"].dtype == np.uint8
  assert example["questions"] == ["How many dogs are there?"]
  assert example["answer_types"] == ["number"]
  assert example["captions"] == [] and example["refexps"] == []
  assert example["boxes"].shape == (0, 4)


def test_answers_are_kept_as_annotated_and_invalid_utf8_replaced(dirs):
  source = _load(dirs)
  # As the annotation file has them: the official accuracy decides what to normalise.
  assert source[0]["answers"] == [["Two"] * 6 + ["2"] * 2 + ["three"] * 2]
  assert source[1]["answers"] == [["yes."] * 9 + ["no"]]
  assert source[2]["answers"][0][0] == "caf\ufffd red"  # invalid byte 0xE9 replaced
  # The humans disagree, so vqaEval.py normalises: "Two" and "2" are one answer.
  assert metrics.vqa_accuracy({0: "2"}, {0: source[0]["answers"][0]}) == {
      "overall": 1.0}
  # Ten identical "a cat": nothing is normalised and "cat" scores 0, as on the server.
  val = _load(dirs, split="validation")
  assert val[0]["answers"] == [["a cat"] * 10]
  assert metrics.vqa_accuracy({0: "cat"}, {0: val[0]["answers"][0]}) == {"overall": 0.0}


def test_answer_vocabulary_is_by_frequency_ties_alphabetical_and_cached(dirs, monkeypatch):
  source = _load(dirs, answer_vocab_size=3)
  # Training multiple-choice answers: 2, yes, red, yes (question 3000 counts: the
  # vocabulary comes from the annotations, images or not).
  assert source.answer_vocab == ["yes", "2", "red"]
  (cache_file,) = os.listdir(dirs[2])
  with open(os.path.join(dirs[2], cache_file)) as f:
    assert json.load(f)["answers"] == ["yes", "2", "red"]

  def fail(*args, **kwargs):
    raise AssertionError("the cached vocabulary should be used")
  monkeypatch.setattr(vqav2, "most_frequent_answers", fail)
  assert _load(dirs, split="validation", answer_vocab_size=3).answer_vocab == (
      ["yes", "2", "red"])
  assert len(os.listdir(dirs[2])) == 1


def test_trainval_trains_on_val_except_minival(dirs):
  train = _load(dirs, trainval=True, minival_images=1)
  validation = _load(dirs, split="validation", trainval=True, minival_images=1)
  assert [q.question_id for q in train.questions] == [1000, 1001, 2000, 5000]
  assert [q.question_id for q in validation.questions] == [4000]  # lowest val image id


def test_bad_splits_and_paths_name_the_fix(dirs):
  vqa_dir, coco_dir, cache_dir = dirs
  with pytest.raises(ValueError, match="splits"):
    _load(dirs, split="minival")
  with pytest.raises(FileNotFoundError, match="v2_OpenEnded_mscoco_test2015_questions"):
    _load(dirs, split="test")  # test2015: no answers, but its question file is needed
  with pytest.raises(FileNotFoundError, match="config.data.vqa_dir"):
    vqav2.load("train", vqa_dir=coco_dir, coco_dir=coco_dir, cache_dir=cache_dir)
  with pytest.raises(FileNotFoundError, match="config.data.coco_dir"):
    vqav2.load("train", vqa_dir=vqa_dir, coco_dir=vqa_dir, cache_dir=cache_dir)


def test_corrupt_image_gives_an_empty_counted_example(dirs):
  vqa_dir, coco_dir, _ = dirs
  path = os.path.join(coco_dir, vqav2.IMAGE_FILE.format(subset="train2014", image_id=2))
  with open(path, "wb") as f:
    f.write(_jpeg((1, 2, 3))[:50])  # truncated JPEG
  source = _load(dirs)
  broken = source[2]
  assert broken["questions"] == [] and broken["id"] == 2000
  assert source.bad_records.counts["undecodable_image"] == 1
  assert source[0]["questions"]  # the others still read


def test_pipeline_batch_from_registered_source(dirs, tmp_path):
  vqa_dir, coco_dir, cache_dir = dirs
  texts = [q for qs in TRAIN.values() for _, q, _, _, _ in qs] * 20
  model = tokenizer.train_sentencepiece(texts, str(tmp_path / "spm"), 64,
                                        hard_vocab_limit=False)
  data = ml_collections.ConfigDict(dict(
      name="vqav2", vqa_dir=vqa_dir, coco_dir=coco_dir, cache_dir=cache_dir,
      tokenizer=model, answer_vocab_size=10))
  bundle = sources.load(data, "train")
  assert bundle.answer_vocab == ["yes", "2", "red"]
  batch = next(iter(pipeline.make_dataset(
      bundle.source, tokenizer=bundle.tokenizer, answer_vocab=bundle.answer_vocab,
      image_size=32, batch_size=3, max_text_len=12, max_caption_len=8, seed=0,
      train=False, read_threads=1)))
  assert batch["image"].shape == (3, 32, 32, 3) and batch["question"].shape == (3, 12)
  np.testing.assert_array_equal(batch["has_vqa"], 1.0)
  np.testing.assert_array_equal(batch["has_caption"], 0.0)
  np.testing.assert_array_equal(batch["has_box"], 0.0)
  np.testing.assert_array_equal(batch["example_id"], [1000, 1001, 2000])
  # Soft scores: "2" said 8 times -> 1, "yes" 9 times -> 1, "red" 9 times -> 1.
  np.testing.assert_array_equal(batch["answer_scores"],
                                np.eye(3, dtype=np.float32)[[1, 0, 2]])
  ids = bundle.tokenizer.encode("How many dogs are there?")[:12]
  np.testing.assert_array_equal(batch["question"][0, :len(ids)], ids)
  assert "how many dogs are there?".startswith(bundle.tokenizer.decode(ids))
