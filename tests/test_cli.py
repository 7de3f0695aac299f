"""End to end: train a tiny run, then `evaluate` and `predict` from its workdir, and
the errors a user meets (missing or non-image file, a workdir with no checkpoint)."""

import json
import math
import os
import runpy
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest

from sdict_jax.data import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIG = textwrap.dedent("""\
    from configs import shapes

    def get_config():
      config = shapes.get_config()
      config.data.image_size = 32
      config.model.update(width=32, num_atoms=8, vision_atoms=None, vision_layers=1,
                          text_layers=1, fusion_layers=1, decoder_layers=1)
      config.train.update(steps=2, batch_size=2, log_every=1, eval_every=2,
                          checkpoint_every=2)
      config.eval.update(num_examples=2, batch_size=2, max_decode_len=8)
      config.optim.warmup_steps = 1
      return config
    """)


def run_module(module, *args, timeout=600):
  # CPU: a child on a GPU would contend with this process for its memory.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir trained for 2 steps by `python -m sdict_jax.train`."""
  root = tmp_path_factory.mktemp("cli")
  config_path = root / "tiny.py"
  config_path.write_text(TINY_CONFIG)
  workdir = root / "run"
  result = run_module("sdict_jax.train", f"--config={config_path}",
                      f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  if not (workdir / "config.json").exists():  # older train.py: save it here
    config = runpy.run_path(str(config_path))["get_config"]()
    (workdir / "config.json").write_text(config.to_json())
  return workdir


def write_image(path, height, width):
  pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
  Image.fromarray(pixels).save(path)
  return path


@pytest.mark.slow
def test_evaluate_writes_every_score_and_prediction(workdir):
  # The saved config is used (no --config), and --config.x=y overrides it.
  result = run_module("sdict_jax.evaluate", f"--workdir={workdir}", "--split=test",
                      "--num_examples=3", "--decode=beam", "--beam_width=2",
                      "--config.eval.max_decode_len=5",
                      f"--showcase={workdir / 'examples.png'}")
  assert result.returncode == 0, result.stderr[-3000:]
  # The showcase: a PNG of the scored scenes with their captions and answers.
  with Image.open(workdir / "examples.png") as picture:
    assert picture.format == "PNG" and min(picture.size) > 200
    assert np.asarray(picture.convert("L")).std() > 10  # drawn, not blank
  report = json.loads((workdir / "eval_test" / "scores.json").read_text())
  assert report["step"] == 2 and report["split"] == "test"
  assert report["num_examples"] == 3 and report["decode"]["method"] == "beam"
  scores = report["scores"]
  for name in ("bleu4", "cider", "METEOR", "ROUGE-L", "vqa_accuracy", "box_iou"):
    assert math.isfinite(scores[name]), name
  assert any(name.startswith("vqa_accuracy/") for name in scores)
  kinds = {p for p in shapes._QUESTIONS}
  per_kind = [name.split("/")[-1] for name in scores if name.startswith("vqa_accuracy/kind/")]
  assert per_kind and set(per_kind) <= kinds
  lines = (workdir / "eval_test" / "predictions.jsonl").read_text().splitlines()
  predictions = [json.loads(line) for line in lines]
  assert [p["index"] for p in predictions] == [0, 1, 2]
  for prediction in predictions:
    assert len(prediction["caption"].split()) <= 5  # max_decode_len override
    assert prediction["references"]
    assert prediction["answer"] in shapes.answer_vocabulary()
    assert prediction["question_kind"] in kinds
  assert "METEOR" in result.stdout


@pytest.mark.slow
def test_vision_probe_reads_out_a_trained_run(workdir):
  result = run_module("sdict_jax.vision_probe", f"--workdirs={workdir}", "--at_init")
  assert result.returncode == 0, result.stderr[-3000:]
  trained, initial = result.stdout.strip().splitlines()[-2:]
  assert trained.startswith(f"{workdir} (step 2)"), trained
  assert initial.startswith(f"{workdir} (step 0)"), initial
  for line in trained, initial:
    scores = dict(part.split() for part in line.split(": ", 1)[1].split(", "))
    assert set(scores) == {"lone_shape", "left_shape", "object_shape"}
    assert all(0 <= float(v) <= 1 for v in scores.values())


@pytest.mark.slow
def test_predict_captions_an_image_of_any_size(workdir, tmp_path):
  image = write_image(tmp_path / "photo.png", 37, 53)  # not a multiple of the patch
  result = run_module("sdict_jax.predict", f"--workdir={workdir}", f"--image={image}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("caption: ")


@pytest.mark.slow
def test_predict_answers_with_top5_probabilities(workdir, tmp_path):
  image = write_image(tmp_path / "photo.jpg", 120, 90)
  result = run_module("sdict_jax.predict", f"--workdir={workdir}", f"--image={image}",
                      "--question=how many shapes are there")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == "question: how many shapes are there"
  answer = lines[1].removeprefix("answer: ")
  top = [line.split() for line in lines[2:]]
  assert len(top) == 5 and top[0][1] == answer
  probabilities = [float(p) for p, _ in top]
  assert probabilities == sorted(probabilities, reverse=True)
  assert 0 < sum(probabilities) <= 1.001
  assert {a for _, a in top} <= set(shapes.answer_vocabulary())


@pytest.mark.parametrize("problem", ["missing image", "not an image",
                                     "no checkpoint", "evaluate: no checkpoint"])
def test_bad_input_gets_one_clear_error(problem, tmp_path):
  empty_workdir = tmp_path / "empty"
  empty_workdir.mkdir()
  image = write_image(tmp_path / "photo.png", 32, 32)
  text_file = tmp_path / "notes.jpg"
  text_file.write_text("not a picture")
  module, args, expected = {
      "missing image": ("sdict_jax.predict", [f"--image={tmp_path / 'nope.png'}"],
                        "no such file"),
      "not an image": ("sdict_jax.predict", [f"--image={text_file}"],
                       "is not an image"),
      "no checkpoint": ("sdict_jax.predict", [f"--image={image}"],
                        "holds no checkpoint"),
      "evaluate: no checkpoint": ("sdict_jax.evaluate", [], "holds no checkpoint"),
  }[problem]
  result = run_module(module, f"--workdir={empty_workdir}", *args, timeout=300)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
