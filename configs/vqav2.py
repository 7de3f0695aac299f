r"""SDict-VLM on VQAv2 (official question/annotation files + COCO 2014 images).

  python -m sdict_jax.train --config configs/vqav2.py --workdir runs/vqav2 \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco \
      --config.data.tokenizer=/data/spm/vqa.model

`vqa_dir` holds v2_OpenEnded_mscoco_{train,val}2014_questions.json and
v2_mscoco_{train,val}2014_annotations.json; `coco_dir` holds train2014/ and val2014/.
The tokenizer, once before (reads only the question texts, no images):

  python -m sdict_jax.data.train_tokenizer --config configs/vqav2.py \
      --config.data.vqa_dir=/data/vqav2 --config.data.coco_dir=/data/coco \
      --output=/data/spm/vqa --vocab_size=8000

Train on train2014 + val2014 (minus a 1,000-image minival that becomes the validation
split) with --config.data.trainval=True. Runtime and VQA accuracy: not measured yet (an
accelerator-sized run).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = dict(
      name="vqav2",
      vqa_dir="",  # official JSON files (required)
      coco_dir="",  # COCO 2014 image root (required)
      cache_dir="",  # answer-vocabulary cache; "" = ~/.cache/sdict_jax
      tokenizer="",  # SentencePiece .model (required; see the docstring)
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

  config.model = dict(
      mixer="sdict",  # "sdict" | "attention" | "fnet"
      width=384,
      mlp_ratio=4,
      num_atoms=64,
      patch_size=16,  # 14 x 14 patches at 224
      vision_layers=6,
      text_layers=2,
      fusion_layers=4,
      decoder_layers=1,  # unused without caption loss, kept small
      num_heads=6,  # attention baseline only
      ridge=1e-3,
      sdict_method="dense",
      tie_vision_atoms=False,
      vision_position=True,
      max_text_len=64,
  )

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
