r"""`bench train`: the real training step of an experiment, per mixer, and where it goes.

  python -m sdict_jax.bench train [--base_config configs/shapes.py] [--batch 64] \
      [--model_mixers sdict,attention,fnet] [--repeats 7] [--train_steps 5] \
      [--nobreakdown] [--out_dir docs]

**The step.** For each mixer the model, optimizer, initial state and update are
built by train.py's own functions (`build_model`, which gives attention and FNet
SDict's parameter count; `make_optimizer`; `make_init_state`; `train_step`) and
jitted as train.py jits them (mesh from `config.mesh`, explicit shardings,
donated state). The input is one batch of the real pipeline (the same Grain
dataset train.py builds, with the config's augmentation), placed on the devices
once: the step is timed apart from the input. Each mixer's step is compiled once;
then the mixers are timed round-robin (sdict, attention, fnet, sdict, ...), each
sample `--train_steps` consecutive steps, `--repeats` samples, and the median is
reported (the minimum beside it), so that background load hits every mixer alike.

**The input pipeline** is timed on its own, after the steps: batches per second
of the real dataset iterator after its prefetch buffer is drained, i.e. the
throughput of its reader threads with the step idle. If it is below the step's
rate the training loop waits for input; if above, it need not (train.py then
overlaps the two, sharing the cores).

**The breakdown.** The parts of the step are separate jitted programs on the
same parameters and the real batch's intermediate activations, each a forward
plus backward (gradients of every parameter the part uses, and of its float
inputs, as the step back-propagates through them), timed round-robin like the
step:

  vision          model.encode_image (with its SDict layers' auxiliary losses)
  text            model.encode_text of the questions and referring expressions
  fusion (text)   model.fuse of image ⊕ question / refexp, masked (per-example
                  validity masks): measured with the text encoder inside (fuse
                  calls it), reported minus the text part
  fusion (prefix) model.fuse of the image alone (the caption prefix, no mask)
  decoder         model.caption_logits over prefix ⊕ caption, incl. the
                  vocabulary projection
  heads + losses  the VQA and box heads and losses.total_loss's task losses
  optimizer       optimizer.update + apply_updates
  auxiliary       whole-model forward + backward (train_step's loss function)
                  with the auxiliary losses (reconstruction, sparsity) minus the
                  same without them: what they add (already inside the encoder
                  and fusion parts above, so not added again)

A stage's program ends in ½‖output‖² plus its layers' auxiliary losses (weighted
as at step 0), so XLA has nothing to drop; heads + losses ends in the task loss.
The stages run on the step's first micro-batch (the sum counts them
`accum_steps` times). Every part also carries XLA's own account of its compiled
program (`cost_analysis()`: FLOPs and bytes accessed), exact for what it counts
and free of machine noise.

What it can and cannot say. The parts show which stage dominates and how the
mixers differ stage by stage. They do not add up exactly to the step: the real
step is one XLA program, fused and scheduled across the stage boundaries,
while each part pays its own dispatch, its own output buffers and the ½‖y‖²
probe; "sum of parts" beside "step" shows the gap. Derived rows (differences of
two timings) carry the noise of both and may come out slightly negative for a
part that costs nothing. FLOPs are not time: FFTs, solves and gathers count few
FLOPs for their time on a CPU, and cost_analysis may not count a custom call.
It attributes time to stages, not to operations inside one fused program:
for that, `--profile` traces the real step with `jax.profiler` and attributes
each executed op to its part and component (`sdict_jax/step_profile.py`). The parts follow
SDictVLM.__call__'s wiring through the model's public methods; if that wiring
changes, the sum of parts drifts from the step while the step's own timing
stays exact.
"""

import collections
import dataclasses
import functools
import math
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sdict_jax import bench_lib
from sdict_jax import config_files
from sdict_jax import losses
from sdict_jax import sharding
from sdict_jax import step_profile
from sdict_jax import train
from sdict_jax.data import sources

