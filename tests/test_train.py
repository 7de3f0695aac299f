"""The training program: config errors, exact resume after SIGKILL, NaN stop."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from ml_collections import ConfigDict

from sdict_jax import config_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name="tiny"):
  from sdict_jax import config_files
  return config_files.get_config(os.path.join(ROOT, "configs", f"{name}.py"))


@pytest.mark.parametrize("name", sorted(
    f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")))
def test_every_config_file_passes_the_checks(name):
  config_checks.validate(_config(name), num_devices=1)


def test_shapes_long_is_the_default_trained_longer():
  default, long = _config("shapes"), _config("shapes_long")
  assert long.train.steps == 3 * default.train.steps
  assert long.loss.recon_anneal_steps == 3 * default.loss.recon_anneal_steps
  for section in ("model", "data", "optim"):
    assert long[section].to_dict() == default[section].to_dict(), section
  assert long.train.batch_size == default.train.batch_size


@pytest.mark.parametrize("field,value,message", [
    ("model.mixer", "transformer", "config.model.mixer='transformer' is unknown"),
    ("data.image_size", 36, "not divisible by config.model.patch_size"),
    ("model.num_atoms", 0, "needs K >= 1"),
    ("model.pool_type", "cls", "pool_type='cls'; use 'tok'"),
    ("model.vqa_readout", "max", "vqa_readout='max'; use 'pool'"),
    ("model.token_pooling", "max", "token_pooling='max'; use 'mean'"),
    ("optim.lr_mults", (("vision_.*", -1.0),), "give (regex, factor >= 0) pairs"),
    ("optim.lr_mults", (("vision_(", 0.1),), "pattern 'vision_(' is not a regex"),
    ("model.vision_atoms", 40, "vision_atoms=40 must lie between num_atoms"),
    ("model.vision_atoms", 0, "vision_atoms=0 must lie between num_atoms"),
    ("train.batch_size", 6, "not divisible by the 4 devices"),
    ("loss.recon_floor", 0.0, "never switched off"),
    ("data.name", "imagenet", "config.data.name='imagenet' is unknown"),
    ("data.questions_per_image", 0, "asks at least 1 question"),
    ("data.regions_per_image", -1, "regions_per_image=-1; use 0"),
    ("data.render", "depth", "only the shapes source renders"),
    ("data.oracle_patch_size", 4, "oracle_patch_size=4 must be config.model.patch_size=8"),
])
def test_bad_config_is_named_with_its_fix(field, value, message):
  config = ConfigDict(_config().to_dict())
  section, key = field.split(".")
  config[section][key] = value
  if key == "oracle_patch_size":
    config.data.render = "oracle"
  with pytest.raises(config_checks.ConfigError, match=message.replace("(", r"\(")
                     .replace(")", r"\)").replace("[", r"\[")):
    config_checks.validate(config, num_devices=4)


def test_token_pooling_without_the_token_readout_is_named():
  config = ConfigDict(_config().to_dict())
  config.model.update(vqa_readout="pool", token_pooling="mean_max")
  with pytest.raises(config_checks.ConfigError,
                     match="set config.model.vqa_readout='tokens'"):
    config_checks.validate(config, num_devices=4)


def _train(workdir, *overrides, wait=True):
  command = [sys.executable, "-m", "sdict_jax.train", "--config",
             os.path.join(ROOT, "configs", "tiny.py"), "--workdir", str(workdir),
             *overrides]
  env = dict(os.environ, PYTHONPATH=ROOT)
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  if not wait:
    return process
  output, _ = process.communicate(timeout=900)
  return process.returncode, output


def test_region_words_without_their_loss_weight_are_named():
  """A config without loss.region_words (e.g. configs/vqav2.py) that turns the
  head on is told to set its weight, not trained with a silent default."""
  config = ConfigDict(_config().to_dict())
  config.model.region_words = True
  del config.loss["region_words"]
  with pytest.raises(config_checks.ConfigError, match="set config.loss.region_words"):
    config_checks.validate(config, num_devices=4)


def test_regions_without_region_words_are_named():
  config = ConfigDict(_config().to_dict())
  config.model.region_words = False
  config.data.regions_per_image = 4
  with pytest.raises(config_checks.ConfigError,
                     match="set config.model.region_words=True"):
    config_checks.validate(config, num_devices=4)


def test_relative_readout_without_what_it_needs_is_named():
  """model.relative_readout reads through object_readout's head and learns where
  objects are from every box (loss.objectness, data.regions_per_image)."""
  config = ConfigDict(_config("shapes").to_dict())
  config.model.object_readout = False
  with pytest.raises(config_checks.ConfigError, match="set config.model.object_readout"):
    config_checks.validate(config, num_devices=4)
  config = ConfigDict(_config("shapes").to_dict())
  del config.loss["objectness"]
  with pytest.raises(config_checks.ConfigError, match="set config.loss.objectness"):
    config_checks.validate(config, num_devices=4)


def test_unknown_region_pooling_is_named():
  config = ConfigDict(_config().to_dict())
  config.model.region_pooling = "max"
  with pytest.raises(config_checks.ConfigError,
                     match="region_pooling='max'; use 'mean'.*or 'tokens'"):
    config_checks.validate(config, num_devices=4)


def test_bad_config_fails_before_any_compute(tmp_path):
  start = time.time()
  code, output = _train(tmp_path, "--config.model.mixer=transformer")
  assert code != 0
  assert "config.model.mixer='transformer' is unknown" in output
  assert not os.path.exists(tmp_path / "checkpoints")


def _losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  by_step = {}
  for row in rows:  # after a resume the re-run steps are logged again: keep the last
    if "loss" in row:
      by_step[row["step"]] = row["loss"]
  return by_step


@pytest.mark.slow
def test_sigkill_and_restart_reproduce_the_uninterrupted_losses(tmp_path):
  steps = ["--config.train.steps=8", "--config.train.eval_every=100"]
  code, output = _train(tmp_path / "straight", *steps)
  assert code == 0, output[-3000:]
  reference = _losses(tmp_path / "straight")
  assert sorted(reference) == [2, 4, 6, 8]

  interrupted = tmp_path / "killed"
  process = _train(interrupted, *steps, wait=False)
  checkpoint = interrupted / "checkpoints" / "4"
  deadline = time.time() + 900
  while not (checkpoint / "_CHECKPOINT_METADATA").exists() and time.time() < deadline:
    if process.poll() is not None:
      break
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  code, output = _train(interrupted, *steps)
  assert code == 0, output[-3000:]
  assert "Resuming from the checkpoint at step" in output
  resumed = _losses(interrupted)
  assert sorted(resumed) == [2, 4, 6, 8]
  for step in reference:
    assert resumed[step] == pytest.approx(reference[step], rel=1e-6), step


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
  code, output = _train(tmp_path, "--config.optim.lr=1e12",
                        "--config.optim.warmup_steps=0",
                        "--config.train.steps=40", "--config.train.log_every=1",
                        "--config.train.checkpoint_every=1",
                        "--config.train.eval_every=100")
  assert code != 0
  message = re.search(r"Loss is (-?inf|nan) at step (\d+)\.", output)
  assert message, output[-3000:]
  assert "last good checkpoint" in output
  kept = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert kept, "the last good checkpoint must stay"
  assert max(kept) < int(message.group(2))
