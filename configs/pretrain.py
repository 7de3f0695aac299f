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

Then fine-tune from it (the paper's recipe; sdict_jax/init_from.py, README
"Fine-tuning from a pre-trained run"), with this run's tokenizer:

  python -m sdict_jax.train --config configs/vqav2.py --workdir runs/vqav2 \
      --config.init_from=runs/pretrain --config.data.tokenizer=/data/spm/web.model \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco
  python -m sdict_jax.train --config configs/coco_caption.py \
      --workdir runs/coco_caption --config.init_from=runs/pretrain \
      --config.data.tokenizer=/data/spm/web.model --config.data.data_dir=/data/tfds

Model: `model_config()`, shared with configs/vqav2.py and configs/coco_caption.py so
that their runs can start from this one's checkpoint (width 384; configs/sdict_1p1b.py
is the 1.1B scale-up). Runtime and results: not measured yet.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """The model pre-trained here and fine-tuned by vqav2.py and coco_caption.py.

  One block for the three, so that a fine-tuning run can start from this one's
  checkpoint: the real-image size these configs had (width 384, K 64, 16-pixel
  patches), with the deeper of their text/fusion stacks (VQA) and of their decoders
  (captions). Pre-training on captions leaves the text encoder to VQA fine-tuning.
  """
  return ml_collections.ConfigDict(dict(
      mixer="sdict",  # "sdict" | "attention" | "fnet"
      width=384,
      mlp_ratio=4,
      num_atoms=64,
      # None: num_atoms (a 14 x 14 grid has 100 real frequencies); set it per run,
      # to the same value when fine-tuning.
      vision_atoms=ml_collections.config_dict.placeholder(int),
      patch_size=16,  # 14 x 14 patches at 224 px
      vision_layers=6,
      text_layers=2,
      fusion_layers=4,
      decoder_layers=4,
      num_heads=6,  # attention baseline only
      ridge=1e-3,
      sdict_method="dense",
      tie_vision_atoms=False,
      vision_position=True,
      question_gate=True,  # as configs/shapes.py (README, "The question reaches ...")
      max_text_len=64,
      # Caption positions for pre-training's 48-token captions, so the fine-tuning
      # configs' shorter captions use the same parameter.
      max_caption_len=48,
  ))


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

  config.model = model_config()

  # Start from another run's checkpoint (sdict_jax/init_from.py); "" = from scratch.
  config.init_from = ""
  config.init_from_step = ml_collections.config_dict.placeholder(int)  # None: newest
  config.init_exclude = ()  # regexes of parameter paths to initialise afresh
  config.init_optimizer = True  # carry Adam's moments over with their parameters

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
      sparsity_until_step=0,  # 0: the sparsity term throughout pre-training
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
