"""What `python -m sdict_jax.bench` measures, and how it measures and reports it.

Times are wall-clock minima over several runs of an already compiled function
(`block_until_ready` after each), taken in interleaved rounds so that every row
of one table sees the same background load. Memory is XLA's own account of the
compiled program (`memory_analysis()`), known before anything runs: programs
over the memory budget are skipped, not run.
"""

import dataclasses
import functools
import json
import os
import platform
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sdict_jax import atom_init
from sdict_jax import chunked_attention
from sdict_jax import config_files
from sdict_jax import decoding
from sdict_jax import mixers
from sdict_jax import model as model_lib
from sdict_jax import spectral
from sdict_jax import train
from sdict_jax.data import sources

GB = 1e9
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "shapes.py")

# ---------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Program:
  """A compiled program and what XLA says it costs."""
  compiled: Any
  temp_bytes: int
  total_bytes: int  # temporaries + arguments + outputs
  flops: Optional[float]


def compile_program(fn: Callable, args, donate_argnums=()) -> Program:
  """jit → lower → compile, with memory and FLOPs from XLA's analyses."""
  return analyse(jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile())


def analyse(compiled) -> Program:
  """A compiled program with its memory (memory_analysis) and FLOPs (cost_analysis)."""
  memory = compiled.memory_analysis()
  temp = int(memory.temp_size_in_bytes)
  total = temp + int(memory.argument_size_in_bytes) + int(memory.output_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost["flops"]) if cost and cost.get("flops", -1) > 0 else None
  return Program(compiled, temp, total, flops)


