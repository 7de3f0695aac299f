r"""Speed and memory of SDict against softmax attention and FNet, on this machine.

  python -m sdict_jax.bench mixers   # the token mixers alone, fwd+bwd, N = 256 … 32,768
  python -m sdict_jax.bench model    # whole-model training steps at equal parameters
  python -m sdict_jax.bench decode   # per-token latency of streaming decoding
  python -m sdict_jax.bench vision   # what the vision encoder learns in 300 steps
  python -m sdict_jax.bench questions  # one question kind, whole model, by read-out
  python -m sdict_jax.bench train    # a config's real training step per mixer, by part

Each suite prints markdown tables and its targets (met / missed, with the
ratio), and writes docs/bench_<suite>.json and docs/bench_<suite>_*.png (log-log
plots); --tag _gpu makes those bench_<suite>_gpu.json and bench_<suite>_*_gpu.png,
--out_dir puts them elsewhere. Every row of one table comes from one process run;
a time is the minimum over several runs after compilation, interleaved across the
rows of one size (bench_lib); `train` reports medians, and is described in
bench_train. Rows whose compiled memory exceeds --budget_gb, or whose
projected time per run exceeds --max_seconds, are reported as skipped.
The README's Performance section has the results on 2 CPU cores and the wall times.
"""

import functools
import os
import time

# SDict's 2K×2K solves are LAPACK calls into OpenBLAS, whose worker threads fight
# XLA's own thread pool: a 128×128 triangular solve then takes ~12 ms instead
# of ~0.3 ms. Read when OpenBLAS loads (lazily, at the first solve).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections

from sdict_jax import bench_lib
from sdict_jax import bench_questions
from sdict_jax import bench_train
from sdict_jax import config_files
from sdict_jax import mixers
from sdict_jax import model as model_lib
from sdict_jax import question_probe
from sdict_jax import train
from sdict_jax import vision_probe

SUITES = ("mixers", "model", "decode", "vision", "questions", "train")

_OUT_DIR = flags.DEFINE_string("out_dir", "docs", "Where JSON and PNG files go.")
_TAG = flags.DEFINE_string("tag", "", "Suffix of the output names, e.g. _gpu: "
                           "bench_<suite>_gpu.json, bench_<suite>_*_gpu.png.")
_SIZES = flags.DEFINE_list("sizes", [str(2**i) for i in range(8, 16)],
                           "mixers: sequence lengths N.")
_WIDTH = flags.DEFINE_integer("d", 256, "Channels d of the mixers and the decode "
                              "operator; the SDict model's width.")
_ATOMS = flags.DEFINE_integer("atoms", 64, "Atoms K.")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size (mixers, model; train: the "
                              "config's unless given).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Activation / compute dtype (train: the config's unless "
                           "given).")
_HEADS = flags.DEFINE_integer("heads", 1, "Attention heads of the bare operators "
                              "(1 head of width d: attention's smallest memory).")
_BUDGET_GB = flags.DEFINE_float("budget_gb", 8.0, "Skip programs that need more.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0,
                                  "Skip rows projected to take longer per run.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per row (minimum taken).")
_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["64", "128", "256", "512"],
                                 "model: image sizes in pixels.")
_MODEL_MIXERS = flags.DEFINE_list("model_mixers", list(mixers.MIXERS),
                                  "model, train: mixers to compare.")
_BASE_CONFIG = flags.DEFINE_string("base_config", bench_lib.DEFAULT_CONFIG,
                                   "model, decode, vision: the experiment config to "
                                   "resize; train: the config whose step is timed.")
_POSITIONS = flags.DEFINE_list("positions", ["64", "128", "256", "512", "1024",
                                             "2048", "4096"],
                               "decode: positions (tokens already in the sequence).")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 16, "decode: tokens per timed "
                                     "call (a jitted scan, as in decoding.greedy).")
_TASKS = flags.DEFINE_list("tasks", list(vision_probe.TASKS), "vision: probes.")
_VARIANTS = flags.DEFINE_list("variants", ["sdict", "sdict (paper)", "attention",
                                           "fnet"], "vision: mixers to compare.")
_PROBE_STEPS = flags.DEFINE_integer("probe_steps", 300, "vision: training steps.")
_PROBE_BATCH = flags.DEFINE_integer("probe_batch", 64,
                                    "vision, questions: batch size.")
_PROBE_LR = flags.DEFINE_float("probe_lr", 3e-3, "vision: peak learning rate.")
_QUESTION_VARIANTS = flags.DEFINE_list(
    "question_variants", list(bench_questions.VARIANTS),
    "questions: <vqa_readout>[*<trunk step factor>], e.g. tokens*0.1.")
_QUESTION_KINDS = flags.DEFINE_list("question_kinds",
                                    list(question_probe.EXISTENCE),
                                    "questions: shapes question kinds to train on.")
_QUESTION_STEPS = flags.DEFINE_integer("question_steps", 600,
                                       "questions: training steps.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 5, "train: back-to-back steps "
                                    "(or part calls) per timed sample.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "train: also time the step's parts.")
_PROFILE = flags.DEFINE_bool("profile", False, "train: also trace the step with "
                             "jax.profiler and attribute its op time to model parts.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 20, "train: input "
                                         "batches timed.")


# ---------------------------------------------------------------------------
# mixers: each token mixer alone, forward + backward.
# ---------------------------------------------------------------------------


def run_mixers(sizes, *, d, atoms, batch, dtype, heads, budget_gb, max_seconds,
               repeats):
  rows, history = [], {}
  for n in sizes:
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, n, d)).astype(dtype)
    target = jax.random.normal(jax.random.PRNGKey(1), (batch, n, d))
    runners, measured = {}, {}
    for name, (mixer, params) in bench_lib.mixer_functions(
        n, d=d, atoms=atoms, heads=heads).items():
      row = {"mixer": name, "n": n, "time_ms": None, "temp_bytes": None,
             "flops": None, "status": "ok"}
      rows.append(row)
      projected = bench_lib.projected_seconds(history.get(name, []), n)
      if projected is not None and projected > max_seconds:
        row["status"] = f"skipped: would take ~{projected:.0f} s per run"
        continue
      args = (target, x) + params
      program = bench_lib.compile_program(bench_lib.forward_backward(mixer), args)
      row.update(temp_bytes=program.temp_bytes, flops=program.flops)
      row["status"] = bench_lib.skip_reason(program, budget_gb) or "ok"
      if row["status"] == "ok":
        runners[name] = functools.partial(program.compiled, *args)
        measured[name] = row
    times = bench_lib.time_interleaved(runners, repeats=repeats,
                                       max_seconds=max_seconds)
    for name, seconds in times.items():
      measured[name]["time_ms"] = seconds * 1e3
      history.setdefault(name, []).append((n, seconds))
    print(f"N={n}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()),
          flush=True)
  return rows


def mixer_targets(rows):
  at = {(r["mixer"], r["n"]): r for r in rows}
  value = lambda mixer, n, key="time_ms": at.get((mixer, n), {}).get(key)
  targets = []
  for n in (1024, 4096, 16384):
    for method, bound in (("dense", 1.5), ("fft", 1.0)):
      targets.append(bench_lib.target(
          f"SDict {method} ≤ {bound}× FNet time at N={n}", value(f"sdict_{method}", n),
          value("fnet", n), bound, at_most=True))
  for attention in ("attention_xla", "attention_chunked"):
    targets.append(bench_lib.target(
        f"{attention} time ≥ 40× SDict dense at N=16384", value(attention, 16384),
        value("sdict_dense", 16384), 40, at_most=False))
    targets.append(bench_lib.target(
        f"{attention} temp memory ≥ 50× SDict dense at N=16384",
        value(attention, 16384, "temp_bytes"),
        value("sdict_dense", 16384, "temp_bytes"), 50, at_most=False))
  targets.append(bench_lib.target(
      "SDict dense time N=16384 ≤ 20× N=1024", value("sdict_dense", 16384),
      value("sdict_dense", 1024), 20, at_most=True))
  return targets


def report_mixers(rows, path):
  tables = {}
  for title, key, scale, fmt in (("fwd+bwd time (ms)", "time_ms", 1, "{:.2f}"),
                                 ("compiled temp memory (MB)", "temp_bytes", 1e6,
                                  "{:.1f}")):
    cell = lambda r, key=key, scale=scale, fmt=fmt: (
        fmt.format(r[key] / scale) if r["status"] == "ok"
        else r["status"].split(" (")[0])
    table, columns = bench_lib.pivot(rows, "n", "mixer", cell)
    tables[title] = bench_lib.markdown_table(table, columns, {})
  for suffix, key, label in (("time", "time_ms", "fwd+bwd time (ms)"),
                             ("memory", "temp_bytes", "compiled temp memory (bytes)")):
    series = {}
    for r in rows:
      if r["status"] == "ok":
        series.setdefault(r["mixer"], []).append((r["n"], r[key]))
    bench_lib.loglog_plot(path(f"bench_mixers_{suffix}.png"), series,
                          xlabel="sequence length N", ylabel=label,
                          title="Token mixers alone, forward + backward")
  return tables


# ---------------------------------------------------------------------------
# model: the whole model's training step, each mixer at equal parameters.
# ---------------------------------------------------------------------------


def run_model(image_sizes, *, model_mixers, base_config, width, atoms, batch, dtype,
              budget_gb, max_seconds, repeats):
  peak = bench_lib.matmul_peak_flops()
  print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  rows, history = [], {}
  for image_size in image_sizes:
    runners, measured = {}, {}
    for mixer in model_mixers:
      config = bench_lib.model_config(mixer, base_config=base_config,
                                      image_size=image_size, width=width, atoms=atoms,
                                      batch=batch, dtype=dtype)
      model, bundle = bench_lib.build(config)
      row = {"mixer": mixer, "image_size": image_size,
             "patches": (image_size // config.model.patch_size)**2,
             "width": model.width, "atoms": model.num_atoms, "step_ms": None,
             "examples_per_s": None, "patches_per_s": None, "flops": None,
             "mfu": None, "temp_bytes": None, "status": "ok",
             "params": model_lib.count_parameters(model, image_size)}
      rows.append(row)
      projected = bench_lib.projected_seconds(history.get(mixer, []), row["patches"])
      if projected is not None and projected > max_seconds:
        row["status"] = f"skipped: would take ~{projected:.0f} s per step"
        continue
      optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
      example = bench_lib.random_batch(config, bundle)
      params = bench_lib.init_params(model, example)
      state = {"params": params, "opt_state": optimizer.init(params),
               "step": jnp.zeros((), jnp.int32)}
      step = functools.partial(train.train_step, model=model,
                               optimizer=optimizer, config=config,
                               base_rng=jax.random.PRNGKey(1))
      program = bench_lib.compile_program(step, (state, example), donate_argnums=(0,))
      row.update(flops=program.flops, temp_bytes=program.temp_bytes)
      row["status"] = bench_lib.skip_reason(program, budget_gb) or "ok"
      if row["status"] == "ok":
        # The step donates its state: each call feeds the new state to the next.
        runners[mixer] = bench_lib.carrying_runner(program.compiled,
                                                   (state, example), 0)
        measured[mixer] = row
    times = bench_lib.time_interleaved(runners, repeats=repeats,
                                       max_seconds=max_seconds)
    for mixer, seconds in times.items():
      row = measured[mixer]
      history.setdefault(mixer, []).append((row["patches"], seconds))
      row.update(step_ms=seconds * 1e3, examples_per_s=batch / seconds,
                 patches_per_s=batch * row["patches"] / seconds,
                 mfu=row["flops"] / seconds / peak if row["flops"] else None)
    print(f"{image_size}px: " + ", ".join(f"{k} {v * 1e3:.0f} ms/step"
                                          for k, v in times.items()), flush=True)
  return rows, peak


def model_targets(rows):
  at = {(r["mixer"], r["patches"]): r["examples_per_s"] for r in rows}
  return [bench_lib.target(
      f"SDict training throughput ≥ {bound}× attention at {patches} patches",
      at.get(("sdict", patches)), at.get(("attention", patches)), bound, at_most=False)
          for patches, bound in ((1024, 1.3), (4096, 2.5))]


def report_model(rows, path):
  columns = [("mixer", "mixer"), ("image_size", "px"), ("patches", "patches"),
             ("width", "width"), ("params", "params"), ("step_ms", "ms/step"),
             ("examples_per_s", "examples/s"), ("patches_per_s", "patches/s"),
             ("mfu", "MFU"), ("status", "status")]
  number = lambda fmt: lambda v: "–" if v is None else fmt.format(v)
  formats = {"params": number("{:,}"), "step_ms": number("{:.0f}"),
             "examples_per_s": number("{:.2f}"), "patches_per_s": number("{:.0f}"),
             "mfu": number("{:.1%}")}
  series = {}
  for r in rows:
    if r["status"] == "ok":
      series.setdefault(r["mixer"], []).append((r["patches"], r["examples_per_s"]))
  bench_lib.loglog_plot(path("bench_model_throughput.png"), series,
                        xlabel="image patches", ylabel="training examples / s",
                        title="Whole-model training throughput, equal parameters")
  return {"training step": bench_lib.markdown_table(rows, columns, formats)}


# ---------------------------------------------------------------------------
# decode: per-token latency against the position.
# ---------------------------------------------------------------------------


def run_decode(positions, *, base_config, width, atoms, dtype, heads, steps, repeats):
  if min(positions) <= bench_lib.ModelDecoder.prefix_len:
    raise ValueError(f"Decode positions must exceed the "
                     f"{bench_lib.ModelDecoder.prefix_len}-token prefix.")
  models = {mixer: bench_lib.ModelDecoder(
      mixer, base_config=base_config, max_position=max(positions), steps=steps,
      width=width, atoms=atoms, dtype=dtype) for mixer in ("sdict", "attention")}
  rows = []
  for position in positions:
    runners, measured = {}, {}
    for level in ("model", "operator"):
      for mixer in ("sdict", "attention"):
        if level == "model":
          compiled, args = models[mixer].program(position)
          row_width, carried = models[mixer].width, 1
        else:
          fn, args = bench_lib.operator_decoder(mixer, position=position, steps=steps,
                                                d=width, atoms=atoms, heads=heads)
          compiled = jax.jit(fn, donate_argnums=(0,)).lower(*args).compile()
          row_width, carried = width, 0
        name = f"{level}/{mixer}"
        measured[name] = {"level": level, "mixer": mixer, "position": position,
                          "width": row_width, "us_per_token": None}
        rows.append(measured[name])
        runners[name] = bench_lib.carrying_runner(compiled, args, carried)
    times = bench_lib.time_interleaved(runners, repeats=repeats, max_seconds=30.0)
    for name, seconds in times.items():
      measured[name]["us_per_token"] = seconds / steps * 1e6
    print(f"position {position}: " + ", ".join(
        f"{k} {v / steps * 1e6:.0f} µs/token" for k, v in times.items()), flush=True)
  return rows


def decode_targets(rows):
  at = {(r["level"], r["mixer"], r["position"]): r["us_per_token"] for r in rows}
  return [bench_lib.target(
      f"SDict {level} per-token latency at position 2048 ≤ 1.2× at 64",
      at.get((level, "sdict", 2048)), at.get((level, "sdict", 64)), 1.2, at_most=True)
          for level in ("model", "operator")]


def report_decode(rows, path):
  tables, series = {}, {}
  for level in ("model", "operator"):
    table, columns = bench_lib.pivot([r for r in rows if r["level"] == level],
                                     "position", "mixer",
                                     lambda r: f"{r['us_per_token']:.0f}")
    tables[f"{level}: µs per token"] = bench_lib.markdown_table(table, columns, {})
  for r in rows:
    series.setdefault(f"{r['mixer']} ({r['level']})", []).append(
        (r["position"], r["us_per_token"]))
  bench_lib.loglog_plot(path("bench_decode_latency.png"), series,
                        xlabel="position (tokens already in the sequence)",
                        ylabel="µs per token",
                        title="Streaming decoding: per-token latency")
  return tables


# ---------------------------------------------------------------------------
# vision: one-minute probes of what the vision encoder learns (vision_probe).
# ---------------------------------------------------------------------------

# name → (mixer, optimizer overrides). "sdict (paper)" steps its filters at the
# plain learning rate, as the paper's AdamW does; "sdict*M" at M × the rate.
VISION_VARIANTS = {"sdict": ("sdict", {}),
                   "sdict (paper)": ("sdict", {"filter_lr_mult": 1.0}),
                   "attention": ("attention", {}), "fnet": ("fnet", {})}


def vision_variant(name: str) -> tuple[str, dict]:
  if name in VISION_VARIANTS:
    return VISION_VARIANTS[name]
  mixer, _, mult = name.partition("*")
  try:
    if mixer == "sdict" and mult:
      return "sdict", {"filter_lr_mult": float(mult)}
  except ValueError:
    pass
  raise ValueError(f"Unknown vision variant {name!r}; choose from "
                   f"{sorted(VISION_VARIANTS)} or sdict*<filter_lr_mult>, e.g. sdict*30.")


def run_vision(tasks, *, variants, base_config, steps, batch, lr, warmup_steps,
               eval_every, eval_examples):
  for name in variants:
    vision_variant(name)  # a bad name fails before anything trains
  config = config_files.get_config(base_config)
  image_size = config.data.image_size
  sdict_params = vision_probe.vision_parameter_count(
      vision_probe.build_vlm(config.model, image_size), image_size)
  rows = []
  for task in tasks:
    data = (*vision_probe.probe_data(task, steps * batch, seed=0,
                                     image_size=image_size),
            *vision_probe.probe_data(task, eval_examples, seed=1,
                                     image_size=image_size))
    for name in variants:
      mixer, optim_changes = vision_variant(name)
      model_config = ml_collections.ConfigDict(config.model.to_dict())
      model_config.mixer = mixer
      if mixer != "sdict":  # equal parameters: the vision encoder's count
        model_config.width = vision_probe.equal_vision_width(model_config, sdict_params,
                                                             image_size)
      optim = ml_collections.ConfigDict(config.optim.to_dict())
      optim.update(lr=lr, warmup_steps=warmup_steps, accum_steps=1, **optim_changes)
      result = vision_probe.run_probe(task, model_config, optim, steps=steps,
                                      batch_size=batch, eval_every=eval_every,
                                      eval_examples=eval_examples,
                                      image_size=image_size, data=data)
      rows.append(dict(result, variant=name, **_time_to(result["curve"], 0.5)))
      print(f"{task} {name}: " + " ".join(f"{p['accuracy']:.2f}"
                                          for p in result["curve"]), flush=True)
  return rows


def _time_to(curve, accuracy):
  first = next((p for p in curve if p["accuracy"] >= accuracy), None)
  return {"steps_to_half": first and first["step"],
          "seconds_to_half": first and first["seconds"]}


def vision_targets(rows):
  at = {(r["task"], r["variant"]): r for r in rows}
  targets = []
  for task in dict.fromkeys(r["task"] for r in rows):
    final = lambda name: at.get((task, name), {}).get("curve", [{}])[-1].get("accuracy")
    targets.append(bench_lib.target(
        f"{task}: SDict's final accuracy ≥ attention's (equal parameters)",
        final("sdict"), final("attention"), 1.0, at_most=False))
    steps = lambda name: at.get((task, name), {}).get("steps_to_half")
    targets.append(bench_lib.target(
        f"{task}: SDict reaches 0.5 in ≤ attention's steps",
        steps("sdict"), steps("attention"), 1.0, at_most=True))
  return targets


def report_vision(rows, path):
  tables, panels, xlabels = {}, {}, {}
  for task in dict.fromkeys(r["task"] for r in rows):
    task_rows = [r for r in rows if r["task"] == task]
    marks = [p["step"] for p in task_rows[0]["curve"]]
    marks = [m for m in marks if m % 100 == 0] or marks
    columns = ([("variant", "mixer"), ("width", "width"),
                ("vision_params", "vision params")] +
               [(f"at_{m}", f"step {m}") for m in marks] +
               [("steps_to_half", "steps to 0.5"),
                ("seconds_to_half", "seconds to 0.5"), ("seconds", "seconds"),
                ("filter_change", f"filters moved, step {marks[0]}"),
                ("kernel_change", f"kernels moved, step {marks[0]}")])
    table = []
    for r in task_rows:
      at = {p["step"]: p for p in r["curve"]}
      table.append(dict(r, seconds=r["curve"][-1]["seconds"],
                        filter_change=at[marks[0]]["filter_change"],
                        kernel_change=at[marks[0]]["kernel_change"],
                        **{f"at_{m}": at[m]["accuracy"] for m in marks}))
    number = lambda fmt: lambda v: "–" if v is None else fmt.format(v)
    formats = {f"at_{m}": number("{:.2f}") for m in marks}
    formats.update(vision_params=number("{:,}"), seconds_to_half=number("{:.0f}"),
                   seconds=number("{:.0f}"), steps_to_half=number("{}"),
                   filter_change=number("{:.1%}"), kernel_change=number("{:.1%}"))
    tables[f"{task}: held-out accuracy"] = bench_lib.markdown_table(table, columns,
                                                                   formats)
    for axis, key in (("step", "step"), ("seconds", "seconds")):
      panel = f"{task} / {axis}"
      xlabels[panel] = ("training step" if axis == "step"
                        else "training seconds (compilation included)")
      panels[panel] = {r["variant"]: [(p[key], p["accuracy"]) for p in r["curve"]]
                       for r in task_rows}
  bench_lib.curves_plot(path("bench_vision_curves.png"), panels,
                        xlabels=xlabels, ylabel="held-out accuracy (chance 0.2)",
                        title="Vision encoder probes, equal parameters")
  return tables


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------

_SUITE_FUNCTIONS = {"mixers": (run_mixers, mixer_targets, report_mixers),
                    "model": (run_model, model_targets, report_model),
                    "decode": (run_decode, decode_targets, report_decode),
                    "vision": (run_vision, vision_targets, report_vision),
                    "questions": (bench_questions.run_questions,
                                  bench_questions.questions_targets,
                                  bench_questions.report_questions),
                    "train": (bench_train.run_train, bench_train.train_targets,
                              bench_train.report_train)}


def output_path(out_dir: str, name: str, tag: str = "") -> str:
  """out_dir/name with `tag` before the extension (bench_x.json → bench_x_gpu.json)."""
  stem, extension = os.path.splitext(name)
  return os.path.join(out_dir, stem + tag + extension)


def run_suite(suite: str, out_dir: str, *, tag: str = "", **settings) -> dict:
  """Runs one suite, writes its JSON and plots, returns the JSON record."""
  if suite not in SUITES:
    raise ValueError(f"Unknown suite {suite!r}; choose one of {SUITES}.")
  run, judge, report = _SUITE_FUNCTIONS[suite]
  record = {"suite": suite, "settings": dict(settings),
            "machine": bench_lib.machine_info()}
  start = time.perf_counter()
  rows = run(**settings)
  if suite == "model":
    rows, record["matmul_peak_flops"] = rows
  path = functools.partial(output_path, out_dir, tag=tag)
  record.update(rows=rows, targets=judge(rows), tables=report(rows, path),
                wall_seconds=time.perf_counter() - start)
  bench_lib.write_json(path(f"bench_{suite}.json"), record)
  return record


def settings_from_flags(suite: str) -> dict:
  common = dict(atoms=_ATOMS.value, dtype=_DTYPE.value)
  if suite == "mixers":
    return dict(common, sizes=[int(s) for s in _SIZES.value], d=_WIDTH.value,
                batch=_BATCH.value, heads=_HEADS.value, budget_gb=_BUDGET_GB.value,
                max_seconds=_MAX_SECONDS.value, repeats=_REPEATS.value)
  if suite == "model":
    return dict(common, image_sizes=[int(s) for s in _IMAGE_SIZES.value],
                model_mixers=list(_MODEL_MIXERS.value), base_config=_BASE_CONFIG.value,
                width=_WIDTH.value, batch=_BATCH.value, budget_gb=_BUDGET_GB.value,
                max_seconds=_MAX_SECONDS.value, repeats=_REPEATS.value)
  if suite == "train":  # the config's own batch, dtype and width unless given
    return dict(base_config=_BASE_CONFIG.value, train_mixers=list(_MODEL_MIXERS.value),
                batch=_BATCH.value if _BATCH.present else None,
                dtype=_DTYPE.value if _DTYPE.present else None,
                width=_WIDTH.value if _WIDTH.present else None,
                steps=_TRAIN_STEPS.value, repeats=_REPEATS.value,
                breakdown=_BREAKDOWN.value, pipeline_batches=_PIPELINE_BATCHES.value,
                profile=_PROFILE.value)
  if suite == "vision":
    return dict(tasks=list(_TASKS.value), variants=list(_VARIANTS.value),
                base_config=_BASE_CONFIG.value, steps=_PROBE_STEPS.value,
                batch=_PROBE_BATCH.value, lr=_PROBE_LR.value, warmup_steps=30,
                eval_every=50, eval_examples=512)
  if suite == "questions":
    return dict(base_config=_BASE_CONFIG.value, variants=list(_QUESTION_VARIANTS.value),
                kinds=list(_QUESTION_KINDS.value), steps=_QUESTION_STEPS.value,
                batch=_PROBE_BATCH.value, eval_every=50,
                eval_examples=500)  # the shapes config's validation scenes
  return dict(common, positions=[int(p) for p in _POSITIONS.value],
              base_config=_BASE_CONFIG.value, width=_WIDTH.value, heads=_HEADS.value,
              steps=_DECODE_STEPS.value, repeats=_REPEATS.value)


def main(argv):
  if len(argv) != 2 or argv[1] not in SUITES:
    raise app.UsageError(f"Usage: python -m sdict_jax.bench {{{'|'.join(SUITES)}}} "
                         "[--flags]")
  suite = argv[1]
  record = run_suite(suite, _OUT_DIR.value, tag=_TAG.value,
                     **settings_from_flags(suite))
  for title, table in record["tables"].items():
    print(f"\n{suite}: {title}\n\n{table}")
  print("\n" + "\n".join(f"- {t['name']}: {t['verdict']}" for t in record["targets"]))
  print(f"\n{suite} suite: {record['wall_seconds']:.0f} s; wrote "
        f"{output_path(_OUT_DIR.value, f'bench_{suite}.json', _TAG.value)} and plots.")


if __name__ == "__main__":
  app.run(main)