# key → label, in the order of the step. `in_sum`: the disjoint parts whose times
# add up to (about) one step; the others are nested or derived cross-checks.
PARTS = {
    "vision": "vision encoder",
    "text": "text encoder (questions, refexps)",
    "fusion_text_with_encoder": "fusion with text incl. text encoder (measured)",
    "fusion_text": "fusion with text, masked",
    "fusion_prefix": "fusion, caption prefix (no text)",
    "decoder": "caption decoder incl. vocabulary projection",
    "heads_losses": "heads + task losses",
    "optimizer": "optimizer update",
    "model": "whole model fwd+bwd (measured)",
    "model_without_aux": "whole model fwd+bwd without auxiliary losses",
    "auxiliary": "of which auxiliary losses",
    "sum": "sum of the parts",
}
IN_SUM = ("vision", "text", "fusion_text", "fusion_prefix", "decoder", "heads_losses",
          "optimizer")
# Programs that run once (initial state, the parts' input activations) are
# compiled without optimisation: on a CPU that saves most of their compile time.
_RUN_ONCE = {"xla_backend_optimization_level": 0}


# ---------------------------------------------------------------------------
# Building: train.py's functions, for one mixer.
# ---------------------------------------------------------------------------


def train_config(base_config: str, mixer: str, *, batch, dtype, width):
  """The experiment config with this mixer; batch, dtype, width overridden if given."""
  config = config_files.get_config(base_config)
  config.model.mixer = mixer
  if batch:
    config.train.batch_size = batch
  if dtype:
    config.train.compute_dtype = dtype
  if width:
    config.model.width = width
  return config


@dataclasses.dataclass
class Setup:
  """One mixer's compiled step, the state it starts from, and what the parts need."""
  model: Any
  optimizer: Any
  config: Any
  mesh: Any
  step: bench_lib.Program
  state: dict
  batch: dict
  # Copies: the step donates (and so invalidates) `state` when it runs.
  params: dict
  opt_state: Any
  num_params: int


def build_step(config, bundle, numpy_batch) -> Setup:
  """train.py's model, optimizer, state and jitted update for this config."""
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    model = train.build_model(config, bundle)
    optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
    base_rng = jax.random.PRNGKey(config.seed)
    example = train.example_batch(config,
                                  config.train.batch_size // config.optim.accum_steps,
                                  len(bundle.answer_vocab))
    init_state = train.make_init_state(model, optimizer, example)
    abstract_state = jax.eval_shape(init_state, base_rng)
    state_shardings = sharding.named_shardings(abstract_state, mesh)
    state = jax.jit(init_state, out_shardings=state_shardings).lower(base_rng).compile(
        compiler_options=_RUN_ONCE)(base_rng)
    batch = sharding.global_batch(numpy_batch, mesh)
    update = train.jit_train_step(model, optimizer, config, base_rng,
                                  state_shardings, mesh)
    step = bench_lib.analyse(update.lower(state, batch).compile())
  num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(state["params"]))
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return Setup(model, optimizer, config, mesh, step, state, batch,
               copy(state["params"]), copy(state["opt_state"]), num_params)


# ---------------------------------------------------------------------------
# The parts: forward + backward of each stage, on the real activations.
# ---------------------------------------------------------------------------


def _probe(y):
  """½‖y‖²: a loss that needs every element of y (its cotangent is y itself)."""
  return 0.5 * jnp.sum(jnp.square(y.astype(jnp.float32)))


def _aux_penalty(aux, loss_config):
  """The auxiliary losses as the step weighs them at step 0."""
  parts = losses.auxiliary_losses(aux.get("aux", {}))
  return (loss_config.recon_start * parts.get("reconstruction", 0.0) +
          loss_config.sparsity * parts.get("sparsity", 0.0))


