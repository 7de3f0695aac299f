"""Each real-data config trains end to end for a few steps on data the test writes.

COCO through tfds.testing.mock_data (in-process: the mock does not cross a
subprocess), VQAv2 from JSON files in the official layout, pre-training from
ArrayRecord shards converted from a webdataset tar.
"""

import json
import os
import subprocess
import sys

import pytest

from sdict_jax.data import shards
from sdict_jax.data import tokenizer as tokenizer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_shards  # noqa: E402  (its tar fixture and filters)
import test_vqav2  # noqa: E402  (its official-layout writer)

tar_path = test_shards.tar_path  # re-exported fixture

TINY = ["--config.data.image_size=32", "--config.data.worker_count=0",
        "--config.data.max_text_len=12", "--config.data.max_caption_len=16",
        "--config.model.width=32", "--config.model.num_atoms=6",
        "--config.model.patch_size=8", "--config.model.vision_layers=1",
        "--config.model.text_layers=1", "--config.model.fusion_layers=1",
        "--config.model.decoder_layers=1", "--config.model.num_heads=2",
        "--config.train.steps=2", "--config.train.batch_size=4",
        "--config.train.log_every=1", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2", "--config.train.compute_dtype=float32",
        "--config.eval.num_examples=4", "--config.eval.batch_size=4",
        "--config.eval.max_decode_len=8", "--config.optim.warmup_steps=1"]


def _tokenizer(tmp_path, texts):
  texts = list(texts) * 20
  return tokenizer_lib.train_sentencepiece(texts, str(tmp_path / "spm"), 64,
                                           hard_vocab_limit=False)


def _run(config, workdir, *overrides):
  command = [sys.executable, "-m", "sdict_jax.train", "--config",
             os.path.join(ROOT, "configs", config), "--workdir", str(workdir),
             *TINY, *overrides]
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return _last_rows(workdir)


def _last_rows(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any("loss" in r for r in rows)
  return rows


@pytest.mark.slow
def test_pretrain_config_trains_on_converted_shards(tar_path, tmp_path):
  out = tmp_path / "shards"
  shards.convert(str(out), num_shards=2, tars=[tar_path], filters=test_shards.FILTERS)
  model = _tokenizer(tmp_path, ["a red bus on a road", "two cats on a sofa",
                                "a plate of food", "people walking in a park"])
  # The shapes model block's 32 vision atoms exceed a 4x4 patch grid's 10.
  rows = _run("pretrain.py", tmp_path / "run", f"--config.data.train_shards={out}",
              f"--config.data.validation_shards={out}",
              f"--config.data.tokenizer={model}", "--config.model.vision_atoms=6")
  assert any("cider" in r for r in rows)


@pytest.mark.slow
def test_vqav2_config_trains_on_official_layout(tmp_path):
  vqa_dir, coco_dir = tmp_path / "vqa", tmp_path / "coco"
  os.makedirs(vqa_dir)
  test_vqav2._write_subset(str(vqa_dir), str(coco_dir), "train2014", test_vqav2.TRAIN)
  test_vqav2._write_subset(str(vqa_dir), str(coco_dir), "val2014", test_vqav2.VAL)
  questions = [q for qs in list(test_vqav2.TRAIN.values()) + list(
      test_vqav2.VAL.values()) for _, q, _, _, _ in qs]
  model = _tokenizer(tmp_path, questions)
  rows = _run("vqav2.py", tmp_path / "run", f"--config.data.vqa_dir={vqa_dir}",
              f"--config.data.coco_dir={coco_dir}",
              f"--config.data.cache_dir={tmp_path / 'cache'}",
              f"--config.data.tokenizer={model}", "--config.data.answer_vocab_size=10")
  assert any("vqa_accuracy" in r for r in rows)


@pytest.mark.slow
def test_coco_caption_config_trains_on_tfds_mock_data(tmp_path):
  import tensorflow_datasets as tfds
  from absl import flags
  from sdict_jax import train
  model = _tokenizer(tmp_path, ["a man riding a horse", "a bowl of fruit on a table",
                                "a dog catching a frisbee", "a train at a station"])
  workdir = tmp_path / "run"
  # absl registers --config.* overrides only on a process's first parse, so the
  # same overrides go into a config file here.
  overrides = [o[len("--config."):].split("=") for o in TINY] + [
      ["data.data_dir", str(tmp_path)], ["data.tokenizer", model]]
  config_file = tmp_path / "coco_tiny.py"
  config_file.write_text(
      "from sdict_jax import config_files\n"
      f"module = config_files.load_module("
      f"{os.path.join(ROOT, 'configs', 'coco_caption.py')!r})\n"
      "def get_config():\n"
      "  config = module.get_config()\n" +
      "".join(f"  config.{key} = type(config.{key})({value!r})\n"
              for key, value in overrides) +
      "  return config\n")
  argv = ["train", "--config", str(config_file), "--workdir", str(workdir)]
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    with tfds.testing.mock_data(num_examples=8):
      train.main([])
  finally:
    flags.FLAGS.unparse_flags()
  rows = _last_rows(workdir)
  assert any("cider" in r for r in rows)
