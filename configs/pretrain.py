r"""SDict-VLM caption pre-training on web-scale image–text shards (ArrayRecord).

  python -m sdict_jax.train --config configs/pretrain.py --workdir runs/pretrain \
      --config.data.train_shards='/data/web/shards/data-*.array_record' \
      --config.data.validation_shards=/data/web/heldout \
      --config.data.tokenizer=/data/spm/web.model

Once before (see sdict_jax/data/shards.py and train_tokenizer.py), e.g. from
img2dataset's webdataset output:

  python -m sdict_jax.data.shards convert --tar '/data/web/raw/*.tar' \
      --output_dir /data/web/shards --num_shards 1024
  python -m sdict_jax.data.train_tokenizer --config configs/pretrain.py \
      --config.data.train_shards='/data/web/shards/data-*.array_record' \
      --output=/data/spm/web --vocab_size=32000

Model: the shapes config's model block for now (configs/sdict_1p1b.py, the 1.1B
target of this config, does not exist yet; reuse its model block once it does).
Runtime and results: not measured yet.
"""

import importlib.util
import os

import ml_collections


def _sibling_config(name: str) -> ml_collections.ConfigDict:
  """get_config() of another file in configs/ (not a package: load it by path)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="shards",
      train_shards="",  # comma-separated globs or folders of .array_record (required)
      validation_shards="",  # held-out shards for evaluation (required)
      tokenizer="",  # SentencePiece .model (required; see the docstring)
      image_size=224,
      max_text_len=16,
      max_caption_len=48,
      worker_count=16,  # JPEG decoding needs processes
      augment="crop",  # "" | "crop" | "randaugment" | "crop+randaugment"
      crop_min_scale=0.5,
      randaugment_ops=2,
      randaugment_magnitude=9,
  )

  config.model = _sibling_config("shapes").model

  config.loss = dict(
      caption=1.0,
      vqa=0.0,  # captions only
      box=0.0,
      label_smoothing=0.1,
      recon_start=0.1,
      recon_floor=0.01,
      recon_anneal_steps=20_000,
      recon_noise=0.1,
      sparsity=1e-4,
  )

  config.optim = dict(
      lr=1e-3,
      warmup_steps=10_000,
      weight_decay=0.05,
      clip_norm=1.0,
      b1=0.9,
      b2=0.98,
      accum_steps=1,
  )

  config.train = dict(
      steps=500_000,
      batch_size=1024,
      compute_dtype="bfloat16",
      log_every=100,
      eval_every=10_000,
      checkpoint_every=2000,
      keep_checkpoints=3,
  )

  config.eval = dict(
      num_examples=5000,
      batch_size=256,
      max_decode_len=32,
  )

  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  return config