def part_functions(setup: Setup) -> dict[str, tuple[Callable, tuple, tuple]]:
  """part → (fn(params, *inputs) -> loss, inputs, argnums of the gradient)."""
  model, config = setup.model, setup.config
  batch = jax.tree.map(lambda x: x[:x.shape[0] // config.optim.accum_steps],
                       setup.batch)  # one micro-batch, as the step's scan sees
  rng = jax.random.PRNGKey(0)

  def apply(params, method, *args):
    """(output, aux) of one of the model's methods in training mode."""
    return model.apply({"params": params}, *args, train=True, method=method,
                       rngs={"noise": rng}, mutable=["aux"])

  questions = batch["question"]
  images = questions.shape[0]
  per_image = questions.shape[1] if questions.ndim == 3 else 1
  texts = jnp.concatenate([questions.reshape(images * per_image, -1),
                           batch["refexp"]], 0)
  no_text = jnp.zeros((images, 0), jnp.int32)
  positions = jnp.arange(batch["caption_in"].shape[1])

  def vision_fn(params, image):
    y, aux = apply(params, type(model).encode_image, image)
    return _probe(y) + _aux_penalty(aux, config.loss)

  def text_fn(params, tokens):
    (y, _), aux = apply(params, type(model).encode_text, tokens)
    return _probe(y) + _aux_penalty(aux, config.loss)

  def fusion_text_fn(params, vision, tokens):
    (y, _), aux = apply(params, type(model).fuse, vision, tokens)
    return _probe(y) + _aux_penalty(aux, config.loss)

  def fusion_prefix_fn(params, vision):
    (y, _), aux = apply(params, type(model).fuse, vision, no_text)
    return _probe(y) + _aux_penalty(aux, config.loss)

  def decoder_fn(params, prefix, prefix_mask, caption_in):
    y, aux = apply(params, type(model).caption_logits, caption_in, positions, prefix,
                   prefix_mask)
    return _probe(y) + _aux_penalty(aux, config.loss)

  def heads_losses_fn(params, fused_questions, fused_refexps, caption_logits,
                      mask_questions, mask_refexps, *, num_image_tokens):
    (answer_logits, box), _ = apply(
        params, lambda m, fq, fr, mq, mr, train: (
            m.answer_logits(fq, mq, num_image_tokens), m.box(fr, mr, num_image_tokens)),
        fused_questions, fused_refexps, mask_questions, mask_refexps)
    outputs = {"answer_logits": answer_logits.reshape(questions.shape[:-1] + (-1,)),
               "box": box, "caption_logits": caption_logits}
    return losses.total_loss(outputs, batch, {}, 0, config.loss)[0]

  def model_fn(params, batch, with_aux):  # train_step's loss_fn
    outputs, aux = model.apply({"params": params}, batch, train=True,
                               rngs={"noise": rng}, mutable=["aux"])
    return losses.total_loss(outputs, batch, aux.get("aux", {}) if with_aux else {},
                             0, config.loss)[0]

  def stages(params, batch):
    """The inputs each stage receives in the step: the stages before it."""
    vision = apply(params, type(model).encode_image, batch["image"])[0]
    vision_rep = jnp.concatenate([jnp.repeat(vision, per_image, 0), vision], 0)
    (fused, fused_mask), _ = apply(params, type(model).fuse, vision_rep, texts)
    (prefix, prefix_mask), _ = apply(params, type(model).fuse, vision, no_text)
    caption_logits = apply(params, type(model).caption_logits, batch["caption_in"],
                           positions, prefix, prefix_mask)[0]
    return (vision, vision_rep, fused, fused_mask, prefix, prefix_mask,
            caption_logits)

  with jax.set_mesh(setup.mesh):
    (vision, vision_rep, fused, fused_mask, prefix, prefix_mask,
     caption_logits) = jax.jit(
        stages).lower(setup.params, batch).compile(compiler_options=_RUN_ONCE)(
            setup.params, batch)
  split = images * per_image
  return {
      "vision": (vision_fn, (batch["image"],), (0,)),
      "text": (text_fn, (texts,), (0,)),
      "fusion_text_with_encoder": (fusion_text_fn, (vision_rep, texts), (0, 1)),
      "fusion_prefix": (fusion_prefix_fn, (vision,), (0, 1)),
      "decoder": (decoder_fn, (prefix, prefix_mask, batch["caption_in"]), (0, 1)),
      "heads_losses": (functools.partial(heads_losses_fn,
                                         num_image_tokens=vision.shape[1]),
                       (fused[:split], fused[split:], caption_logits,
                        fused_mask[:split], fused_mask[split:]), (0, 1, 2, 3)),
      "model": (functools.partial(model_fn, with_aux=True), (batch,), (0,)),
      "model_without_aux": (functools.partial(model_fn, with_aux=False), (batch,),
                            (0,)),
  }


def part_programs(setup: Setup) -> dict[str, tuple[bench_lib.Program, tuple]]:
  """part → (compiled forward + backward, its arguments), the optimizer's included."""
  programs = {}
  params = setup.params
  with jax.set_mesh(setup.mesh):
    for name, (fn, inputs, argnums) in part_functions(setup).items():
      args = (params,) + inputs
      program = bench_lib.compile_program(jax.grad(fn, argnums=argnums), args)
      programs[name] = (program, args)
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)

    def optimizer_update(params, opt_state, grads):
      updates, opt_state = setup.optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    args = (params, setup.opt_state, grads)
    programs["optimizer"] = (bench_lib.compile_program(optimizer_update, args), args)
  return programs


