r"""SDict-VLM on VQAv2 (official question/annotation files + COCO 2014 images),
fine-tuned from caption pre-training as in the paper.

The pair of runs (the first is configs/pretrain.py's; the second reads its newest
checkpoint and uses its tokenizer):

  python -m sdict_jax.train --config configs/pretrain.py --workdir runs/pretrain \
      --config.data.train_shards='/data/web/shards/data-*.array_record' \
      --config.data.validation_shards=/data/web/heldout \
      --config.data.tokenizer=/data/spm/web.model
  python -m sdict_jax.train --config configs/vqav2.py --workdir runs/vqav2 \
      --config.init_from=runs/pretrain --config.data.tokenizer=/data/spm/web.model \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco

Fine-tuning, as the paper: the pre-trained parameters and Adam moments carry over
(the answer head, new, is initialised afresh and listed in the log), the peak
learning rate is 1e-4 (pre-training: 1e-3) and the sparsity term stops after the
first epoch (`loss.sparsity_until_step`, ~3,470 steps: 443,757 train2014 questions at
batch 128). The model block is configs/pretrain.py's `model_config()`, so the
checkpoint fits; the tokenizer must be the pre-training one (init_from stops with an
error naming both otherwise). A stopped run resumes from runs/vqav2, not runs/pretrain.

`vqa_dir` holds v2_OpenEnded_mscoco_{train,val}2014_questions.json and
v2_mscoco_{train,val}2014_annotations.json; `coco_dir` holds train2014/ and val2014/.
From scratch instead (no --config.init_from), raise the learning rate
(--config.optim.lr=1e-3) and, if you like, train a tokenizer on the questions alone:

  python -m sdict_jax.data.train_tokenizer --config configs/vqav2.py \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco \
      --output=/data/spm/vqa --vocab_size=8000

Train on train2014 + val2014 (minus a 1,000-image minival that becomes the validation
split) with --config.data.trainval=True. Runtime and VQA accuracy: not measured yet (an
accelerator-sized run).
"""

import ml_collections

from sdict_jax import config_files


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="vqav2",
      vqa_dir="",  # official JSON files (required)
      coco_dir="",  # COCO 2014 image root (required)
      cache_dir="",  # answer-vocabulary cache; "" = ~/.cache/sdict_jax
      tokenizer="",  # SentencePiece .model (required): pre-training's when fine-tuning
      answer_vocab_size=3129,
      trainval=False,  # train on train2014 + val2014 minus minival
      minival_images=1000,  # held out of val2014 when trainval
      image_size=224,
      max_text_len=24,
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
      caption=0.0,  # VQAv2 has no captions
      vqa=1.0,
      box=0.0,  # no boxes
      label_smoothing=0.1,
      recon_start=0.1,
      recon_floor=0.01,
      recon_anneal_steps=5000,
      recon_noise=0.1,
      sparsity=1e-4,
      sparsity_until_step=3500,  # off after the first epoch (the paper's fine-tuning)
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
      steps=70_000,  # ~20 epochs of 443k train2014 questions at batch 128
      batch_size=128,
      compute_dtype="bfloat16",
      log_every=100,
      eval_every=5000,
      checkpoint_every=1000,
      keep_checkpoints=3,
  )

  config.eval = dict(
      num_examples=10_000,  # val2014 questions scored during training
      batch_size=200,
      max_decode_len=32,
  )

  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  return config
