r"""Scores a trained run on a split, and writes the files the official servers score.

  python -m sdict_jax.evaluate --workdir runs/shapes [--split test] \
      [--decode beam --beam_width 4 --length_penalty 0.6] [--num_examples -1] \
      [--showcase docs/shapes_examples.png]

Restores the newest checkpoint of --workdir with the config the run saved in
<workdir>/config.json (or --config configs/<x>.py; `--config.x=y` overrides
either), predicts every task of the data source on the split, and writes
  <workdir>/eval_<split>/scores.json       {"step", "split", "num_examples",
                                           "decode", "scores": {metric: value}}
  <workdir>/eval_<split>/predictions.jsonl one object per example
Scores: BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when installed) against all
references, VQA accuracy overall and per answer type, box IoU. METEOR starts a
Java process of about 1 GB; --scorers=BLEU,CIDEr leaves it out.

Submissions. The official test splits have no answers; evaluate predicts every
example of them (config.eval.num_examples does not apply; a smaller --num_examples
writes no results file) and writes the server's results file into the same folder
(format and names in submission.py; `--method_name` is the <method> in them):
  VQAv2   --split test-dev   vqa_OpenEnded_mscoco_test-dev2015_<method>_results.json
          --split test-std   vqa_OpenEnded_mscoco_test2015_<method>_results.json
          (--split test is the same as test-std)
  COCO    --split test2014   captions_test2014_<method>_results.json
          --split val2014    captions_val2014_<method>_results.json (scored too)
A split with answers (train, validation, the Karpathy test) is scored as always,
and its results file is written as well when every example was predicted
(--num_examples=-1). The file is checked by `submission.validate_*` before it is
written: every id of the official file once, answers strings. A test image that
is missing is an error naming it and the fix; --missing_images=blank answers
from a black image instead. --coco_dir points at the COCO root holding test2014/,
test2015/ and annotations/ when the config has none.

Zero-shot VQA (--zero_shot_vqa): answers the split's questions with the caption
decoder, prompted by --zero_shot_prompt (evaluators.ZeroShotVQA), scored with
the VQA metric as vqa_zero_shot/accuracy[/<answer type>], into
<workdir>/eval_<split>_zero_shot/. A run whose data has no questions (COCO
captions, pre-training shards) reads VQAv2's: pass --vqa_dir (and --coco_dir).
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from sdict_jax import decoding
from sdict_jax import distributed
from sdict_jax import evaluators
from sdict_jax import metrics
from sdict_jax import restore
from sdict_jax import sharding
from sdict_jax import showcase as showcase_lib
from sdict_jax import submission
from sdict_jax.data import sources
from sdict_jax.data import vqav2

SPLITS = ("train", "validation", "test", "test-dev", "test-std", "val2014", "test2014")

restore.define_flags()
_SPLIT = flags.DEFINE_enum("split", "test", SPLITS,
                           "Split to evaluate (VQAv2: test-dev, test/test-std; COCO "
                           "captions: test2014, val2014; see the module doc).")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Examples to score; default config.eval.num_examples (the "
    "whole split on the official test sets), -1 for the whole split.")
_SCORERS = flags.DEFINE_list("scorers", list(metrics.CAPTION_SCORERS),
                             "Caption metrics to compute.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the files go; default <workdir>/eval_<split>.")
_SHOWCASE = flags.DEFINE_string("showcase", None, "Also draw the first examples "
                                "with their captions and answers into this PNG.")
_METHOD_NAME = flags.DEFINE_string("method_name", "sdict", "The <method> in the "
                                   "results file names (letters, digits, '-').")
_COCO_DIR = flags.DEFINE_string("coco_dir", None, "COCO root with test2014/, "
                                "test2015/, annotations/; default config.data.coco_dir.")
_VQA_DIR = flags.DEFINE_string("vqa_dir", None, "--zero_shot_vqa of a run without "
                               "questions: the VQAv2 JSON folder.")
_MISSING_IMAGES = flags.DEFINE_enum(
    "missing_images", None, ["error", "blank", "skip"],
    "A listed image without its file: error (default on the test splits), blank (a "
    "black image), skip (VQAv2 train/validation default; the question is left out).")
_ZERO_SHOT = flags.DEFINE_bool("zero_shot_vqa", False, "Answer the questions with the "
                               "caption decoder (zero-shot VQA) instead.")
_ZERO_SHOT_PROMPT = flags.DEFINE_string("zero_shot_prompt", evaluators.ZERO_SHOT_PROMPT,
                                        "Forced decoder prompt; '{question}' once.")
_ZERO_SHOT_ANSWER_LEN = flags.DEFINE_integer(
    "zero_shot_answer_len", evaluators.ZERO_SHOT_ANSWER_LEN,
    "Zero-shot answers: at most this many tokens.")
_SHOWCASE_COUNT = 6


@dataclasses.dataclass(frozen=True)
class ZeroShot:
  """Zero-shot VQA settings (see evaluators.ZeroShotVQA)."""
  prompt: str = evaluators.ZERO_SHOT_PROMPT
  answer_len: int = evaluators.ZERO_SHOT_ANSWER_LEN


def _with_data(config, **fields):
  """config with the given config.data fields set (None: left as it is)."""
  fields = {k: v for k, v in fields.items() if v is not None}
  if fields:
    with config.unlocked():
      config.data.update(fields)
  return config


def _zero_shot_bundle(data_config, split):
  """The run's own questions, or VQAv2's read with the run's tokenizer (a run whose
  data has none: COCO captions, pre-training shards; no answer head either)."""
  if data_config.name in sources.WITH_QUESTIONS:
    return sources.load(data_config, split)
  if not data_config.get("vqa_dir"):
    raise ValueError(f"Zero-shot VQA of a {data_config.name!r} run needs questions: pass "
                     f"--vqa_dir=<the VQAv2 JSON folder> and --coco_dir=<the COCO image "
                     f"root>.")
  vqa_config = ml_collections.ConfigDict(data_config.to_dict())
  vqa_config.update(name="vqav2", answer_vocab_size=0)
  return sources.DataBundle(source=sources.load_source(vqa_config, split),
                            tokenizer=sources.tokenizer(data_config), answer_vocab=[])


def evaluate(workdir, config, *, split, num_examples=None, decode_options=None,
             seed=0, scorers=metrics.CAPTION_SCORERS, output_dir=None,
             showcase=None, method_name="sdict", coco_dir=None, vqa_dir=None,
             missing_images=None, zero_shot=None) -> dict:
  """Scores the newest checkpoint of `workdir`; writes and returns the report.

  `zero_shot` (a ZeroShot): zero-shot VQA instead. The report's "results_file" is
  the server's file written (None when the split has none or was not predicted
  whole).
  """
  decode_options = decode_options or decoding.DecodeOptions()
  submission.check_method_name(method_name)  # before any compute
  config = _with_data(config.copy_and_resolve_references(), coco_dir=coco_dir,
                      vqa_dir=vqa_dir, missing_images=missing_images)
  devices = jax.local_device_count()
  if config.eval.batch_size % devices:
    raise restore.RestoreError(
        f"config.eval.batch_size={config.eval.batch_size} is not divisible by the "
        f"{devices} local devices; pass --config.eval.batch_size=<a multiple>.")
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  bundle = (_zero_shot_bundle(config.data, split) if zero_shot
            else sources.load(config.data, split))
  if num_examples is None and getattr(bundle.source, "subset", None) in (
      submission.TEST_SUBSETS):
    num_examples = -1  # a submission answers every question
  if num_examples is not None:
    config.eval.num_examples = num_examples if num_examples >= 0 else sys.maxsize
  run = restore.load(workdir, config, bundle, mesh)
  if zero_shot:
    evaluator = evaluators.ZeroShotVQA(
        run.model, run.decode_model, bundle, config, mesh, decode_options=decode_options,
        seed=seed, prompt=zero_shot.prompt, answer_len=zero_shot.answer_len)
  else:
    evaluator = evaluators.Evaluator(run.model, run.decode_model, bundle, config, mesh,
                                     decode_options=decode_options, seed=seed)
  scores, results = evaluator.run(run.params, scorers=tuple(scorers))
  report = {"step": run.step, "split": split, "num_examples": len(results),
            "decode": dataclasses.asdict(decode_options), "scores": scores}
  if zero_shot:
    report["zero_shot"] = dataclasses.asdict(zero_shot)
  default_dir = f"eval_{split}_zero_shot" if zero_shot else f"eval_{split}"
  output_dir = output_dir or os.path.join(workdir, default_dir)
  results_file = _results_file(bundle.source, results, output_dir, method_name,
                               answers=bool(zero_shot) or bool(bundle.answer_vocab))
  report["results_file"] = results_file[0] if results_file else None
  if jax.process_index() == 0:
    os.makedirs(output_dir, exist_ok=True)
    if results_file:
      submission.write_json(*results_file)
    with open(os.path.join(output_dir, "scores.json"), "w") as f:
      json.dump(report, f, indent=2)
    with open(os.path.join(output_dir, "predictions.jsonl"), "w") as f:
      for result in results:
        f.write(json.dumps(result, default=_as_python) + "\n")
    if showcase:
      shown = results[:_SHOWCASE_COUNT]
      showcase_lib.draw(showcase, [bundle.source[r["index"]]["image"] for r in shown],
                        shown)
  return report


def _results_file(source, results, output_dir, method_name, *, answers: bool):
  """(path, results) of the server's file for these results, validated; None when
  the split has no official file or was not predicted whole.

  `answers`: VQA answers are part of the results (an answer head or zero-shot);
  else (VQAv2 run without answer head) no VQA file.
  """
  subset = getattr(source, "subset", None)
  if subset is None:
    return None
  if len(results) < len(source):
    log = logging.warning if subset in submission.TEST_SUBSETS else logging.info
    log("No results file: %d of the %d examples of %s were predicted; pass "
        "--num_examples=-1 to predict them all.", len(results), len(source), source)
    return None
  if isinstance(source, vqav2.VQAv2Source):
    if not answers:
      return None
    name = submission.vqa_results_file(subset, method_name)
    predicted, unanswered = submission.vqa_results(
        ((r["id"], r["answer"]) for r in results), source.results_question_ids)
    empty = {r["question_id"] for r in predicted if not r["answer"].strip()} - unanswered
    submission.validate_vqa_results(predicted, source.results_question_ids,
                                    allow_empty=unanswered | empty)
  else:
    name = submission.caption_results_file(subset, method_name)
    predicted = submission.caption_results((r["id"], r["caption"]) for r in results)
    empty = {r["image_id"] for r in predicted if not r["caption"].strip()}
    image_ids = getattr(source, "image_ids", None)
    if image_ids is None:  # TFDS splits: the ids are known only by reading every record
      image_ids = sorted({r["image_id"] for r in predicted})
    submission.validate_caption_results(predicted, image_ids, allow_empty=empty)
    unanswered = set()
  if empty:
    logging.warning("%d of the %d predictions in %s are empty (the decoder ended at "
                    "once); the file keeps them as ''.", len(empty), len(results), name)
  if unanswered:
    logging.warning("%s: %d questions of the official file were not predicted (outside "
                    "the split, or skipped for a missing image) and have answer ''.",
                    name, len(unanswered))
  return os.path.join(output_dir, name), predicted


def _as_python(value):
  """numpy scalars and arrays in the results, for json."""
  return value.tolist() if hasattr(value, "tolist") else str(value)


def main(argv):
  del argv
  distributed.initialize()
  zero_shot = (ZeroShot(_ZERO_SHOT_PROMPT.value, _ZERO_SHOT_ANSWER_LEN.value)
               if _ZERO_SHOT.value else None)
  try:
    workdir, config = restore.workdir_and_config_from_flags()
    report = evaluate(workdir, config, split=_SPLIT.value,
                      num_examples=_NUM_EXAMPLES.value,
                      decode_options=restore.decode_options_from_flags(),
                      seed=flags.FLAGS.seed, scorers=_SCORERS.value,
                      output_dir=_OUTPUT_DIR.value, showcase=_SHOWCASE.value,
                      method_name=_METHOD_NAME.value, coco_dir=_COCO_DIR.value,
                      vqa_dir=_VQA_DIR.value, missing_images=_MISSING_IMAGES.value,
                      zero_shot=zero_shot)
  except (restore.RestoreError, ValueError, FileNotFoundError) as error:
    sys.exit(f"ERROR: {error}")
  task = "zero-shot VQA, " if zero_shot else ""
  print(f"step {report['step']}, {report['split']} split, {report['num_examples']} "
        f"examples, {task}{report['decode']['method']} decoding:")
  for name, value in sorted(report["scores"].items()):
    print(f"  {name:32s} {value:.4f}")
  if report["results_file"]:
    print(f"results file: {report['results_file']}")


if __name__ == "__main__":
  sys.argv = restore.with_saved_config(sys.argv)
  app.run(main)
