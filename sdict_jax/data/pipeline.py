"""Grain input pipeline: raw example dicts -> model batches.

  source -> (source index, raw example) -> shard -> [train: shuffle -> repeat]
         -> encode one example (train: random choices; eval: fixed) -> batch
         -> IterDataset (read threads) -> [optional multi-process prefetch]

One raw example carries several captions, questions and objects; one model example
uses one of each. Training picks them with the per-record RNG that Grain derives from the
seed and the record's position, so the stream is deterministic and the iterator state
(`it.get_state()` / `it.set_state(...)`) is all a checkpoint needs. Evaluation picks
caption 0, question `index % n_questions` and object `index % n_objects`, where `index` is
the example's position in the source; evaluators read all references from the source by
`example_id` themselves.

Model batch (leading dimension B):
  image          float32 [B, S, S, 3] in [0, 1]
  question       int32 [B, max_text_len]       word ids, 0 = pad, no BOS/EOS
  answer_scores  float32 [B, n_answers]        VQAv2 soft score min(1, count / 3)
                 (training with questions_per_image=Q > 1: [B, Q, ...] and has_vqa
                 [B, Q], Q distinct questions of the image, has_vqa 0 where it has
                 fewer)
  refexp         int32 [B, max_text_len]
  box            float32 [B, 4]                (ymin, xmin, ymax, xmax) in [0, 1]
  caption_in     int32 [B, max_caption_len]    [BOS, w1 .. wn, pad ...]
  caption_out    int32 [B, max_caption_len]    [w1 .. wn, EOS, pad ...]
  has_vqa, has_caption, has_box  float32 [B]   1 where the raw example has the task
  example_id     int32 [B]
  with regions_per_image=R > 0 also every box of the image, up to R (training: a
  random R of them), each with the text that names it (the region-words loss;
  region_text: the raw field it comes from, "refexps" or e.g. "descriptions"):
  region_texts   int32 [B, R, max_text_len]
  region_boxes   float32 [B, R, 4]
  has_region     float32 [B, R]                0 in the slots past the image's boxes
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

from absl import flags
import grain
import numpy as np
from PIL import Image

from sdict_jax import metrics
from sdict_jax.data import tokenizer as tokenizer_lib

# (image_uint8 [H, W, 3], rng) -> image_uint8: the training augmentation hook.
ImageTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _padded(ids: list[int], length: int) -> np.ndarray:
  out = np.zeros(length, np.int32)
  ids = ids[:length]
  out[:len(ids)] = ids
  return out


def _as_rgb(image) -> np.ndarray:
  """uint8 [H, W, 3] from a grey, grey+channel or RGBA image."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def _resized(image: np.ndarray, size: int) -> np.ndarray:
  """float32 [size, size, 3] in [0, 1]; resampled (bilinear) only when needed."""
  if image.shape[:2] != (size, size):
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
  return image.astype(np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class ExampleEncoder:
  """Turns one (source index, raw example) pair into one model example (no batch dim).

  A plain picklable object, so the pipeline can run in Grain worker processes.
  """
  tokenizer: tokenizer_lib.Tokenizer
  answer_index: dict[str, int]
  image_size: int
  max_text_len: int
  max_caption_len: int
  image_transform: ImageTransform | None = None
  normalize_answer: Callable[[str], str] = metrics.normalize_answer
  questions_per_image: int = 1
  regions_per_image: int = 0
  region_text: str = "refexps"  # the raw field naming each box in the region fields

  def train_example(self, indexed: tuple[int, dict], rng: np.random.Generator) -> dict:
    index, raw = indexed
    choose = lambda n: int(rng.integers(n)) if n else 0
    image = _as_rgb(raw["image"])
    if self.image_transform is not None:
      image = self.image_transform(image, rng)
    caption = choose(len(raw.get("captions", ())))
    n_questions = len(raw.get("questions", ()))
    question = (choose(n_questions) if self.questions_per_image == 1 else
                rng.permutation(n_questions)[:self.questions_per_image].tolist())
    obj = choose(len(raw.get("refexps", ())))
    # Drawn last, and only when asked for: the stream of every other choice stays
    # the same with or without regions.
    regions = (rng.permutation(len(raw.get(self.region_text, ())))[
        :self.regions_per_image].tolist() if self.regions_per_image else None)
    return self._encode(index, raw, image, caption=caption, question=question,
                        obj=obj, regions=regions)

  def eval_example(self, indexed: tuple[int, dict]) -> dict:
    index, raw = indexed
    n_questions, n_objects = len(raw.get("questions", ())), len(raw.get("refexps", ()))
    n_regions = min(len(raw.get(self.region_text, ())), self.regions_per_image)
    return self._encode(index, raw, _as_rgb(raw["image"]), caption=0,
                        question=index % n_questions if n_questions else 0,
                        obj=index % n_objects if n_objects else 0,
                        regions=(list(range(n_regions)) if self.regions_per_image
                                 else None))

  def answer_scores(self, answers: list[str]) -> np.ndarray:
    """VQAv2 soft scores; answers outside the vocabulary are dropped."""
    scores = np.zeros(len(self.answer_index), np.float32)
    # Each distinct raw answer normalised once: the ten annotators mostly agree,
    # and normalising every copy was half of the shapes pipeline's encoding time.
    counts = collections.Counter()
    for answer, count in collections.Counter(answers).items():
      counts[self.normalize_answer(answer)] += count
    for answer, count in counts.items():
      if answer in self.answer_index:
        scores[self.answer_index[answer]] = min(1.0, count / 3)
    return scores

  def _question(self, questions, answers, question: int | None):
    """(word ids, answer scores, has_vqa) of one question; None: an empty slot."""
    if question is None:
      return (np.zeros(self.max_text_len, np.int32),
              np.zeros(len(self.answer_index), np.float32), np.float32(0))
    return (_padded(self.tokenizer.encode(questions[question]), self.max_text_len),
            self.answer_scores(answers[question]), np.float32(1))

  def _regions(self, texts, boxes, regions: list[int]) -> dict[str, np.ndarray]:
    """The region fields (module doc) of the objects `regions`, padded to R slots."""
    slots = self.regions_per_image
    out = {"region_texts": np.zeros((slots, self.max_text_len), np.int32),
           "region_boxes": np.zeros((slots, 4), np.float32),
           "has_region": np.zeros(slots, np.float32)}
    for slot, obj in enumerate(regions):
      out["region_texts"][slot] = _padded(self.tokenizer.encode(texts[obj]),
                                          self.max_text_len)
      out["region_boxes"][slot] = boxes[obj]
      out["has_region"][slot] = 1.0
    return out

  def _encode(self, index: int, raw: dict, image: np.ndarray, *, caption: int,
              question: int | list[int], obj: int,
              regions: list[int] | None = None) -> dict[str, Any]:
    """One model example; `question` a list: that many questions, stacked;
    `regions` a list: the region fields of those objects."""
    captions, questions = raw.get("captions", []), raw.get("questions", [])
    answers, refexps = raw.get("answers", []), raw.get("refexps", [])
    boxes = np.asarray(raw.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    if len(answers) != len(questions):
      raise ValueError(f"Example {raw.get('id')}: {len(questions)} questions but "
                       f"{len(answers)} answer lists; each question needs one list.")
    if refexps and len(refexps) != len(boxes):
      raise ValueError(f"Example {raw.get('id')}: {len(refexps)} refexps but "
                       f"{len(boxes)} boxes; each box needs one referring expression.")
    tok, text_len, caption_len = self.tokenizer, self.max_text_len, self.max_caption_len
    has_caption, has_box = bool(captions), bool(refexps)
    words = tok.encode(captions[caption])[:caption_len - 1] if has_caption else []
    if isinstance(question, list):  # the slots past the image's questions stay empty
      slots = question + [None] * (self.questions_per_image - len(question))
      vqa = [self._question(questions, answers, q) for q in slots]
      question_ids, answer_scores, has_vqa = (np.stack(v) for v in zip(*vqa))
    else:
      question_ids, answer_scores, has_vqa = self._question(
          questions, answers, question if questions else None)
    example = {
        "image": _resized(image, self.image_size),
        "question": question_ids,
        "answer_scores": answer_scores,
        "refexp": _padded(tok.encode(refexps[obj]) if has_box else [], text_len),
        "box": boxes[obj] if has_box else np.zeros(4, np.float32),
        "caption_in": _padded([tok.bos_id] + words if has_caption else [], caption_len),
        "caption_out": _padded(words + [tok.eos_id] if has_caption else [], caption_len),
        "has_vqa": has_vqa,
        "has_caption": np.float32(has_caption),
        "has_box": np.float32(has_box),
        "example_id": np.int32(raw.get("id", index)),  # sources without ids: position
    }
    if regions is not None:
      texts = raw.get(self.region_text, [])
      # A misnamed field fails here, not as a silent zero loss (a source with no
      # boxes at all has none to name: has_region stays 0).
      if len(texts) != len(boxes):
        raise ValueError(f"Example {raw.get('id')}: {len(texts)} {self.region_text} "
                         f"but {len(boxes)} boxes; data.region_text names a field with "
                         f"one text per box.")
      example.update(self._regions(texts, boxes, regions))
    return example


def _with_source_index(index: int, raw: dict) -> tuple[int, dict]:
  return index, raw


def make_dataset(source, *, tokenizer: tokenizer_lib.Tokenizer, answer_vocab: list[str],
                 image_size: int, batch_size: int, max_text_len: int,
                 max_caption_len: int, seed: int, train: bool,
                 num_epochs: int | None = None, image_transform: ImageTransform | None = None,
                 normalize_answer: Callable[[str], str] = metrics.normalize_answer,
                 shard_index: int = 0, shard_count: int = 1, drop_remainder: bool = True,
                 questions_per_image: int = 1, regions_per_image: int = 0,
                 region_text: str = "refexps",
                 worker_count: int = 0, read_threads: int = 4,
                 prefetch_batches: int = 8) -> grain.IterDataset:
  """Batches of model examples from a random-access source of raw example dicts.

  Args:
    source: random-access source (`len`, `[index]`) of raw example dicts.
    seed: seeds the shuffle and the per-record choices/augmentations (train only).
    train: shuffle, repeat `num_epochs` times (None: forever), random choices and
      `image_transform`; else one ordered pass with fixed choices (see module doc).
    questions_per_image: training examples carry this many questions of their
      image (see the model batch above); evaluation always one.
    regions_per_image: R > 0 adds the region fields (model batch above): up to R
      boxes of the image, each with the text that names it.
    region_text: the raw field whose texts name the boxes in the region fields
      ("refexps", or e.g. the shapes source's "descriptions").
    shard_index, shard_count: this host takes source indices
      `shard_index::shard_count` (disjoint shards for multi-host input).
    worker_count: processes for `mp_prefetch`; 0 reads in this process (threads only).
    read_threads, prefetch_batches: in-process parallelism and buffer (in batches).
  Returns:
    A `grain.IterDataset`; `iter()` gives a checkpointable iterator.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"Need 0 <= shard_index < shard_count; got shard_index="
                     f"{shard_index}, shard_count={shard_count}.")
  if batch_size < 1 or max_text_len < 1 or max_caption_len < 2:
    raise ValueError(f"Need batch_size >= 1, max_text_len >= 1 and max_caption_len >= 2 "
                     f"(room for BOS/EOS); got {batch_size}, {max_text_len}, "
                     f"{max_caption_len}.")
  encoder = ExampleEncoder(
      tokenizer=tokenizer, answer_index={a: i for i, a in enumerate(answer_vocab)},
      image_size=image_size, max_text_len=max_text_len, max_caption_len=max_caption_len,
      image_transform=image_transform, normalize_answer=normalize_answer,
      questions_per_image=questions_per_image if train else 1,
      regions_per_image=regions_per_image, region_text=region_text)
  ds = grain.MapDataset.source(source).map_with_index(_with_source_index)
  ds = ds[shard_index::shard_count]
  if train:
    # Independent streams for the shuffle and the per-record RNG, different per shard.
    shuffle_seed, map_seed = (int(s) for s in
                              np.random.SeedSequence([seed, shard_index]).generate_state(2))
    ds = ds.shuffle(seed=shuffle_seed).repeat(num_epochs)
    ds = ds.random_map(encoder.train_example, seed=map_seed)
  else:
    ds = ds.map(encoder.eval_example)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=prefetch_batches))
  if worker_count > 0:
    # Grain 0.2.x workers read absl flags, which fail unless parsed (google/grain#1355);
    # entry points using absl.app parse them, scripts and tests do not.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds
