"""Checks a config before anything is compiled or read, naming the field and the fix."""

import re

from sdict_jax import mixers
from sdict_jax import spectral
from sdict_jax.data import shapes
from sdict_jax.data import sources


class ConfigError(ValueError):
  """A configuration that cannot run; the message names the field and the fix."""


def _require(condition: bool, message: str):
  if not condition:
    raise ConfigError(message)


def validate(config, *, num_devices: int, num_processes: int = 1,
             num_local_devices: int = 1):
  """Raises ConfigError for the first problem found in `config`."""
  model, data, train = config.model, config.data, config.train
  _require(model.mixer in mixers.MIXERS,
           f"config.model.mixer={model.mixer!r} is unknown; use one of {mixers.MIXERS}.")
  _require(model.sdict_method in ("dense", "fft"),
           f"config.model.sdict_method={model.sdict_method!r}; use 'dense' or 'fft' "
           f"('pinv' is the test reference of {spectral.__name__}, not for training).")
  _require(model.get("pool_type", "tok") in ("tok", "gap"),
           f"config.model.pool_type={model.get('pool_type')!r}; use 'tok' (the [CLS] "
           f"token) or 'gap' (the mean of the fused tokens).")
  _require(model.get("vqa_readout", "pool") in ("pool", "tokens"),
           f"config.model.vqa_readout={model.get('vqa_readout')!r}; use 'pool' (the "
           f"head reads the pooled token) or 'tokens' (plus a per-token read-out).")
  _require(model.get("token_pooling", "mean") in ("mean", "mean_max"),
           f"config.model.token_pooling={model.get('token_pooling')!r}; use 'mean' "
           f"or 'mean_max' (how the per-token read-out pools its tokens).")
  _require(model.get("token_pooling", "mean") == "mean" or
           model.get("vqa_readout", "pool") == "tokens",
           f"config.model.token_pooling={model.get('token_pooling')!r} pools the "
           f"per-token read-out, which vqa_readout={model.get('vqa_readout')!r} does "
           f"not have; set config.model.vqa_readout='tokens'.")
  _require(model.get("box_readout", "pool") in ("pool", "select"),
           f"config.model.box_readout={model.get('box_readout')!r}; use 'pool' (the "
           f"box head reads the pooled token) or 'select' (where the selector finds "
           f"the referring expression's object).")
  _require(model.get("region_pooling", "mean") in ("mean", "tokens"),
           f"config.model.region_pooling={model.get('region_pooling')!r}; use 'mean' "
           f"(the region words from the mean of a box's vision tokens) or 'tokens' "
           f"(from each token in the box).")
  _require(not model.get("region_words", False) or "region_words" in config.loss,
           "config.model.region_words=True needs its loss weight: set "
           "config.loss.region_words (configs/shapes.py uses 3.0).")
  _require(model.num_atoms >= 1,
           f"config.model.num_atoms={model.num_atoms}; the dictionary needs K >= 1 atoms.")
  _require(model.width >= 1 and model.mlp_ratio >= 1,
           f"config.model.width={model.width} and mlp_ratio={model.mlp_ratio} must be "
           f">= 1.")
  _require(data.image_size % model.patch_size == 0,
           f"config.data.image_size={data.image_size} is not divisible by "
           f"config.model.patch_size={model.patch_size}; pick sizes that divide.")
  grid = data.image_size // model.patch_size
  real_2d_frequencies = (grid * grid) // 2 + 2
  # None (unset) means num_atoms, as in the model; any other value, 0 included, is
  # the vision layers' own K and is checked.
  field = "vision_atoms" if model.get("vision_atoms") is not None else "num_atoms"
  vision_atoms = model[field]
  _require(model.num_atoms <= vision_atoms <= real_2d_frequencies,
           f"config.model.{field}={vision_atoms} must lie between num_atoms="
           f"{model.num_atoms} and the ~{real_2d_frequencies} distinct real frequencies "
           f"of a {grid}x{grid} patch grid; change it or use smaller patches.")
  _require(model.mixer != "attention" or model.width % model.num_heads == 0,
           f"config.model.width={model.width} is not divisible by "
           f"config.model.num_heads={model.num_heads}.")
  _require(data.max_text_len <= model.max_text_len,
           f"config.data.max_text_len={data.max_text_len} exceeds "
           f"config.model.max_text_len={model.max_text_len}; raise the model's.")
  _require(data.name in sources.names(),
           f"config.data.name={data.name!r} is unknown; use one of {sources.names()}.")
  if data.get("render", "pixels") != "pixels":
    _require(data.name == "shapes" and data.render in shapes.RENDERINGS,
             f"config.data.render={data.render!r}: only the shapes source renders, "
             f"as one of {shapes.RENDERINGS}.")
    oracle_patch_size = data.get("oracle_patch_size", 8)
    _require(oracle_patch_size == model.patch_size,
             f"config.data.oracle_patch_size={oracle_patch_size} must be "
             f"config.model.patch_size={model.patch_size}: oracle images write each "
             f"patch's attributes into that patch's pixels.")
  _require(data.get("questions_per_image", 1) >= 1,
           f"config.data.questions_per_image={data.get('questions_per_image')}; a "
           f"training example asks at least 1 question of its image.")
  regions = data.get("regions_per_image", 0)
  _require(regions >= 0, f"config.data.regions_per_image={regions}; use 0 (the "
           f"region-words loss reads the grounded box) or the boxes per image.")
  _require(not regions or model.get("region_words", False),
           f"config.data.regions_per_image={regions} feeds the region-words loss, "
           f"which is off: set config.model.region_words=True (and "
           f"config.loss.region_words) or config.data.regions_per_image=0.")
  if model.get("relative_readout", False):
    _require(model.get("object_readout", False),
             "config.model.relative_readout=True reads through the named object's "
             "read-out; set config.model.object_readout=True.")
    _require("objectness" in config.loss and data.get("regions_per_image", 0) > 0,
             "config.model.relative_readout=True learns where objects are from every "
             "box of the image: set config.loss.objectness (configs/shapes.py: 1.0) "
             "and config.data.regions_per_image > 0.")
  _require(train.compute_dtype in ("float32", "bfloat16"),
           f"config.train.compute_dtype={train.compute_dtype!r}; use 'float32' or "
           f"'bfloat16'.")
  _require(train.steps >= 1, f"config.train.steps={train.steps}; need at least 1.")
  for name in ("log_every", "eval_every", "checkpoint_every", "batch_size"):
    _require(train[name] >= 1, f"config.train.{name}={train[name]} must be >= 1.")
  accum = config.optim.accum_steps
  _require(accum >= 1 and train.batch_size % accum == 0,
           f"config.train.batch_size={train.batch_size} must be a multiple of "
           f"config.optim.accum_steps={accum}.")
  _require((train.batch_size // accum) % num_devices == 0,
           f"The micro-batch config.train.batch_size / config.optim.accum_steps = "
           f"{train.batch_size // accum} is not divisible by the {num_devices} devices; "
           f"use a multiple of {num_devices}.")
  _require(train.batch_size % num_processes == 0,
           f"config.train.batch_size={train.batch_size} is not divisible by the "
           f"{num_processes} processes.")
  _require(config.eval.batch_size % num_local_devices == 0,
           f"config.eval.batch_size={config.eval.batch_size} is not divisible by the "
           f"{num_local_devices} local devices.")
  _require(config.eval.max_decode_len <= data.max_caption_len,
           f"config.eval.max_decode_len={config.eval.max_decode_len} exceeds "
           f"config.data.max_caption_len={data.max_caption_len}.")
  _require(config.loss.recon_floor > 0,
           f"config.loss.recon_floor={config.loss.recon_floor}; the reconstruction "
           f"weight anneals to a floor > 0 and is never switched off (SPEC §2).")
  until = config.loss.get("sparsity_until_step")
  _require(until is None or (isinstance(until, int) and until >= 0),
           f"config.loss.sparsity_until_step={until!r}; use a step >= 0 (the sparsity "
           f"term stops there) or 0 / None to keep it on.")
  _validate_lr_mults(config.optim.get("lr_mults", ()) or ())
  _validate_init_from(config)


def _validate_lr_mults(lr_mults):
  """optim.lr_mults: ((regex of parameter paths, factor >= 0), ...); 0 freezes."""
  example = "e.g. ((r'(vision|fusion)_\\d+/.*', 0.1),)"
  for entry in lr_mults:
    _require(isinstance(entry, (tuple, list)) and len(entry) == 2
             and isinstance(entry[0], str)
             and isinstance(entry[1], (int, float)) and entry[1] >= 0,
             f"config.optim.lr_mults holds {entry!r}; give (regex, factor >= 0) "
             f"pairs, {example}.")
    try:
      re.compile(entry[0])
    except re.error as error:
      raise ConfigError(f"config.optim.lr_mults pattern {entry[0]!r} is not a regex "
                        f"({error}); {example}.") from None


def _validate_init_from(config):
  """The fields of sdict_jax/init_from.py (their paths are checked when read: a run
  that resumes from its own checkpoint no longer needs its source)."""
  source = config.get("init_from", "")
  step = config.get("init_from_step")
  exclude = config.get("init_exclude", ()) or ()
  _require(step is None or source,
           f"config.init_from_step={step} without config.init_from; set "
           f"config.init_from to the run's workdir, or drop the step.")
  _require(step is None or (isinstance(step, int) and step >= 0),
           f"config.init_from_step={step!r}; use a checkpoint step (>= 0) of "
           f"config.init_from.")
  _require(not exclude or source,
           f"config.init_exclude={tuple(exclude)} without config.init_from: nothing is "
           f"loaded, so nothing can be excluded; set config.init_from or drop it.")
  _require(isinstance(config.get("init_optimizer", True), bool),
           f"config.init_optimizer={config.get('init_optimizer')!r}; use True (carry "
           f"Adam's moments over) or False (fresh optimizer state).")
  for pattern in exclude:
    _require(isinstance(pattern, str),
             f"config.init_exclude holds {pattern!r}; give regexes of parameter paths "
             f"as strings, e.g. ('vqa_head_1/.*',).")
    try:
      re.compile(pattern)
    except re.error as error:
      raise ConfigError(f"config.init_exclude pattern {pattern!r} is not a regex "
                        f"({error}); fix it, e.g. 'token_embedding/.*'.") from None