def time_rounds(runners: dict[str, Callable[[], Any]], *, repeats: int,
                calls: int = 1) -> dict[str, list[float]]:
  """Seconds per call of each runner: one sample per round, `repeats` rounds.

  Round-robin (a, b, c, a, b, c, ...), so that a burst of background load hits
  every runner alike. A sample is `calls` back-to-back calls with one
  `block_until_ready` at the end (dispatch overlaps the previous call, as in a
  training loop), divided by `calls`. Each runner is called once first (warm-up).
  """
  for run in runners.values():
    jax.block_until_ready(run())
  samples = {name: [] for name in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      start = time.perf_counter()
      for _ in range(calls):
        out = run()
      jax.block_until_ready(out)
      samples[name].append((time.perf_counter() - start) / calls)
  return samples


def time_interleaved(runners: dict[str, Callable[[], Any]], *, repeats: int,
                     max_seconds: float) -> dict[str, float]:
  """Minimum seconds per call of each runner, over interleaved rounds.

  Each runner is called once to warm up, then up to `repeats` times in rounds
  (a, b, c, a, b, c, ...); one whose timed calls add up to `max_seconds` stops
  early (slow quadratic rows), but every runner is timed at least twice.
  """
  spent = {name: 0.0 for name in runners}
  best = {name: float("inf") for name in runners}
  for run in runners.values():
    jax.block_until_ready(run())
  for round_index in range(repeats):
    for name, run in runners.items():
      if round_index >= 2 and spent[name] >= max_seconds:
        continue
      start = time.perf_counter()
      jax.block_until_ready(run())
      elapsed = time.perf_counter() - start
      spent[name] += elapsed
      best[name] = min(best[name], elapsed)
  return best


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
  """This machine's measured float32 matmul rate (FLOP/s): the MFU denominator."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  program = compile_program(lambda x, y: x @ y, (a, a))
  seconds = time_interleaved({"matmul": lambda: program.compiled(a, a)},
                             repeats=repeats, max_seconds=30.0)["matmul"]
  return 2.0 * size**3 / seconds


def skip_reason(program: Program, budget_gb: float) -> Optional[str]:
  if program.total_bytes > budget_gb * GB:
    return (f"skipped: would need {program.total_bytes / GB:.1f} GB "
            f"(budget {budget_gb:g} GB)")
  return None


def projected_seconds(history: list[tuple[int, float]], size: int) -> Optional[float]:
  """Extrapolated time at `size` from the last two measured (size, seconds).

  The local growth exponent is clamped to [1, 2] (every workload here is at
  least linear and at most quadratic in its length); 2 with one point only.
  """
  if not history:
    return None
  exponent = 2.0
  if len(history) > 1:
    (n_prev, t_prev), (n_last, t_last) = history[-2:]
    exponent = np.log(t_last / t_prev) / np.log(n_last / n_prev)
  n_last, t_last = history[-1]
  return t_last * (size / n_last)**float(np.clip(exponent, 1.0, 2.0))


def machine_info() -> dict:
  """What the numbers were measured on (the load average says how noisy it was)."""
  return {"platform": jax.devices()[0].platform,
          "device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
          "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__, "load_average_start": list(os.getloadavg())}


# ---------------------------------------------------------------------------
# Workloads: the mixers alone, the model's training step, the decoders.
# ---------------------------------------------------------------------------


def mixer_functions(n, *, d, atoms, heads):
  """name → (mixer(x, *params) -> y [B, N, d], params) for the `mixers` suite."""
  mel = jnp.asarray(atom_init.mel_frequencies(atoms))
  on_grid = 2 * jnp.pi * jnp.arange(1, atoms + 1, dtype=jnp.float32) / n
  filters = (jnp.ones((atoms, d)), jnp.zeros((atoms, d)), jnp.ones((atoms,)),
             jnp.zeros((atoms,)))

  def sdict(x, omega, gain, phase_bias, amp, phase, method="dense"):
    return spectral.sdict_mix(x, omega, gain=gain, phase_bias=phase_bias, amp=amp,
                              phase=phase, method=method)

  def causal(x, omega, raw_decay, gain_re, gain_im, skip):
    return spectral.causal_sdict(x, omega, jax.nn.softplus(raw_decay),
                                 gain_re + 1j * gain_im, skip=skip)

  def attention(kernel):
    def mix(x):  # q = k = v = x in heads: the bare softmax operator
      qkv = x.reshape(x.shape[0], n, heads, d // heads)
      return kernel(qkv, qkv, qkv).reshape(x.shape)
    return mix

  return {
      "sdict_dense": (sdict, (mel,) + filters),  # learnable ω, as in training
      "sdict_fft": (lambda x, *f: sdict(x, on_grid, *f, method="fft"), filters),
      "causal_sdict": (causal, (mel, jnp.full((atoms,), -3.0),
                                jnp.full((atoms, d), 0.1), jnp.full((atoms, d), 0.1),
                                jnp.ones((d,)))),
      "attention_xla": (attention(jax.nn.dot_product_attention), ()),
      "attention_chunked": (attention(chunked_attention.chunked_attention), ()),
      "fnet": (lambda x: mixers.FNetMixer().apply({}, x), ()),
  }


def forward_backward(mixer):
  """(target, x, *params) → all gradients of ½‖mixer(x, *params) − target‖².

  A loss that needs the forward output, as any network does: with a linear
  probe ⟨y, t⟩ XLA would drop the forward pass of a linear mixer (FNet's FFT).
  """
  def loss(x, *params, target):
    return 0.5 * jnp.sum(jnp.square(mixer(x, *params).astype(jnp.float32) - target))
  return lambda target, x, *params: jax.grad(
      functools.partial(loss, target=target),
      argnums=tuple(range(1 + len(params))))(x, *params)


def model_config(mixer, *, base_config, image_size, width, atoms, batch, dtype,
                 max_caption_len=None):
  """The base experiment config with this mixer, size and resolution."""
  config = config_files.get_config(base_config)
  grid = image_size // config.model.patch_size
  # An n×n grid has only ~n²/2 distinct real 2-D frequencies for the vision atoms.
  while atoms > 1 and atoms > grid * grid // 2:
    atoms //= 2
  # K atoms in every layer, vision included: the benchmarks vary one K.
  config.model.update(mixer=mixer, width=width, num_atoms=atoms, vision_atoms=None)
  config.data.image_size = image_size
  if max_caption_len:
    config.data.max_caption_len = max_caption_len
  config.train.update(batch_size=batch, compute_dtype=dtype)
  return config


def build(config, *, decode=False):
  """(model, data bundle); baselines get SDict's parameter count (train.build_model)."""
  bundle = sources.load(config.data, "train")
  return train.build_model(config, bundle, decode=decode), bundle


def random_batch(config, bundle, seed=0):
  """A model batch shaped like the pipeline's, with random images and tokens."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  batch = model_lib.dummy_batch(config.train.batch_size, config.data.image_size,
                                config.data.max_text_len, config.data.max_caption_len,
                                max(len(bundle.answer_vocab), 1),
                                regions_per_image=config.data.get("regions_per_image", 0))
  tokens = lambda key, like: jax.random.randint(key, like.shape, 1,
                                                bundle.tokenizer.vocab_size)
  batch.update(image=jax.random.uniform(keys[0], batch["image"].shape),
               question=tokens(keys[1], batch["question"]),
               refexp=tokens(keys[2], batch["refexp"]),
               caption_in=tokens(keys[3], batch["caption_in"]),
               caption_out=tokens(keys[3], batch["caption_out"]),
               box=jnp.tile(jnp.array([0.2, 0.2, 0.6, 0.6]), (batch["box"].shape[0], 1)))
  if "region_boxes" in batch:  # every slot a box, named by random words
    batch.update(region_texts=tokens(keys[2], batch["region_texts"]),
                 region_boxes=jnp.broadcast_to(batch["box"][:, None],
                                               batch["region_boxes"].shape))
  for task in ("has_vqa", "has_caption", "has_box", "has_region"):
    if task in batch:
      batch[task] = jnp.ones_like(batch[task])
  return batch


def init_params(model, example):
  """Parameters from a jitted init compiled without optimisation (it runs once)."""
  init = lambda rng: model.init({"params": rng, "noise": rng}, example)["params"]
  compiled = jax.jit(init).lower(jax.random.PRNGKey(0)).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return compiled(jax.random.PRNGKey(0))


def _set_leaves(tree, name, value):
  """A copy of a cache tree with every leaf called `name` replaced by value(leaf)."""
  def replace(path, leaf):
    return value(leaf) if getattr(path[-1], "key", None) == name else leaf
  return jax.tree_util.tree_map_with_path(replace, tree)


class ModelDecoder:
  """The model's caption decoder (decode=True), `steps` tokens per jitted scan."""
  prefix_len = 16  # fused tokens before the caption (the decoder's prompt)

  def __init__(self, mixer, *, base_config, max_position, steps, width, atoms, dtype):
    config = model_config(mixer, base_config=base_config, image_size=128, width=width,
                          atoms=atoms, batch=1, dtype=dtype,
                          max_caption_len=max_position + steps)
    model, bundle = build(config)
    self.decode_model, _ = build(config, decode=True)
    self.width, self.steps = model.width, steps
    self.params = init_params(model, random_batch(config, bundle))
    self.prefix = jax.random.normal(jax.random.PRNGKey(1),
                                    (1, self.prefix_len, model.width))
    self.decode = jax.jit(self._decode, donate_argnums=(1,))
    self.compiled = {}  # by cache shapes: SDict's state is the same at every position

  def _decode(self, params, cache, position):
    cache = _set_leaves(cache, "index", lambda i: jnp.full_like(i, position))

    def body(carry, caption_position):
      cache, token = carry
      logits, cache = decoding.step(self.decode_model, params, cache, token,
                                    caption_position)
      return (cache, jnp.argmax(logits, -1).astype(jnp.int32)), None

    first = position - self.prefix_len
    (cache, token), _ = jax.lax.scan(body, (cache, jnp.ones((1,), jnp.int32)),
                                     first + jnp.arange(self.steps))
    return cache, token

  def program(self, position):
    """(compiled, args); attention's cache holds exactly positions < position+steps."""
    cache = decoding.init_cache(self.decode_model, self.params, self.prefix,
                                jnp.ones((1, self.prefix_len)),
                                position + self.steps - self.prefix_len)
    cache = _set_leaves(cache, "valid", jnp.ones_like)
    args = (self.params, cache, jnp.asarray(position, jnp.int32))
    shapes = str(jax.tree.map(lambda a: (a.shape, a.dtype), cache))
    if shapes not in self.compiled:
      self.compiled[shapes] = self.decode.lower(*args).compile()
    return self.compiled[shapes], args


def operator_decoder(mixer, *, position, steps, d, atoms, heads):
  """(fn(carried, tokens), args): the bare SDict recurrence or a one-query KV cache."""
  tokens = jax.random.normal(jax.random.PRNGKey(0), (steps, 1, d))
  if mixer == "sdict":
    omega = jnp.asarray(atom_init.mel_frequencies(atoms))
    decay, gain = jnp.full((atoms,), 0.05), jnp.full((atoms, d), 0.1 + 0.1j)
    step = lambda s, x: spectral.causal_sdict_step(s, x, omega, decay, gain)
    return (lambda state, tokens: jax.lax.scan(step, state, tokens),
            (spectral.causal_sdict_init(1, omega, d), tokens))

  length = position + steps

  def attend(cache, inputs):
    offset, x = inputs
    qkv = x.reshape(1, 1, heads, d // heads)
    cache = jax.lax.dynamic_update_slice_in_dim(cache, jnp.stack([qkv, qkv]),
                                                position + offset, 2)
    visible = (jnp.arange(length) <= position + offset)[None, None, None, :]
    y = jax.nn.dot_product_attention(qkv, cache[0], cache[1], mask=visible)
    return cache, y.reshape(1, d)

  return (lambda cache, tokens: jax.lax.scan(attend, cache,
                                             (jnp.arange(steps), tokens)),
          (jnp.zeros((2, 1, length, heads, d // heads)), tokens))


def carrying_runner(compiled, args, carried: int):
  """A runner feeding each call's first output (donated state) back as `carried`."""
  holder = list(args)

  def run():
    out = compiled(*holder)
    holder[carried] = out[0]
    return out
  return run


# ---------------------------------------------------------------------------
# Targets and output: JSON, markdown tables, log-log plots.
# ---------------------------------------------------------------------------


def target(name: str, numerator: Optional[float], denominator: Optional[float],
           bound: float, *, at_most: bool) -> dict:
  """`name` is met when numerator / denominator is ≤ bound (at_most) or ≥ bound."""
  if numerator is None or denominator is None:
    return {"name": name, "ratio": None, "bound": bound, "met": None,
            "verdict": "not measured"}
  ratio = numerator / denominator
  met = ratio <= bound if at_most else ratio >= bound
  return {"name": name, "ratio": ratio, "bound": bound, "met": bool(met),
          "verdict": f"{'met' if met else 'MISSED'}: {ratio:.2f}× (target "
                     f"{'≤' if at_most else '≥'} {bound:g}×)"}


def write_json(path: str, record: dict):
  record["machine"]["load_average_end"] = list(os.getloadavg())
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f, indent=1)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]],
                   formats: dict[str, Callable[[Any], str]]) -> str:
  """Rows as a markdown table; columns are (key, header) pairs."""
  lines = ["| " + " | ".join(h for _, h in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    cells = [formats.get(key, str)(row.get(key)) for key, _ in columns]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def pivot(rows: list[dict], row_key: str, column_key: str,
          value: Callable[[dict], str]) -> tuple[list[dict], list[tuple[str, str]]]:
  """Long rows → one row per row_key value, one column per column_key value."""
  columns = list(dict.fromkeys(r[column_key] for r in rows))
  table = {}
  for r in rows:
    table.setdefault(r[row_key], {row_key: r[row_key]})[r[column_key]] = value(r)
  return list(table.values()), [(row_key, row_key)] + [(c, c) for c in columns]


def loglog_plot(path: str, series: dict[str, list[tuple[float, float]]], *,
                xlabel: str, ylabel: str, title: str):
  """One line per series on log-log axes, written as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=110)
  for label, points in series.items():
    points = [(x, y) for x, y in points if y is not None]
    if points:
      axes.plot(*zip(*points), marker="o", label=label)
  axes.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
  axes.set_xscale("log", base=2)
  axes.grid(True, which="both", alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path)
  plt.close(figure)


def stacked_bars_plot(path: str, bars: dict[str, dict[str, float]], *,
                      marks: dict[str, float], mark_label: str, line: Optional[float],
                      line_label: str, xlabel: str, title: str):
  """Horizontal bars, one per key of `bars`, stacked from its (segment → value).

  `marks[bar]` draws a tick at a measured total (e.g. the whole step) on that
  bar; `line` a dashed vertical line across all bars. Negative segments (a
  difference of two noisy times) are drawn as 0.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7.4, 1.2 + 0.7 * len(bars)), dpi=110)
  segments = list(dict.fromkeys(s for parts in bars.values() for s in parts))
  colors = plt.get_cmap("tab10")
  names = list(bars)
  for i, segment in enumerate(segments):
    widths = [max(bars[b].get(segment, 0.0), 0.0) for b in names]
    lefts = [sum(max(v, 0.0) for s, v in bars[b].items()
                 if segments.index(s) < i) for b in names]
    axes.barh(names, widths, left=lefts, color=colors(i % 10), label=segment,
              height=0.55)
  for i, name in enumerate(names):
    if name in marks:
      axes.plot([marks[name]] * 2, [i - 0.38, i + 0.38], color="black", lw=2,
                label=mark_label if i == 0 else None)
  if line is not None:
    axes.axvline(line, color="gray", ls="--", label=line_label)
  axes.invert_yaxis()
  axes.set(xlabel=xlabel, title=title)
  axes.grid(True, axis="x", alpha=0.3)
  axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path)
  plt.close(figure)


def curves_plot(path: str, panels: dict[str, dict[str, list[tuple[float, float]]]], *,
                xlabels: dict[str, str], ylabel: str, title: str):
  """Learning curves on linear axes: one panel per key, one line per series."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  columns = min(len(panels), 2)
  rows = -(-len(panels) // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows),
                              dpi=110, squeeze=False)
  for ax, (name, series) in zip(axes.flat, panels.items()):
    for label, points in series.items():
      ax.plot(*zip(*points), marker=".", label=label)
    ax.set(xlabel=xlabels[name], ylabel=ylabel, title=name)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  figure.suptitle(title)
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path)
  plt.close(figure)
