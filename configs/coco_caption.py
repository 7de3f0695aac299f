r"""SDict-VLM captioning on COCO (Karpathy splits), caption loss only.

  python -m sdict_jax.train --config configs/coco_caption.py --workdir runs/coco_caption \
      --config.data.data_dir=/data/tfds --config.data.tokenizer=/data/spm/coco.model

Once before (see sdict_jax/data/coco.py and train_tokenizer.py):

  python -m sdict_jax.data.coco --data_dir=/data/tfds    # downloads ~20 GB
  python -m sdict_jax.data.train_tokenizer --config configs/coco_caption.py \
      --config.data.data_dir=/data/tfds --output=/data/spm/coco --vocab_size=8000 \
      --max_texts=200000

Evaluation during training captions the Karpathy `val` split (5,000 images). Runtime
and CIDEr: not measured yet (an accelerator-sized run).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="coco_captions",
      data_dir="",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      tokenizer="",  # SentencePiece .model (required; see the docstring)
      image_size=224,
      max_text_len=16,
      max_caption_len=32,
      worker_count=8,  # JPEG decoding needs processes
      augment="crop",  # "" | "crop" | "randaugment" | "crop+randaugment"
      crop_min_scale=0.5,
      randaugment_ops=2,
      randaugment_magnitude=9,
  )

  config.model = dict(
      mixer="sdict",  # "sdict" | "attention" | "fnet"
      width=384,
      mlp_ratio=4,
      num_atoms=64,
      patch_size=16,  # 14 x 14 patches at 224
      vision_layers=6,
      text_layers=1,
      fusion_layers=2,
      decoder_layers=4,
      num_heads=6,  # attention baseline only
      ridge=1e-3,
      sdict_method="dense",
      tie_vision_atoms=False,
      vision_position=True,
      max_text_len=64,
  )

  config.loss = dict(
      caption=1.0,
      vqa=0.0,  # no questions in COCO captions
      box=0.0,  # no boxes
      label_smoothing=0.1,
      recon_start=0.1,
      recon_floor=0.01,
      recon_anneal_steps=5000,
      recon_noise=0.1,
      sparsity=1e-4,
  )

  config.optim = dict(
      lr=1e-3,
      warmup_steps=2000,
      weight_decay=0.05,
      clip_norm=1.0,
      b1=0.9,
      b2=0.98,
      accum_steps=1,
  )

  config.train = dict(
      steps=50_000,  # ~28 epochs of 113k images at batch 64
      batch_size=64,
      compute_dtype="bfloat16",
      log_every=100,
      eval_every=5000,
      checkpoint_every=1000,
      keep_checkpoints=3,
  )

  config.eval = dict(
      num_examples=5000,  # the whole Karpathy val split
      batch_size=100,
      max_decode_len=32,
  )

  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  return config