def _cost(program: bench_lib.Program, key: str):
  cost = program.compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  value = (cost or {}).get(key, -1)
  return float(value) if value is not None and value >= 0 else None


# ---------------------------------------------------------------------------
# The suite.
# ---------------------------------------------------------------------------


def time_pipeline(dataset_iterator, *, batches: int, skip: int) -> float:
  """Seconds per batch of a dataset iterator, after `skip` (its prefetch buffer)."""
  for _ in range(skip):
    next(dataset_iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(dataset_iterator)
  return (time.perf_counter() - start) / batches


def _median_ms(samples):
  return statistics.median(samples) * 1e3


def run_train(*, base_config, train_mixers, batch, dtype, width, steps, repeats,
              breakdown, pipeline_batches, profile=False):
  """Rows: kind 'step' (one per mixer), 'part' (mixer × part), 'pipeline' (one);
  with `profile`, 'profile' (mixer × part × component) and 'profile_mixing'
  (mixer × primitive of the token mixing) from a profiler trace of the step."""
  if "sdict" not in train_mixers:
    raise ValueError("bench train reports every mixer against SDict: include 'sdict' "
                     f"in --model_mixers (got {train_mixers}).")
  first = train_config(base_config, "sdict", batch=batch, dtype=dtype, width=width)
  bundle = sources.load(first.data, "train")
  dataset = iter(train.make_train_data(first, bundle))
  numpy_batch = next(dataset)  # the real input, the same for every mixer
  setups, rows = {}, []
  for mixer in train_mixers:
    config = train_config(base_config, mixer, batch=batch, dtype=dtype, width=width)
    start = time.perf_counter()
    setups[mixer] = build_step(config, bundle, numpy_batch)
    print(f"{mixer}: built and compiled in {time.perf_counter() - start:.0f} s "
          f"({setups[mixer].num_params:,} parameters)", flush=True)

  runners = {m: bench_lib.carrying_runner(s.step.compiled, (s.state, s.batch), 0)
             for m, s in setups.items()}
  samples = bench_lib.time_rounds(runners, repeats=repeats, calls=steps)
  for mixer, setup in setups.items():
    seconds = statistics.median(samples[mixer])
    rows.append({
        "kind": "step", "mixer": mixer, "config": os.path.basename(base_config),
        "width": setup.model.width, "params": setup.num_params,
        "batch": setup.config.train.batch_size,
        "compute_dtype": setup.config.train.compute_dtype,
        "ms_per_step": seconds * 1e3, "ms_min": min(samples[mixer]) * 1e3,
        "steps_per_s": 1 / seconds,
        "examples_per_s": setup.config.train.batch_size / seconds,
        "flops": setup.step.flops, "bytes_accessed": _cost(setup.step, "bytes accessed"),
        "temp_bytes": setup.step.temp_bytes, "samples_ms": [s * 1e3 for s in
                                                            samples[mixer]]})
  sdict_ms = next(r["ms_per_step"] for r in rows if r["mixer"] == "sdict")
  for row in rows:
    row["time_vs_sdict"] = row["ms_per_step"] / sdict_ms
  print("steps: " + ", ".join(f"{r['mixer']} {r['ms_per_step']:.1f} ms"
                              for r in rows), flush=True)

  if breakdown:
    rows += _breakdown(setups, {r["mixer"]: r["ms_per_step"] for r in rows},
                       steps=steps, repeats=repeats)
  if profile:
    rows += _profile(setups, runners, steps=steps)

  # After the timed steps: the pipeline's reader threads are idle once its
  # prefetch buffer is full, and would share the cores with the step if timed first.
  prefetch = 8  # pipeline.make_dataset's default prefetch_batches
  seconds = time_pipeline(dataset, batches=pipeline_batches, skip=prefetch)
  rows.append({"kind": "pipeline", "batch": first.train.batch_size,
               "ms_per_batch": seconds * 1e3, "batches_per_s": 1 / seconds,
               "vs_sdict_step": seconds * 1e3 / sdict_ms,
               "worker_count": first.data.worker_count})
  print(f"input pipeline: {seconds * 1e3:.1f} ms per batch", flush=True)
  return rows


def _breakdown(setups, step_ms, *, steps, repeats):
  programs = {m: part_programs(s) for m, s in setups.items()}
  runners = {(m, part): functools.partial(program.compiled, *args)
             for m, parts in programs.items()
             for part, (program, args) in parts.items()}
  samples = bench_lib.time_rounds(runners, repeats=repeats, calls=steps)
  rows = []
  for mixer, parts in programs.items():
    accum = setups[mixer].config.optim.accum_steps
    ms = {part: _median_ms(samples[(mixer, part)]) for part in parts}
    flops = {part: program.flops for part, (program, _) in parts.items()}
    moved = {part: _cost(program, "bytes accessed") for part, (program, _) in
             parts.items()}
    difference = lambda d, a, b: None if d[a] is None or d[b] is None else d[a] - d[b]
    for d in (ms, flops, moved):
      d["fusion_text"] = difference(d, "fusion_text_with_encoder", "text")
      d["auxiliary"] = difference(d, "model", "model_without_aux")
      # The forward + backward parts run once per micro-batch, the optimizer once.
      d["sum"] = (None if any(d[p] is None for p in IN_SUM) else
                  accum * sum(d[p] for p in IN_SUM if p != "optimizer") +
                  d["optimizer"])
    for part in PARTS:
      rows.append({"kind": "part", "mixer": mixer, "part": part, "label": PARTS[part],
                   "ms": ms[part], "flops": flops[part], "bytes_accessed": moved[part],
                   "derived": part not in parts, "in_sum": part in IN_SUM,
                   "share_of_step": ms[part] / step_ms[mixer]})
    print(f"{mixer} parts: " + ", ".join(f"{p} {ms[p]:.1f} ms" for p in IN_SUM) +
          f"; sum {ms['sum']:.1f} ms against the step's {step_ms[mixer]:.1f}",
          flush=True)
  return rows


def _profile(setups, runners, *, steps):
  """Each mixer's step under the profiler, its op time by part and component."""
  rows = []
  for mixer, setup in setups.items():
    records = step_profile.trace_op_times(runners[mixer], steps,
                                          setup.step.compiled.as_text())
    summary = step_profile.summarise(records)
    total = summary["total_ms"]
    rows += [{"kind": "profile", "mixer": mixer, **r, "share": r["ms"] / total}
             for r in summary["by_part_component"]]
    rows += [{"kind": "profile_mixing", "mixer": mixer, **r, "share": r["ms"] / total}
             for r in summary["mixing_by_primitive"]]
    mixing = sum(r["ms"] for r in summary["by_part_component"]
                 if r["component"] == "token mixing")
    print(f"{mixer} profile: {total:.1f} ms of ops per step, token mixing "
          f"{mixing:.1f} ms ({mixing / total:.0%})", flush=True)
  return rows


def _profile_tables(rows) -> dict[str, str]:
  """Op time by component and the token mixing by part, one column per mixer."""
  profile = [r for r in rows if r["kind"] == "profile"]
  if not profile:
    return {}
  tables = {}
  op_total = {m: sum(r["ms"] for r in profile if r["mixer"] == m)
              for m in dict.fromkeys(r["mixer"] for r in profile)}
  for title, key, keep in (("profile: op time by component", "component",
                            lambda r: True),
                           ("profile: token mixing by part", "part",
                            lambda r: r["component"] == "token mixing")):
    totals = collections.defaultdict(float)
    for r in profile:
      if keep(r):
        totals[(r[key], r["mixer"])] += r["ms"]
    long = [{key: k, "mixer": m, "ms": ms} for (k, m), ms in totals.items()]
    table, columns = bench_lib.pivot(
        long, key, "mixer",
        lambda r: f"{r['ms']:.1f} ({r['ms'] / op_total[r['mixer']]:.0%})")
    for row in table:  # a component one mixer does not have (the question gate)
      row.update({m: "–" for m in op_total if m not in row})
    tables[f"{title}, ms per step (share of the ops' time)"] = (
        bench_lib.markdown_table(table, columns, {}))
  mixing = [r for r in rows if r["kind"] == "profile_mixing"]
  tables["profile: token mixing by JAX primitive, ms per step"] = (
      bench_lib.markdown_table(mixing, [("mixer", "mixer"), ("primitive", "primitive"),
                                        ("ms", "ms"), ("share", "share of the ops")],
                               {"ms": lambda v: f"{v:.1f}",
                                "share": lambda v: f"{v:.1%}"}))
  return tables


def train_targets(rows):
  """The issue's first two rows: SDict against attention and FNet, same config."""
  steps = {r["mixer"]: r for r in rows if r["kind"] == "step"}
  config = next(iter(steps.values()))["config"] if steps else "?"
  value = lambda mixer, key: steps.get(mixer, {}).get(key)
  pipe = next((r for r in rows if r["kind"] == "pipeline"), {})
  return [
      bench_lib.target(f"{config}: SDict training steps/s ≥ 1.3× attention's (equal "
                       "parameters)", value("sdict", "steps_per_s"),
                       value("attention", "steps_per_s"), 1.3, at_most=False),
      bench_lib.target(f"{config}: SDict training time ≤ 1.2× FNet's (equal "
                       "parameters)", value("sdict", "ms_per_step"),
                       value("fnet", "ms_per_step"), 1.2, at_most=True),
      bench_lib.target(f"{config}: input pipeline time per batch ≤ SDict's step "
                       "time (the step need not wait for input)",
                       pipe.get("ms_per_batch"), value("sdict", "ms_per_step"), 1.0,
                       at_most=True),
  ]


def report_train(rows, path):
  number = lambda fmt: lambda v: "–" if v is None else fmt.format(v)
  steps = [r for r in rows if r["kind"] == "step"]
  columns = [("mixer", "mixer"), ("width", "width"), ("params", "params"),
             ("batch", "batch"), ("ms_per_step", "ms/step (median)"),
             ("ms_min", "ms/step (min)"), ("steps_per_s", "steps/s"),
             ("time_vs_sdict", "× SDict's time"), ("flops", "GFLOP/step (XLA)")]
  formats = {"params": number("{:,}"), "ms_per_step": number("{:.1f}"),
             "ms_min": number("{:.1f}"), "steps_per_s": number("{:.2f}"),
             "time_vs_sdict": number("{:.2f}"),
             "flops": lambda v: "–" if v is None else f"{v / 1e9:.2f}"}
  tables = {"training step": bench_lib.markdown_table(steps, columns, formats)}
  parts = [r for r in rows if r["kind"] == "part"]
  if parts:
    time_cell = lambda r: ("–" if r["ms"] is None else
                           f"{r['ms']:.1f} ({r['share_of_step']:.0%})")
    flop_cell = lambda r: "–" if r["flops"] is None else f"{r['flops'] / 1e9:.3f}"
    for title, cell in (("breakdown, ms fwd+bwd (share of the step)", time_cell),
                        ("breakdown, GFLOP (XLA cost analysis)", flop_cell)):
      table, columns = bench_lib.pivot(parts, "label", "mixer", cell)
      tables[title] = bench_lib.markdown_table(table, [("label", "part")] + columns[1:],
                                               {})
  pipe = [r for r in rows if r["kind"] == "pipeline"]
  if pipe:
    tables["input pipeline"] = bench_lib.markdown_table(
        pipe, [("batch", "batch"), ("ms_per_batch", "ms/batch"),
               ("batches_per_s", "batches/s"), ("vs_sdict_step", "× SDict's step"),
               ("worker_count", "workers")],
        {"ms_per_batch": number("{:.1f}"), "batches_per_s": number("{:.1f}"),
         "vs_sdict_step": number("{:.2f}")})
  tables.update(_profile_tables(rows))
  bars = {r["mixer"]: {} for r in steps}
  for r in parts:
    if r["in_sum"] and r["ms"] is not None:
      bars[r["mixer"]][r["label"]] = r["ms"]
  bench_lib.stacked_bars_plot(
      path("bench_train.png"), bars, marks={r["mixer"]: r["ms_per_step"] for r in steps},
      mark_label="whole step (measured)",
      line=pipe[0]["ms_per_batch"] if pipe else None, line_label="input pipeline",
      xlabel="ms per training step",
      title=f"Training step by part, {steps[0]['config'] if steps else ''}")
  return tables
