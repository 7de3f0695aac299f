"""`python -m sdict_jax.bench questions`: one question kind, the whole model, a few
minutes (question_probe). What the VQA head reads and how fast the trunk steps.

  python -m sdict_jax.bench questions                      # existence, 4 variants
  python -m sdict_jax.bench questions --question_variants=tokens*0.1,pool*0.1

A variant is "<model.vqa_readout>" or "<model.vqa_readout>*<trunk factor>": the
factor multiplies the step of model.TRUNK_PARAMS (optim.lr_mults), 0 freezes the
trunk at its initialisation. Everything else is the base config's model and
optimizer (SDict mixer, its learning rate and filter step).
"""

import ml_collections

from sdict_jax import bench_lib
from sdict_jax import config_files
from sdict_jax import model as model_lib
from sdict_jax import question_probe

VARIANTS = ("pool", "tokens", "tokens*0.1", "tokens*0")


def parse_variant(name: str) -> tuple[str, float]:
  """'tokens*0.1' → ('tokens', 0.1); 'pool' → ('pool', 1.0)."""
  readout, _, factor = name.partition("*")
  try:
    factor = float(factor) if factor else 1.0
  except ValueError:
    factor = -1.0
  if readout not in ("pool", "tokens") or factor < 0:
    raise ValueError(f"Unknown question-probe variant {name!r}: use "
                     f"<'pool'|'tokens'>[*<trunk step factor >= 0>], e.g. tokens*0.1.")
  return readout, factor


def variant_config(base: ml_collections.ConfigDict, name: str):
  readout, factor = parse_variant(name)
  config = ml_collections.ConfigDict(base.to_dict())
  config.model.vqa_readout = readout
  config.optim.accum_steps = 1
  config.optim.lr_mults = ((model_lib.TRUNK_PARAMS, factor),) if factor != 1 else ()
  return config


def run_questions(*, base_config, variants, kinds, steps, batch, eval_every,
                  eval_examples):
  for name in variants:
    parse_variant(name)  # a bad name fails before anything trains
  base = config_files.get_config(base_config)
  # Held out: up to eval_examples, as many as the validation scenes ask.
  eval_data = question_probe.question_data(base.data, "validation", eval_examples,
                                           kinds, at_most=True)
  train_data = question_probe.question_data(base.data, "train", steps * batch, kinds)
  rows = []
  for name in variants:
    result = question_probe.run_probe(variant_config(base, name), train_data,
                                      eval_data, steps=steps, batch_size=batch,
                                      eval_every=eval_every)
    rows.append(dict(result, variant=name, kinds=list(kinds)))
    print(f"{name}: " + " ".join(f"{p['accuracy']:.2f}" for p in result["curve"]),
          flush=True)
  return rows


def questions_targets(rows):
  final = {r["variant"]: r["curve"][-1]["accuracy"] for r in rows}
  constant = rows[0]["constant_answer"] if rows else None
  return [bench_lib.target(f"{name}: final accuracy ≥ 1.2 × a constant answer's",
                           accuracy, constant, 1.2, at_most=False)
          for name, accuracy in final.items()]


def report_questions(rows, path):
  marks = [p["step"] for p in rows[0]["curve"]]
  marks = [m for m in marks if m % 100 == 0] or marks
  columns = ([("variant", "variant")] + [(f"at_{m}", f"step {m}") for m in marks] +
             [("seconds", "seconds")])
  table = [dict(r, seconds=r["curve"][-1]["seconds"],
                **{f"at_{p['step']}": p["accuracy"] for p in r["curve"]})
           for r in rows]
  formats = {f"at_{m}": "{:.2f}".format for m in marks}
  formats["seconds"] = "{:.0f}".format
  kinds = ", ".join(rows[0]["kinds"])
  bench_lib.curves_plot(
      path("bench_questions_curves.png"),
      {kinds: {r["variant"]: [(p["step"], p["accuracy"]) for p in r["curve"]]
               for r in rows}},
      xlabels={kinds: "training step"},
      ylabel=f"held-out accuracy (constant answer {rows[0]['constant_answer']:.2f})",
      title="One question kind, whole model: read-out × trunk step")
  return {f"{kinds}: held-out accuracy": bench_lib.markdown_table(table, columns,
                                                                  formats)}
