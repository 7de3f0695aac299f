r"""SDict-VLM at 1.1B parameters: K = 128 atoms, 24 SDict blocks (12/4/4/4), on VQAv2.

  python -m sdict_jax.train --config configs/sdict_1p1b.py --workdir runs/sdict_1p1b \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco \
      --config.data.tokenizer=/data/spm/web.model

Data as in configs/vqav2.py, with the 32k SentencePiece model of configs/pretrain.py
(whose caption pre-training reuses `model_config()`). On a cluster: launch/README.md.

Size: width 2176 gives 1,070,415,421 parameters (jax.eval_shape, nothing allocated)
with a 32,000-piece vocabulary and 3,129 VQA answers; tests/test_model_size.py checks
1.1B ± 5 %. Images: 256 px in 16 px patches, a 16 x 16 grid whose 130 distinct real
2-D frequencies hold K = 128 atoms (224 px would give 100, too few; 384 px fits the
atoms but not the memory budget below).

Memory, checked on a 2-core machine without an accelerator (8 fake CPU devices; nothing
allocated; the real training step of train.py compiled ahead of time):

  python -m sdict_jax.compile_check --config configs/sdict_1p1b.py --devices 8

  model: sdict, 1,070,415,421 parameters, compute bfloat16; global batch 128 (accum_steps 1)
  mesh: {'data': 1, 'fsdp': 8, 'tensor': 1} on 8 cpu devices
  lowered in 90s, compiled in 178s
  memory per device:
    arguments        1.622 GB
    outputs          1.609 GB
    temporaries     27.051 GB
    aliased          1.609 GB
    total           28.673 GB

(3 to 5 minutes and 2 GB of RAM on a 2-core machine): under 40 GB per device without
activation checkpointing. The CPU compiler keeps bfloat16 activations in float32, so a
bf16 accelerator should need less. 384 px images did not fit the budget (about 49 GB
per device, measured with an earlier version of the operator).

Runtime and accuracy: not measured (an accelerator-sized run).
"""

import ml_collections

VOCAB_SIZE = 32_000  # SentencePiece, as trained by sdict_jax.data.train_tokenizer
NUM_ANSWERS = 3_129  # VQAv2 convention


def model_config():
  """The 1.1B model block (the scale-up of configs/pretrain.py's width-384 model)."""
  return dict(
      mixer="sdict",
      width=2176,
      mlp_ratio=4,
      num_atoms=128,
      patch_size=16,
      vision_layers=12,
      text_layers=4,
      fusion_layers=4,
      decoder_layers=4,  # 12 + 4 + 4 + 4 = 24 SDict blocks
      num_heads=16,  # attention baseline only
      ridge=1e-3,
      sdict_method="dense",
      tie_vision_atoms=False,
      vision_position=True,
      max_text_len=64,
  )


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="vqav2",
      vqa_dir="",  # official JSON files (required)
      coco_dir="",  # COCO 2014 image root (required)
      cache_dir="",
      tokenizer="",  # SentencePiece .model of VOCAB_SIZE pieces (required)
      vocab_size=VOCAB_SIZE,  # for compile_check, which reads no data
      answer_vocab_size=NUM_ANSWERS,
      trainval=False,
      minival_images=1000,
      image_size=256,  # 16 x 16 patches of 16 px (see the docstring)
      max_text_len=24,
      max_caption_len=32,
      worker_count=16,
      augment="crop",
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
      caption=0.0,  # VQAv2 has no captions (configs/pretrain.py trains them)
      vqa=1.0,
      box=0.0,
      label_smoothing=0.1,
      recon_start=0.1,
      recon_floor=0.01,
      recon_anneal_steps=5000,
      recon_noise=0.1,
      sparsity=1e-4,
  )

  config.optim = dict(
      lr=3e-4,
      warmup_steps=2000,
      weight_decay=0.05,
      clip_norm=1.0,
      b1=0.9,
      b2=0.98,
      accum_steps=1,
  )

  config.train = dict(
      steps=70_000,
      batch_size=128,
      compute_dtype="bfloat16",  # float32 parameters and optimizer state
      log_every=100,
      eval_every=5000,
      checkpoint_every=1000,
      keep_checkpoints=3,
  )

  config.eval = dict(
      num_examples=10_000,
      batch_size=256,
      max_decode_len=32,
  )

  # Parameters and optimizer state split 8 ways (ZeRO-3), data-parallel beyond.
  config.mesh = dict(data=-1, fsdp=8, tensor=1)
  return config
