r"""Scores a trained run on a split: VQA, captions (all COCO metrics) and boxes.

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
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
import jax

from sdict_jax import decoding
from sdict_jax import distributed
from sdict_jax import evaluators
from sdict_jax import metrics
from sdict_jax import restore
from sdict_jax import sharding
from sdict_jax import showcase as showcase_lib
from sdict_jax.data import sources

restore.define_flags()
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                           "Split to score.")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Examples to score; default config.eval.num_examples, -1 "
    "for the whole split.")
_SCORERS = flags.DEFINE_list("scorers", list(metrics.CAPTION_SCORERS),
                             "Caption metrics to compute.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the files go; default <workdir>/eval_<split>.")
_SHOWCASE = flags.DEFINE_string("showcase", None, "Also draw the first examples "
                                "with their captions and answers into this PNG.")
_SHOWCASE_COUNT = 6


def evaluate(workdir, config, *, split, num_examples=None, decode_options=None,
             seed=0, scorers=metrics.CAPTION_SCORERS, output_dir=None,
             showcase=None) -> dict:
  """Scores the newest checkpoint of `workdir`; writes and returns the report."""
  decode_options = decode_options or decoding.DecodeOptions()
  config = config.copy_and_resolve_references()
  if num_examples is not None:
    config.eval.num_examples = num_examples if num_examples >= 0 else sys.maxsize
  devices = jax.local_device_count()
  if config.eval.batch_size % devices:
    raise restore.RestoreError(
        f"config.eval.batch_size={config.eval.batch_size} is not divisible by the "
        f"{devices} local devices; pass --config.eval.batch_size=<a multiple>.")
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  bundle = sources.load(config.data, split)
  run = restore.load(workdir, config, bundle, mesh)
  evaluator = evaluators.Evaluator(run.model, run.decode_model, bundle, config, mesh,
                                   decode_options=decode_options, seed=seed)
  scores, results = evaluator.run(run.params, scorers=tuple(scorers))
  report = {"step": run.step, "split": split, "num_examples": len(results),
            "decode": dataclasses.asdict(decode_options), "scores": scores}
  if jax.process_index() == 0:
    output_dir = output_dir or os.path.join(workdir, f"eval_{split}")
    os.makedirs(output_dir, exist_ok=True)
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


def _as_python(value):
  """numpy scalars and arrays in the results, for json."""
  return value.tolist() if hasattr(value, "tolist") else str(value)


def main(argv):
  del argv
  distributed.initialize()
  try:
    workdir, config = restore.workdir_and_config_from_flags()
    report = evaluate(workdir, config, split=_SPLIT.value,
                      num_examples=_NUM_EXAMPLES.value,
                      decode_options=restore.decode_options_from_flags(),
                      seed=flags.FLAGS.seed, scorers=_SCORERS.value,
                      output_dir=_OUTPUT_DIR.value, showcase=_SHOWCASE.value)
  except (restore.RestoreError, ValueError) as error:
    sys.exit(f"ERROR: {error}")
  print(f"step {report['step']}, {report['split']} split, {report['num_examples']} "
        f"examples, {report['decode']['method']} decoding:")
  for name, value in sorted(report["scores"].items()):
    print(f"  {name:32s} {value:.4f}")


if __name__ == "__main__":
  sys.argv = restore.with_saved_config(sys.argv)
  app.run(main)
