"""The paper's workflow end to end on small data in the real formats: pre-train on
ArrayRecord shards, fine-tune from that checkpoint (config.init_from) on VQAv2 files
and on COCO captions, and write the files the official servers score.

Every stage is the command a researcher runs (`python -m sdict_jax.train`,
`python -m sdict_jax.evaluate`) on configs/pretrain.py, vqav2.py and coco_caption.py,
shrunk to a tiny model on the command line. The COCO captions source is TFDS's mock
(tfds.testing.mock_data lives in one process, so that run's command is wrapped in
it); the official test images and question files are written by the tests.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sdict_jax import submission
from sdict_jax.data import coco
from sdict_jax.data import shards
from sdict_jax.data import vqav2
import test_data_configs  # TINY: the model and run sizes of the real-data config tests
import test_shards  # webdataset tars
import test_submission  # VQAv2 test-dev/test2015 files, COCO test2014 image info
import test_vqav2  # VQAv2 train/val files in the official layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600  # per command
# 4 x 4 patches of the 32-pixel images have 10 real frequencies: fewer atoms.
MODEL = ["--config.model.vision_atoms=6"]
PRETRAIN_STEPS = 2
ANSWER_VOCAB_SIZE = 10
COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220),
          "yellow": (240, 230, 40), "black": (10, 10, 10), "white": (245, 245, 245)}
THINGS = ("square", "wall", "sky", "car", "shirt", "flower")
# The caption training source under TFDS's mock, for a subprocess (argv: train's).
MOCKED_COCO_TRAIN = ("import tensorflow_datasets as tfds\n"
                     "from absl import app\n"
                     "from sdict_jax import train\n"
                     "with tfds.testing.mock_data(num_examples=8):\n"
                     "  app.run(train.main)\n")
SUMMARY = re.compile(r"Initialised from (\S+) \(step (\d+)\): (\d+) parameters loaded, "
                     r"(\d+) initialised afresh(?:: (.*?))?\. Optimizer state")


def _tiny(*overrides):
  """test_data_configs.TINY with `overrides` replacing its entries of the same keys."""
  keys = {o.split("=")[0] for o in overrides}
  return [a for a in test_data_configs.TINY if a.split("=")[0] not in keys] + [
      *MODEL, *overrides]


def _run(*args):
  """Runs `python *args` in the repository; (stdout, stderr), or fails with them."""
  command = [sys.executable, *args]
  shown = " ".join(a if len(a) < 80 else a[:40] + "..." for a in args[:3])
  try:
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f"`python {shown} ...` ran past {TIMEOUT_S} s:\n"
                f"{error.stdout or ''}\n{error.stderr or ''}"[-8000:])
  assert result.returncode == 0, (f"`python {shown} ...` exited {result.returncode}:\n"
                                  f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
  return result.stdout, result.stderr


def _train(config, workdir, *overrides, code=None):
  entry = ["-c", code] if code else ["-m", "sdict_jax.train"]
  return _run(*entry, "--config", os.path.join(ROOT, "configs", config),
              "--workdir", str(workdir), *_tiny(*overrides))


def _evaluate(workdir, split, *flags):
  return _run("-m", "sdict_jax.evaluate", "--workdir", str(workdir), "--split", split,
              "--scorers=BLEU,CIDEr", *flags)


def _params(workdir, step):
  """{path: array} of the parameters in a run's checkpoint of `step`."""
  import jax
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(
      os.path.join(str(workdir), "checkpoints", str(step), "state"))
  name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", k)))
                               for k in path)
  return {name(path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(state["params"])[0]}


def _init_summary(stdout):
  """(source, step, loaded, afresh paths) from the fine-tuning run's init_from line."""
  match = SUMMARY.search(stdout)
  assert match, f"no init_from summary in the run's output:\n{stdout[-3000:]}"
  source, step, loaded, fresh, names = match.groups()
  fresh_paths = re.findall(r"(?:^|; )(\S+) \(", names or "")
  assert len(fresh_paths) == int(fresh), match.group(0)
  return source, int(step), int(loaded), fresh_paths


def _pairs(colors):
  return [(f"{color} {thing}", f"a {color} {thing} in the picture")
          for color in colors for thing in THINGS]


def _write_tar(path, pairs):
  test_shards._write_tar(path, [
      (f"{i:09d}.{extension}", data) for i, (key, caption) in enumerate(pairs)
      for extension, data in (("jpg", test_shards._image((40, 32), COLORS[key.split()[0]])),
                              ("txt", caption.encode()))])


VQA_QUESTIONS = [q for subset in (test_vqav2.TRAIN, test_vqav2.VAL)
                 for qs in subset.values() for _, q, _, _, _ in qs] + [
                     q for qs in test_submission.TEST.values() for _, q in qs]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """(workdir, tokenizer) of a tiny configs/pretrain.py run on ArrayRecord shards
  converted from webdataset tars: 30 training pairs, 6 held out."""
  root = tmp_path_factory.mktemp("pretrain")
  filters = shards.Filters(min_image_side=16)
  for split, colors in (("train", list(COLORS)[:5]), ("heldout", list(COLORS)[5:])):
    _write_tar(str(root / f"{split}.tar"), _pairs(colors))
    report = shards.convert(str(root / split), num_shards=2,
                            tars=[str(root / f"{split}.tar")], filters=filters)
    assert report["written"] == len(colors) * len(THINGS), report
  # One tokenizer for the pre-training captions and the questions to come: the
  # fine-tuning runs must use the pre-training one.
  tokenizer = test_data_configs._tokenizer(
      root, [caption for _, caption in _pairs(COLORS)] + VQA_QUESTIONS)
  workdir = root / "run"
  _train("pretrain.py", workdir, f"--config.data.train_shards={root / 'train'}",
         f"--config.data.validation_shards={root / 'heldout'}",
         f"--config.data.tokenizer={tokenizer}",
         f"--config.train.steps={PRETRAIN_STEPS}")
  return workdir, tokenizer


@pytest.mark.slow
def test_vqav2_fine_tuned_from_pretraining_writes_a_valid_test_dev_file(
    pretrained, tmp_path):
  pretrain_dir, tokenizer = pretrained
  vqa_dir, coco_dir, cache_dir = tmp_path / "vqa", tmp_path / "coco", tmp_path / "cache"
  os.makedirs(vqa_dir)
  test_vqav2._write_subset(str(vqa_dir), str(coco_dir), "train2014", test_vqav2.TRAIN)
  test_vqav2._write_subset(str(vqa_dir), str(coco_dir), "val2014", test_vqav2.VAL)
  test_submission._write_test_questions(str(vqa_dir), "test2015")
  test_submission._write_test_questions(str(vqa_dir), "test-dev2015",
                                        test_submission.TEST_DEV)
  test_submission._write_test_images(str(coco_dir), test_submission.TEST)
  answers = vqav2.load("train", vqa_dir=str(vqa_dir), coco_dir=str(coco_dir),
                       cache_dir=str(cache_dir),
                       answer_vocab_size=ANSWER_VOCAB_SIZE).answer_vocab

  # Fine-tune; a checkpoint every step, to see the state its first update started
  # from: the warm-up starts at learning rate 0 (the fine-tune's own schedule, not
  # the source's), so step 1 holds exactly what init_from put in.
  workdir = tmp_path / "vqa_run"
  stdout, _ = _train("vqav2.py", workdir, f"--config.init_from={pretrain_dir}",
                     f"--config.data.tokenizer={tokenizer}",
                     f"--config.data.vqa_dir={vqa_dir}",
                     f"--config.data.coco_dir={coco_dir}",
                     f"--config.data.cache_dir={cache_dir}",
                     f"--config.data.answer_vocab_size={ANSWER_VOCAB_SIZE}",
                     "--config.train.checkpoint_every=1")
  source, step, loaded, fresh = _init_summary(stdout)
  pretrained_params = _params(pretrain_dir, PRETRAIN_STEPS)
  assert (source, step) == (str(pretrain_dir), PRETRAIN_STEPS)
  # The answer classifier is new (this data's answers); everything else is loaded.
  assert sorted(fresh) == ["vqa_head_1/bias", "vqa_head_1/kernel"]
  assert loaded == len(pretrained_params) - len(fresh)
  start = _params(workdir, 1)
  assert start["vqa_head_1/kernel"].shape[-1] == len(answers)
  assert pretrained_params["vqa_head_1/kernel"].shape[-1] == 1  # no answers there
  vision = [p for p in start if p.startswith("vision_") and p.endswith("kernel")]
  assert vision
  for path in start:
    if path not in fresh:
      np.testing.assert_array_equal(start[path], pretrained_params[path], err_msg=path)

  _evaluate(workdir, "test-dev")
  results_file = os.path.join(
      workdir, "eval_test-dev", submission.vqa_results_file("test-dev2015", "sdict"))
  with open(results_file) as f:
    results = json.load(f)
  with open(vqa_dir / vqav2.QUESTIONS_FILE.format(subset="test2015")) as f:
    official = [q["question_id"] for q in json.load(f)["questions"]]
  with open(vqa_dir / vqav2.QUESTIONS_FILE.format(subset="test-dev2015")) as f:
    test_dev = [q["question_id"] for q in json.load(f)["questions"]]
  # The test-dev file answers every test2015 question (EvalAI scores the test-dev
  # ones); those outside test-dev get ''.
  submission.validate_vqa_results(results, official,
                                  allow_empty=set(official) - set(test_dev))
  predicted = {r["question_id"]: r["answer"] for r in results}
  assert all(predicted[q] in answers for q in test_dev), (predicted, answers)


@pytest.mark.slow
def test_coco_captions_fine_tuned_from_pretraining_writes_a_valid_test2014_file(
    pretrained, tmp_path):
  pretrain_dir, tokenizer = pretrained
  workdir = tmp_path / "caption_run"
  stdout, _ = _train("coco_caption.py", workdir, f"--config.init_from={pretrain_dir}",
                     f"--config.data.tokenizer={tokenizer}",
                     f"--config.data.data_dir={tmp_path / 'tfds'}",
                     code=MOCKED_COCO_TRAIN)
  source, step, loaded, fresh = _init_summary(stdout)
  # Captions need no new head: the whole pre-trained model carries over.
  assert (source, step, fresh) == (str(pretrain_dir), PRETRAIN_STEPS, [])
  assert loaded == len(_params(pretrain_dir, PRETRAIN_STEPS))

  coco_dir = tmp_path / "coco"
  test_submission._write_test2014(str(coco_dir), test_submission.TEST2014)
  _evaluate(workdir, "test2014", f"--coco_dir={coco_dir}")
  results_file = os.path.join(workdir, "eval_test2014",
                              submission.caption_results_file("test2014", "sdict"))
  with open(results_file) as f:
    results = json.load(f)
  with open(coco_dir / coco.IMAGE_INFO_FILE) as f:
    official = [image["id"] for image in json.load(f)["images"]]
  # A model trained for a few steps may end a caption at once: '' is declared.
  assert all(isinstance(r.get("caption"), str) for r in results), results
  submission.validate_caption_results(
      results, official, allow_empty=[r["image_id"] for r in results if not r["caption"]])
