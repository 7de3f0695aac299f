"""Data sources by name: config.data -> (random-access source, tokenizer, answers).

Every source yields raw example dicts (see `pipeline.py`), so one pipeline serves
the embedded shapes scenes, COCO captions, VQAv2 and pre-training shards alike.
A source registers a loader with `@register("name")`; `load(config.data, split)`
returns a `DataBundle`.

Splits: every source has 'train', 'validation' and 'test'; the official test sets
without answers are 'test-dev', 'test' and 'test-std' (VQAv2: test-dev2015, test2015)
and 'test2014' (COCO captions; 'val2014' is every val2014 image, with references).
Sources with them also say which official subset a results file of the split is
named after (`source.subset`, see submission.py).
"""

import dataclasses
import os
from typing import Any, Callable

from sdict_jax.data import shapes
from sdict_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass
class DataBundle:
  """What the input pipeline and the model need to know about one data source."""
  source: Any  # grain RandomAccessDataSource of raw example dicts
  tokenizer: tokenizer_lib.Tokenizer
  answer_vocab: list[str]  # VQA answer classes; empty when the source has no VQA


_LOADERS: dict[str, Callable[..., DataBundle]] = {}


def register(name: str):
  def decorator(loader):
    _LOADERS[name] = loader
    return loader
  return decorator


def names() -> list[str]:
  return sorted(_LOADERS)


# Sources whose examples carry questions (zero-shot VQA can use their own split).
WITH_QUESTIONS = ("shapes", "vqav2")


def load(data_config, split: str) -> DataBundle:
  """The bundle for `data_config.name` and `split` (see the module doc)."""
  if data_config.name not in _LOADERS:
    raise ValueError(f"Unknown data source {data_config.name!r}; set config.data.name to "
                     f"one of {names()}.")
  return _LOADERS[data_config.name](data_config, split)


@register("shapes")
def _shapes(data_config, split: str) -> DataBundle:
  sizes = {"train": data_config.get("train_examples"),
           "validation": data_config.get("eval_examples"),
           "test": data_config.get("eval_examples")}
  source = shapes.ShapesSource(split, num_examples=sizes.get(split),
                               image_size=data_config.image_size,
                               seed=data_config.get("seed", 0),
                               render=data_config.get("render", "pixels"),
                               oracle_patch_size=data_config.get("oracle_patch_size", 8))
  return DataBundle(source=source, tokenizer=tokenizer_lib.shapes_tokenizer(),
                    answer_vocab=shapes.answer_vocabulary())


# ----------------------------------------------------------------------------------
# Real data: COCO captions (TFDS), VQAv2 (official files), pre-training shards.
# Their tokenizer is a SentencePiece model trained on the source itself, so each also
# registers a source-only loader (`load_source`) that needs no tokenizer.
# ----------------------------------------------------------------------------------
_SOURCE_LOADERS: dict[str, Callable[..., Any]] = {}


def register_source(name: str):
  """Registers `(data_config, split) -> source` and a full `load` entry using the
  SentencePiece model at config.data.tokenizer."""
  def decorator(source_loader):
    _SOURCE_LOADERS[name] = source_loader

    @register(name)
    def _bundle(data_config, split: str) -> DataBundle:
      tokenizer = _sentencepiece(data_config)
      source = source_loader(data_config, split)
      # Sources with VQA carry their answer vocabulary; the others have none.
      return DataBundle(source=source, tokenizer=tokenizer,
                        answer_vocab=list(getattr(source, "answer_vocab", [])))
    return source_loader
  return decorator


def load_source(data_config, split: str):
  """Only the source of `data_config.name` (e.g. to train the tokenizer `load` needs)."""
  if data_config.name in _SOURCE_LOADERS:
    return _SOURCE_LOADERS[data_config.name](data_config, split)
  return load(data_config, split).source


def tokenizer(data_config) -> tokenizer_lib.Tokenizer:
  """The tokenizer of `data_config`'s source, without loading the source."""
  if data_config.name == "shapes":
    return tokenizer_lib.shapes_tokenizer()
  return _sentencepiece(data_config)


def _sentencepiece(data_config) -> tokenizer_lib.SentencePieceTokenizer:
  path = data_config.get("tokenizer", "")
  fix = ("Train one with `python -m sdict_jax.data.train_tokenizer --config=<this config> "
         "--output=/path/spm --vocab_size=16000`, then set "
         "--config.data.tokenizer=/path/spm.model.")
  if not path:
    raise ValueError(f"config.data.tokenizer is empty: source {data_config.name!r} needs a "
                     f"SentencePiece model. {fix}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.data.tokenizer={path!r} does not exist. {fix}")
  return tokenizer_lib.SentencePieceTokenizer(path)


def _required_path(data_config, field: str, what: str) -> str:
  path = data_config.get(field, "")
  if not path:
    raise ValueError(f"config.data.{field} is empty; set it to {what}.")
  return path


@register_source("coco_captions")
def _coco_captions(data_config, split: str):
  from sdict_jax.data import coco  # pylint: disable=g-import-not-at-top
  if split == coco.TEST_SPLIT:  # the official test images are not in TFDS
    coco_dir = _required_path(data_config, "coco_dir", "the COCO root holding "
                              f"{coco.TEST_SPLIT}/ and {coco.IMAGE_INFO_FILE} "
                              "(evaluate: --coco_dir)")
    return coco.load_test_images(
        coco_dir, missing_images=data_config.get("missing_images") or "error")
  return coco.load_source(split, data_dir=data_config.get("data_dir") or None)


@register_source("vqav2")
def _vqav2(data_config, split: str):
  from sdict_jax.data import vqav2  # pylint: disable=g-import-not-at-top
  vqa_dir = _required_path(data_config, "vqa_dir",
                           "the folder of the official VQAv2 question/annotation JSON files")
  coco_dir = _required_path(data_config, "coco_dir",
                            "the COCO 2014 image root (holding train2014/ and val2014/)")
  cache_dir = data_config.get("cache_dir") or os.path.join(
      os.path.expanduser("~"), ".cache", "sdict_jax")
  return vqav2.load(
      split, vqa_dir=vqa_dir, coco_dir=coco_dir, cache_dir=cache_dir,
      answer_vocab_size=data_config.get("answer_vocab_size",
                                        vqav2.DEFAULT_ANSWER_VOCAB_SIZE),
      trainval=data_config.get("trainval", False),
      minival_images=data_config.get("minival_images", 1000),
      missing_images=data_config.get("missing_images") or None)


@register_source("shards")
def _shards(data_config, split: str):
  from sdict_jax.data import shards  # pylint: disable=g-import-not-at-top
  field = f"{split}_shards"
  patterns = _required_path(data_config, field, "comma-separated globs of ArrayRecord "
                            "shards from `python -m sdict_jax.data.shards convert`")
  return shards.ShardSource(patterns, name=f"shards:{split}", what=f"config.data.{field}")
