r"""SDict-VLM captioning on COCO (Karpathy splits), caption loss only, fine-tuned from
caption pre-training as in the paper.

The pair of runs (the first is configs/pretrain.py's; the second reads its newest
checkpoint and uses its tokenizer):

  python -m sdict_jax.train --config configs/pretrain.py --workdir runs/pretrain \
      --config.data.train_shards='/data/web/shards/data-*.array_record' \
      --config.data.validation_shards=/data/web/heldout \
      --config.data.tokenizer=/data/spm/web.model
  python -m sdict_jax.train --config configs/coco_caption.py \
      --workdir runs/coco_caption --config.init_from=runs/pretrain \
      --config.data.tokenizer=/data/spm/web.model --config.data.data_dir=/data/tfds

Fine-tuning, as the paper: the pre-trained parameters and Adam moments carry over,
the peak learning rate is 1e-4 (pre-training: 1e-3) and the sparsity term stops after
the first epoch (`loss.sparsity_until_step`, ~1,770 steps: 113,287 Karpathy train
images at batch 64). The model block is configs/pretrain.py's `model_config()`, so
the checkpoint fits; the tokenizer must be the pre-training one (init_from stops with
an error naming both otherwise). A stopped run resumes from runs/coco_caption, not
runs/pretrain.

Once before (see sdict_jax/data/coco.py):

  python -m sdict_jax.data.coco --data_dir=/data/tfds    # downloads ~20 GB

From scratch instead (no --config.init_from), raise the learning rate
(--config.optim.lr=1e-3) and, if you like, train a tokenizer on COCO alone:

  python -m sdict_jax.data.train_tokenizer --config configs/coco_caption.py \
      --config.data.data_dir=/data/tfds --output=/data/spm/coco --vocab_size=8000 \
      --max_texts=200000

Evaluation during training captions the Karpathy `val` split (5,000 images). Runtime
and CIDEr: not measured yet (an accelerator-sized run).
"""

import ml_collections

from sdict_jax import config_files


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="coco_captions",
      data_dir="",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      tokenizer="",  # SentencePiece .model (required): pre-training's when fine-tuning
      image_size=224,
      max_text_len=16,
      max_caption_len=32,
      worker_count=8,  # JPEG decoding needs processes
      augment="crop",  # "" | "crop" | "randaugment" | "crop+randaugment"
      crop_min_scale=0.5,
      randaugment_ops=2,
      randaugment_magnitude=9,
  )

  # The pre-trained model (init_from needs the same parameters, heads aside).
  config.model = config_files.sibling(__file__, "pretrain").model_config()

  # Start from another run's checkpoint (sdict_jax/init_from.py); "" = from scratch.
  config.init_from = ""  # e.g. runs/pretrain
  config.init_from_step = ml_collections.config_dict.placeholder(int)  # None: newest
  config.init_exclude = ()  # regexes of parameter paths to initialise afresh
  config.init_optimizer = True  # carry Adam's moments over with their parameters

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
      sparsity_until_step=1770,  # off after the first epoch (the paper's fine-tuning)
  )

  config.optim = dict(
      lr=1e-4,  # fine-tuning's lower peak (pre-training: 1e-3)
      warmup_steps=1000,
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
