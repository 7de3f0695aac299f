r"""SDict-VLM at 1.1B parameters: K = 128 atoms, 24 SDict blocks (12/4/4/4), on VQAv2.

  python -m sdict_jax.train --config configs/sdict_1p1b.py --workdir runs/sdict_1p1b \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco \
      --config.data.tokenizer=/data/spm/web.model

Data as in configs/vqav2.py, with the 32k SentencePiece model of configs/pretrain.py
(whose caption pre-training reuses `model_config()`). On a cluster: launch/README.md.

Size: width 2176 gives 1,071,111,741 parameters (jax.eval_shape, nothing allocated)
with a 32,000-piece vocabulary and 3,129 VQA answers; tests/test_model_size.py checks
1.1B ± 5 %. 384 px images in 16 px patches make a 24 x 24 grid, whose 290 distinct
real 2-D frequencies hold K = 128 atoms (224 px would give 100).

Memory, checked on a laptop without an accelerator (8 fake CPU devices; nothing
allocated; the real training step of train.py compiled ahead of time):

  python -m sdict_jax.compile_check --config configs/sdict_1p1b.py --devices 8

(prints per-device arguments, outputs and temporaries; not yet recorded here)

Runtime and accuracy: not measured (an accelerator-sized run).
"""

import ml_collections

VOCAB_SIZE = 32_000  # SentencePiece, as trained by sdict_jax.data.train_tokenizer
NUM_ANSWERS = 3_129  # VQAv2 convention


def model_config():
  """The 1.1B model block, shared with configs/pretrain.py."""
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
      image_size=384,
      max_text_len=24,
      max_caption_len=32,
      worker_count=16,
      augment="crop",
      crop_min_scale=0.5,
      randaugment_ops=2,
      randaugment_magnitude=9,
  )

  config.model = model_config()

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
