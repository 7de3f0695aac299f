"""Result files for the official servers: the validator, the file names, and
`evaluate` on splits without answers (VQAv2 test-dev / test-std in the official file
layout, COCO test2014 images) writing files the validator accepts."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sdict_jax import checkpointing
from sdict_jax import evaluate
from sdict_jax import submission
from sdict_jax import train
from sdict_jax.data import coco
from sdict_jax.data import sources
from sdict_jax.data import tokenizer
from sdict_jax.data import vqav2
from test_train import _config
from test_vqav2 import TRAIN, _jpeg, _write_json, _write_subset

# ---------------------------------------------------------------------------
# The validator and the names.
# ---------------------------------------------------------------------------

QUESTION_IDS = [10, 11, 12]


def _answers(*pairs):
  return [{"question_id": q, "answer": a} for q, a in pairs]


def test_validator_accepts_every_id_once_with_string_answers():
  submission.validate_vqa_results(_answers((11, "2"), (10, "yes"), (12, "red")),
                                  QUESTION_IDS)
  submission.validate_caption_results(
      [{"image_id": 7, "caption": "a dog"}, {"image_id": 9, "caption": "two cats"}], [9, 7])


@pytest.mark.parametrize("results,message", [
    (_answers((10, "yes"), (11, "2")), "1 question_ids of the official file are missing: 12"),
    (_answers((10, "yes"), (11, "2"), (12, "red"), (11, "3")),
     "1 question_ids appear more than once: 11"),
    (_answers((10, "yes"), (11, 2), (12, "red")), "question_id 11 has answer 2 (int, not str)"),
    (_answers((10, "yes"), (11, None), (12, "red")), "has answer None"),
    (_answers((10, "yes"), (11, " "), (12, "red")), "question_id 11 has an empty answer"),
    (_answers((10, "yes"), ("11", "2"), (12, "red")), "has question_id '11' (str, not int)"),
    (_answers((10, "yes"), (11, "2"), (12, "red"), (99, "no")),
     "1 question_ids are not in the official file: 99"),
    ([{"question_id": 10, "answer": "yes", "score": 1.0}], "not {'question_id': int"),
    ({"10": "yes"}, "must be a JSON list"),
])
def test_validator_rejects_what_the_server_would(results, message):
  with pytest.raises(submission.SubmissionError) as error:
    submission.validate_vqa_results(results, QUESTION_IDS)
  assert message in str(error.value)


def test_validator_allows_empty_answers_only_where_declared():
  results = _answers((10, "yes"), (11, ""), (12, "red"))
  submission.validate_vqa_results(results, QUESTION_IDS, allow_empty=[11])
  with pytest.raises(submission.SubmissionError, match="image_id 4 has an empty caption"):
    submission.validate_caption_results([{"image_id": 4, "caption": ""}], [4])
  with pytest.raises(submission.SubmissionError, match="image_ids .* missing: 5"):
    submission.validate_caption_results([{"image_id": 4, "caption": "a"}], [4, 5])


def test_result_file_names_are_the_servers():
  assert (submission.vqa_results_file("test-dev2015", "sdict") ==
          "vqa_OpenEnded_mscoco_test-dev2015_sdict_results.json")
  assert (submission.vqa_results_file("test2015", "sdict-v2") ==
          "vqa_OpenEnded_mscoco_test2015_sdict-v2_results.json")
  assert (submission.caption_results_file("test2014", "sdict") ==
          "captions_test2014_sdict_results.json")
  with pytest.raises(submission.SubmissionError, match="letters, digits"):
    submission.vqa_results_file("test2015", "my_model")
  with pytest.raises(submission.SubmissionError, match="subset"):
    submission.caption_results_file("test2015", "sdict")


def test_unpredicted_questions_get_the_empty_answer_and_are_declared():
  results, unanswered = submission.vqa_results([(12, "red"), (10, "yes")], QUESTION_IDS)
  assert results == _answers((12, "red"), (10, "yes"), (11, ""))
  assert unanswered == {11}


def test_coco_splits_name_their_results_files():
  assert coco.tfds_split("val2014") == "restval+val+test"  # all 40,504 val2014 images
  assert coco.RESULTS_SUBSETS["test"] == "val2014"  # Karpathy test: val2014 images
  assert "train" not in coco.RESULTS_SUBSETS  # train2014 + restval: no single file


# ---------------------------------------------------------------------------
# VQAv2 test splits from files in the official layout.
# ---------------------------------------------------------------------------

# test2015 image id -> [(question id, question)]; test-dev is a subset of test2015.
TEST = {21: [(2100, "How many dogs are there?"), (2101, "Is it sunny?")],
        22: [(2200, "What color is the cafe?")],
        23: [(2300, "What is on the table?")]}
TEST_DEV = (2100, 2200)


def _write_test_questions(vqa_dir, subset, ids=None):
  _write_json(os.path.join(vqa_dir, vqav2.QUESTIONS_FILE.format(subset=subset)), {
      "info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
      "data_subtype": subset, "license": {},
      "questions": [{"image_id": i, "question": q, "question_id": qid}
                    for i, qs in TEST.items() for qid, q in qs
                    if ids is None or qid in ids]})


def _write_test_images(coco_dir, image_ids):
  os.makedirs(os.path.join(coco_dir, "test2015"), exist_ok=True)
  for image_id in image_ids:
    path = os.path.join(coco_dir, vqav2.IMAGE_FILE.format(subset="test2015",
                                                          image_id=image_id))
    with open(path, "wb") as f:
      f.write(_jpeg((image_id * 10, 30, 200)))


@pytest.fixture(scope="module")
def vqa_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("vqa")
  vqa_dir, coco_dir = str(root / "vqa"), str(root / "coco")
  os.makedirs(vqa_dir)
  _write_subset(vqa_dir, coco_dir, "train2014", TRAIN)  # for the answer vocabulary
  _write_test_questions(vqa_dir, "test2015")
  _write_test_questions(vqa_dir, "test-dev2015", TEST_DEV)
  _write_test_images(coco_dir, TEST)
  return vqa_dir, coco_dir, str(root / "cache")


def _load(vqa_dirs, split, **kwargs):
  vqa_dir, coco_dir, cache_dir = vqa_dirs
  return vqav2.load(split, vqa_dir=vqa_dir, coco_dir=coco_dir, cache_dir=cache_dir,
                    answer_vocab_size=3, **kwargs)


def test_test_splits_read_questions_without_answers(vqa_dirs):
  test_dev, test_std = _load(vqa_dirs, "test-dev"), _load(vqa_dirs, "test-std")
  assert [q.question_id for q in test_dev.questions] == list(TEST_DEV)
  assert [q.question_id for q in test_std.questions] == [2100, 2101, 2200, 2300]
  assert [q.question_id for q in _load(vqa_dirs, "test").questions] == (
      [2100, 2101, 2200, 2300])  # test is test-standard: the test2015 file
  # The test-dev file must hold every test2015 question (EvalAI's Test-Dev phase).
  assert test_dev.results_question_ids == [2100, 2101, 2200, 2300]
  assert (test_dev.subset, test_std.subset) == ("test-dev2015", "test2015")
  example = test_dev[1]
  assert example["id"] == 2200 and example["questions"] == ["What color is the cafe?"]
  assert example["answers"] == [[]] and example["image"].shape == (30, 40, 3)
  assert test_dev.answer_vocab == ["yes", "2", "red"]  # from the training questions


def test_missing_test_image_is_an_error_naming_the_file_and_fix(vqa_dirs, tmp_path):
  vqa_dir, _, cache_dir = vqa_dirs
  coco_dir = str(tmp_path / "coco")
  _write_test_images(coco_dir, [21, 22])  # image 23 is missing
  with pytest.raises(FileNotFoundError) as error:
    vqav2.load("test-std", vqa_dir=vqa_dir, coco_dir=coco_dir, cache_dir=cache_dir,
               answer_vocab_size=3)
  message = str(error.value)
  assert os.path.join(coco_dir, "test2015", "COCO_test2015_000000000023.jpg") in message
  assert "--missing_images=blank" in message and "test2015.zip" in message
  # blank: the question stays, answered from a black image.
  source = vqav2.load("test-std", vqa_dir=vqa_dir, coco_dir=coco_dir,
                      cache_dir=cache_dir, answer_vocab_size=3, missing_images="blank")
  assert len(source) == 4
  example = source[3]
  assert example["id"] == 2300 and example["questions"] == ["What is on the table?"]
  assert not example["image"].any()
  assert source.bad_records.counts["undecodable_image"] == 1


# ---------------------------------------------------------------------------
# `evaluate` end to end, from a checkpoint of an (untrained) tiny model.
# ---------------------------------------------------------------------------


def _tiny_config(data, texts, tmp_path):
  config = _config("tiny")
  spm = tokenizer.train_sentencepiece(texts * 20, str(tmp_path / "spm"), 64,
                                      hard_vocab_limit=False)
  config.data = ml_collections.ConfigDict(dict(
      data, tokenizer=spm, image_size=32, max_text_len=12, max_caption_len=12))
  config.eval.update(batch_size=4, max_decode_len=6)
  return config


def _write_checkpoint(workdir, config, split="test2014"):
  """An Orbax checkpoint of freshly initialised parameters, as train.py lays it out
  (no training: tests of what evaluate writes need no trained model)."""
  bundle = sources.load(config.data, split)
  model = train.build_model(config, bundle)
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  shapes = jax.eval_shape(train.make_init_state(model, optimizer, train.example_batch(
      config, 1, len(bundle.answer_vocab))), jax.random.PRNGKey(0))
  # Random numbers of the right shapes: no initialiser to compile (the values only
  # need to decode to something).
  rng = np.random.default_rng(0)
  state = jax.tree.map(
      lambda s: (rng.normal(0, 0.3, s.shape) if jnp.issubdtype(s.dtype, jnp.floating)
                 else np.zeros(s.shape)).astype(s.dtype), shapes)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                            async_save=False)
  checkpointer.save(1, state)
  checkpointer.wait()
  checkpointer.close()


@pytest.fixture(scope="module")
def vqa_run(vqa_dirs, tmp_path_factory):
  vqa_dir, coco_dir, cache_dir = vqa_dirs
  root = tmp_path_factory.mktemp("vqa_run")
  texts = [q for qs in TEST.values() for _, q in qs]
  config = _tiny_config(dict(name="vqav2", vqa_dir=vqa_dir, coco_dir=coco_dir,
                             cache_dir=cache_dir, answer_vocab_size=3), texts, root)
  workdir = str(root / "run")
  _write_checkpoint(workdir, config, split="test-std")
  return workdir, config


@pytest.mark.slow  # compiles the tiny model's evaluation (~30 s on 2 busy cores)
def test_test_dev_results_file_holds_every_test2015_question_once(vqa_run):
  workdir, config = vqa_run
  report = evaluate.evaluate(workdir, config, split="test-dev", scorers=())
  path = os.path.join(workdir, "eval_test-dev",
                      "vqa_OpenEnded_mscoco_test-dev2015_sdict_results.json")
  assert report["results_file"] == path and report["scores"] == {}
  assert report["num_examples"] == len(TEST_DEV)  # whatever config.eval.num_examples
  with open(path) as f:
    results = json.load(f)
  every = [qid for qs in TEST.values() for qid, _ in qs]
  outside = set(every) - set(TEST_DEV)
  submission.validate_vqa_results(results, every, allow_empty=outside)
  answers = {r["question_id"]: r["answer"] for r in results}
  assert all(answers[q] in ("yes", "2", "red") for q in TEST_DEV)  # the answer head's
  assert all(answers[q] == "" for q in outside)  # scored by no phase of test-dev
  with open(os.path.join(workdir, "eval_test-dev", "predictions.jsonl")) as f:
    assert [json.loads(line)["id"] for line in f] == list(TEST_DEV)


def test_bad_method_name_fails_before_writing(vqa_run, tmp_path):
  workdir, config = vqa_run
  with pytest.raises(submission.SubmissionError, match="letters, digits"):
    evaluate.evaluate(workdir, config, split="test-dev", scorers=(),
                      method_name="a_b", output_dir=str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------------------
# COCO captions: the official test2014 images.
# ---------------------------------------------------------------------------

TEST2014 = {391: (40, 30), 392: (50, 50), 408: (30, 44)}  # image id -> size


def _write_test2014(coco_dir, image_ids):
  os.makedirs(os.path.join(coco_dir, "test2014"), exist_ok=True)
  os.makedirs(os.path.join(coco_dir, "annotations"), exist_ok=True)
  images = []
  for image_id, (width, height) in TEST2014.items():
    file_name = f"COCO_test2014_{image_id:012d}.jpg"
    images.append({"id": image_id, "file_name": file_name, "width": width,
                   "height": height})
    if image_id in image_ids:
      with open(os.path.join(coco_dir, "test2014", file_name), "wb") as f:
        f.write(_jpeg((200, image_id % 256, 10), (width, height)))
  with open(os.path.join(coco_dir, coco.IMAGE_INFO_FILE), "w") as f:
    json.dump({"info": {}, "images": images, "licenses": [], "categories": []}, f)


def test_missing_test2014_image_is_an_error_naming_the_file(tmp_path):
  coco_dir = str(tmp_path / "coco")
  _write_test2014(coco_dir, [391, 408])
  with pytest.raises(FileNotFoundError) as error:
    coco.load_test_images(coco_dir)
  assert "COCO_test2014_000000000392.jpg" in str(error.value)
  assert "--missing_images=blank" in str(error.value)
  source = coco.load_test_images(coco_dir, missing_images="blank")
  assert source.image_ids == [391, 392, 408] and not source[1]["image"].any()
  assert source[2]["image"].shape == (44, 30, 3) and source[2]["captions"] == []
  with pytest.raises(FileNotFoundError, match="image_info_test2014.json"):
    coco.load_test_images(str(tmp_path))


@pytest.mark.slow  # compiles the tiny model's evaluation (~30 s on 2 busy cores)
def test_test2014_captions_file_holds_every_image_once(tmp_path):
  coco_dir = str(tmp_path / "coco")
  _write_test2014(coco_dir, TEST2014)
  config = _tiny_config(dict(name="coco_captions", data_dir=str(tmp_path / "tfds")),
                        ["a dog on the grass", "two cats on a red sofa"], tmp_path)
  workdir = str(tmp_path / "run")
  with_images = ml_collections.ConfigDict(config.to_dict())
  with_images.data.coco_dir = coco_dir
  _write_checkpoint(workdir, with_images)
  # The config of a COCO captions run has no coco_dir: --coco_dir gives it.
  report = evaluate.evaluate(workdir, config, split="test2014", scorers=(),
                             coco_dir=coco_dir, method_name="tiny")
  path = os.path.join(workdir, "eval_test2014", "captions_test2014_tiny_results.json")
  assert report["results_file"] == path
  with open(path) as f:
    results = json.load(f)
  empty = [r["image_id"] for r in results if not r["caption"]]
  submission.validate_caption_results(results, list(TEST2014), allow_empty=empty)
  assert sorted(r["image_id"] for r in results) == sorted(TEST2014)
