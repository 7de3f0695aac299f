"""Starting a run from another run's checkpoint (config.init_from), and the
fine-tuning schedule's sparsity switch.

Sources are configs/tiny.py states written by the test (the source's own seed, Adam
moments set to 0.25 and its counts to 7, so what carries over is told apart from a
fresh init); the new run's state is built as train.py builds it. A different mesh
needs fake devices, so that case runs in a subprocess (`python
tests/test_init_from.py mesh OUT.json` by hand).
"""

import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_STEP = 7
MOMENT = 0.25  # the source's Adam moments, everywhere


def tiny_config(**init):
  """configs/tiny.py with the init_from fields of the real-data configs."""
  from sdict_jax import config_files
  config = config_files.get_config(os.path.join(ROOT, "configs", "tiny.py"))
  config.init_from = ""
  config.init_from_step = None
  config.init_exclude = ()
  config.init_optimizer = True
  config.update(init)
  return config


@functools.lru_cache(maxsize=None)
def _bundle():
  from sdict_jax.data import sources
  return sources.load(tiny_config().data, "train")


def setup(config=None, *, num_answers=None, vocab_size=None, mesh=None):
  """(model, abstract state with shardings, fresh_state(seed)) as train.py builds
  them; for the tiny config itself, built (and its init compiled) once a model."""
  if config is None and mesh is None:
    return _tiny_setup(num_answers, vocab_size)
  return _setup(config, num_answers=num_answers, vocab_size=vocab_size, mesh=mesh)


@functools.lru_cache(maxsize=None)
def _tiny_setup(num_answers, vocab_size):
  return _setup(tiny_config(), num_answers=num_answers, vocab_size=vocab_size)


def _setup(config, *, num_answers=None, vocab_size=None, mesh=None):
  import jax
  from sdict_jax import model as model_lib
  from sdict_jax import sharding
  from sdict_jax import train

  bundle = _bundle()
  num_answers = num_answers or len(bundle.answer_vocab)
  model = model_lib.from_config(
      config.model, vocab_size=vocab_size or bundle.tokenizer.vocab_size,
      num_answers=num_answers, image_size=config.data.image_size,
      max_caption_len=config.data.max_caption_len)
  optimizer, _ = train.make_optimizer(config.optim, config.train.steps)
  init_state = train.make_init_state(model, optimizer, train.example_batch(
      config, config.train.batch_size, num_answers))
  mesh = mesh or sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  shardings = sharding.named_shardings(abstract, mesh)
  init = jax.jit(init_state, out_shardings=shardings)

  def fresh_state(seed=0):
    with jax.set_mesh(mesh):
      return init(jax.random.PRNGKey(seed))

  return model, sharding.with_shardings(abstract, shardings), fresh_state


def write_source(workdir, config, fresh_state, steps=(SOURCE_STEP,)):
  """A source run: state of seed 1, Adam moments MOMENT, counts and step = step."""
  import jax
  import jax.numpy as jnp
  from sdict_jax import checkpointing

  state = fresh_state(1)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  for step in steps:
    state = dict(state, step=jnp.asarray(step, jnp.int32), opt_state=jax.tree.map(
        lambda x, step=step: (jnp.full_like(x, step) if x.dtype == jnp.int32
                              else jnp.full_like(x, MOMENT)), state["opt_state"]))
    checkpointer.save(step, state, force=True)
  checkpointer.close()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json())
  return state


def _listing(directory):
  """Every file under `directory` with its size and modification time."""
  found = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      found[path] = (os.path.getsize(path), os.path.getmtime(path))
  return found


def _leaf(tree, path):
  for key in path.split("/"):
    tree = tree[int(key)] if isinstance(tree, (list, tuple)) else tree[key]
  return tree


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """(workdir, config, state) of a tiny source run with the shapes answers."""
  workdir = str(tmp_path_factory.mktemp("source"))
  config = tiny_config()
  _, _, fresh_state = setup()
  return workdir, config, write_source(workdir, config, fresh_state)


# --------------------------------------------------------------------- carry over


def test_carried_parameters_are_exactly_the_sources_on_this_runs_layout(source):
  import jax
  from sdict_jax import init_from

  workdir, _, source_state = source
  config = tiny_config(init_from=workdir)
  _, abstract, fresh_state = setup()
  state, report = init_from.initial_state(config, abstract, fresh_state)
  assert report.step == SOURCE_STEP and report.fresh == {} and report.not_loaded == []
  assert int(state["step"]) == 0
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                      state["params"], source_state["params"])
  assert all(jax.tree.leaves(same))
  assert all(jax.tree.leaves(jax.tree.map(lambda a, s: a.sharding == s.sharding,
                                          state, abstract)))


@pytest.mark.slow
def test_at_step_0_the_loss_is_the_sources_on_the_same_batch(source):
  import jax
  from sdict_jax import init_from
  from sdict_jax import losses
  from sdict_jax import model as model_lib

  workdir, _, source_state = source
  config = tiny_config(init_from=workdir)
  model, abstract, fresh_state = setup()
  state, _ = init_from.initial_state(config, abstract, fresh_state)
  batch = model_lib.dummy_batch(4, config.data.image_size, config.data.max_text_len,
                                config.data.max_caption_len, model.num_answers)
  batch = dict(batch, image=jax.random.uniform(jax.random.PRNGKey(3),
                                               batch["image"].shape),
               caption_in=batch["caption_in"] + 3, caption_out=batch["caption_out"] + 4,
               has_caption=batch["has_caption"] + 1, has_vqa=batch["has_vqa"] + 1)

  @jax.jit
  def loss(params, step):
    outputs, aux = model.apply({"params": params}, batch, train=True,
                               rngs={"noise": jax.random.PRNGKey(0)}, mutable=["aux"])
    return losses.total_loss(outputs, batch, aux["aux"], step, config.loss)[0]

  # Same batch, same step 0 (the new run's), to the bit; a fresh init differs.
  assert float(loss(state["params"], 0)) == float(loss(source_state["params"], 0))
  assert float(loss(state["params"], 0)) != float(loss(fresh_state(0)["params"], 0))


def test_a_new_answer_vocabulary_gets_a_fresh_head_that_is_listed(source, capsys):
  import jax
  from sdict_jax import init_from

  workdir, _, source_state = source
  config = tiny_config(init_from=workdir)
  _, abstract, fresh_state = setup(num_answers=5)
  state, report = init_from.initial_state(config, abstract, fresh_state)
  # Both layers that end in the answers: the VQA head's last and the named
  # object's read (model.object_readout).
  assert sorted(report.fresh) == ["object_head/bias", "object_head/kernel",
                                  "vqa_head_1/bias", "vqa_head_1/kernel"]
  answers = len(_bundle().answer_vocab)
  assert f"(32, {answers}) in the checkpoint, (32, 5) here" in report.fresh[
      "vqa_head_1/kernel"]
  printed = capsys.readouterr().out
  assert "4 initialised afresh" in printed and "vqa_head_1/kernel" in printed
  fresh = fresh_state(0)["params"]
  np.testing.assert_array_equal(state["params"]["vqa_head_1"]["kernel"],
                                fresh["vqa_head_1"]["kernel"])
  for path in report.loaded:  # everything else, the first head layer included
    np.testing.assert_array_equal(_leaf(state["params"], path),
                                  _leaf(source_state["params"], path), err_msg=path)
  assert "vqa_head_0/kernel" in report.loaded
  assert len(report.loaded) == len(jax.tree.leaves(state["params"])) - 4


# --------------------------------------------------------------------- mismatches


def test_a_different_width_is_an_error_naming_the_parameter_and_both_shapes(source):
  from sdict_jax import init_from

  workdir, _, _ = source
  config = tiny_config(init_from=workdir)
  config.model.width = 48
  _, abstract, fresh_state = setup(config)
  with pytest.raises(init_from.InitFromError) as error:
    init_from.initial_state(config, abstract, fresh_state)
  message = str(error.value)
  assert workdir in message
  assert "decoder_0/mlp_in/kernel: (32, 64) in the checkpoint, (48, 96) in this run" in (
      message)
  assert "config.model.width: 32 in the checkpoint's run, 48 here" in message


def test_more_layers_or_atoms_are_errors_naming_the_parameters():
  from sdict_jax import init_from

  old = {"vision_0/mixer/gain": (10, 32), "vision_0/mlp_in/kernel": (32, 64)}
  new = {"vision_0/mixer/gain": (12, 32), "vision_0/mlp_in/kernel": (32, 64),
         "vision_1/mlp_in/kernel": (32, 64)}
  with pytest.raises(init_from.InitFromError) as error:
    init_from.plan_parameters(new, old)
  assert "vision_0/mixer/gain: (10, 32) in the checkpoint, (12, 32) in this run" in str(
      error.value)
  assert "vision_1/mlp_in/kernel: (32, 64) in this run, absent from the checkpoint" in (
      str(error.value))
  # ... unless re-initialised on purpose, which is then listed.
  loaded, fresh, _ = init_from.plan_parameters(
      new, old, exclude=("vision_1/.*", "vision_0/mixer/gain"))
  assert loaded == ["vision_0/mlp_in/kernel"]
  assert fresh == {"vision_0/mixer/gain": "config.init_exclude",
                   "vision_1/mlp_in/kernel": "config.init_exclude"}
  with pytest.raises(init_from.InitFromError, match="'vision_9/.*' matches no parameter"):
    init_from.plan_parameters(new, old, exclude=("vision_9/.*",))
  # Fewer layers: the checkpoint's extra parameters are not dropped silently.
  with pytest.raises(init_from.InitFromError) as error:
    init_from.plan_parameters(old, {**old, "vision_1/mlp_in/kernel": (32, 64)})
  assert "vision_1/mlp_in/kernel: (32, 64) in the checkpoint, absent from this run" in (
      str(error.value))


def test_read_outs_a_checkpoint_lacks_start_afresh_and_are_listed():
  """A checkpoint from before model.relative_readout (session 18's default) starts
  a run that has it: its three layers are initialised afresh and named, the rest
  loads; the other way round, the checkpoint's extra read-outs are left out."""
  from sdict_jax import init_from

  old = {"vision_0/mlp_in/kernel": (32, 64), "object_head/kernel": (32, 7)}
  new = {**old, "objectness_head/kernel": (32, 1), "relation_direction/kernel": (32, 2),
         "relative_gate/kernel": (32, 1)}
  loaded, fresh, _ = init_from.plan_parameters(new, old)
  assert loaded == ["object_head/kernel", "vision_0/mlp_in/kernel"]
  assert fresh == {path: "absent from the checkpoint" for path in (
      "objectness_head/kernel", "relation_direction/kernel", "relative_gate/kernel")}
  loaded, fresh, _ = init_from.plan_parameters(old, new)
  assert loaded == sorted(old) and not fresh


def test_a_different_text_vocabulary_names_both_tokenizers_and_the_fix(source):
  from sdict_jax import init_from

  workdir, _, _ = source
  config = tiny_config(init_from=workdir)
  config.data.tokenizer = "/data/spm/vqa.model"  # named, not read: sizes differ
  _, abstract, fresh_state = setup(config, vocab_size=40)
  with pytest.raises(init_from.InitFromError) as error:
    init_from.initial_state(config, abstract, fresh_state)
  message = str(error.value)
  vocab = _bundle().tokenizer.vocab_size
  assert f"the built-in tokenizer of data source 'shapes' ({vocab} tokens)" in message
  assert "the tokenizer /data/spm/vqa.model (40 tokens)" in message
  assert "--config.init_exclude='token_embedding/.*'" in message
  # Excluded on purpose: the embedding starts afresh, the rest is loaded.
  new = {"token_embedding/embedding": (40, 32), "text_0/mlp_in/kernel": (32, 64)}
  old = {"token_embedding/embedding": (vocab, 32), "text_0/mlp_in/kernel": (32, 64)}
  loaded, fresh, _ = init_from.plan_parameters(new, old,
                                               exclude=("token_embedding/.*",))
  assert loaded == ["text_0/mlp_in/kernel"]
  assert fresh == {"token_embedding/embedding": "config.init_exclude"}


# --------------------------------------------------------------------- bad input


def test_missing_empty_or_unreadable_sources_are_errors_that_change_nothing(tmp_path):
  from sdict_jax import init_from

  config = tiny_config()
  _, abstract, fresh_state = setup()
  with pytest.raises(init_from.InitFromError, match="no such file or directory"):
    init_from.initial_state(tiny_config(init_from=str(tmp_path / "nowhere")), abstract,
                            fresh_state)
  os.makedirs(tmp_path / "empty" / "checkpoints")
  with pytest.raises(init_from.InitFromError, match="holds no complete checkpoint"):
    init_from.initial_state(tiny_config(init_from=str(tmp_path / "empty")), abstract,
                            fresh_state)
  with pytest.raises(init_from.InitFromError, match="no checkpoints/ folder"):
    init_from.initial_state(tiny_config(init_from=str(tmp_path)), abstract, fresh_state)

  # Two checkpoints, the newer with its arrays gone: the older one is used; with
  # both broken, one error names the path and the fix.
  workdir = str(tmp_path / "broken")
  write_source(workdir, config, fresh_state, steps=(3, SOURCE_STEP))
  for name in os.listdir(os.path.join(workdir, "checkpoints", str(SOURCE_STEP),
                                      "state")):
    if not name.startswith("_"):  # the tree metadata stays, the arrays go
      shutil.rmtree(os.path.join(workdir, "checkpoints", str(SOURCE_STEP), "state",
                                 name), ignore_errors=True)
  _, report = init_from.initial_state(tiny_config(init_from=workdir), abstract,
                                      fresh_state)
  assert report.step == 3
  with pytest.raises(init_from.InitFromError, match="no complete checkpoint of step 5"):
    init_from.initial_state(tiny_config(init_from=workdir, init_from_step=5), abstract,
                            fresh_state)
  for name in os.listdir(os.path.join(workdir, "checkpoints", "3", "state")):
    if not name.startswith("_"):
      shutil.rmtree(os.path.join(workdir, "checkpoints", "3", "state", name),
                    ignore_errors=True)
  before = _listing(workdir)
  with pytest.raises(init_from.InitFromError) as error:
    init_from.initial_state(tiny_config(init_from=workdir), abstract, fresh_state)
  assert f"config.init_from={workdir} holds no readable checkpoint" in str(error.value)
  assert "config.init_from_step" in str(error.value)
  assert _listing(workdir) == before


def _tiny_config_file(tmp_path):
  """configs/tiny.py plus the init_from fields, as a config file for the CLI."""
  path = tmp_path / "tiny_init.py"
  path.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('t', {__file__!r})\n"
      "module = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(module)\n"
      "def get_config():\n"
      "  config = module.tiny_config()\n"
      "  config.init_from_step = __import__('ml_collections').config_dict.placeholder("
      "int)\n"
      "  return config\n")
  return str(path)


def _train(tmp_path, workdir, *overrides):
  command = [sys.executable, "-m", "sdict_jax.train", "--config",
             _tiny_config_file(tmp_path), "--workdir", str(workdir), *overrides]
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=900)
  return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_train_stops_on_a_bad_init_from_and_writes_nothing(tmp_path, source):
  source_dir, _, _ = source
  before = _listing(source_dir)
  # A source whose model differs (width 48 here, 32 there) ...
  code, output = _train(tmp_path, tmp_path / "new", f"--config.init_from={source_dir}",
                        "--config.model.width=48")
  assert code != 0
  assert f"ERROR: config.init_from={source_dir}: the checkpoint's model differs" in output
  assert "config.model.width: 32 in the checkpoint's run, 48 here" in output
  assert not os.path.exists(tmp_path / "new")
  assert _listing(source_dir) == before
  # ... and one that does not exist.
  code, output = _train(tmp_path, tmp_path / "new", "--config.init_from=runs/nowhere")
  assert code != 0
  assert "ERROR: config.init_from=runs/nowhere: no such file or directory" in output
  assert not os.path.exists(tmp_path / "new")


# --------------------------------------------------------------------- optimizer


@pytest.mark.parametrize("carry", [True, False])
def test_init_optimizer_carries_adam_moments_only_when_asked(source, carry):
  import jax
  from sdict_jax import init_from

  workdir, _, _ = source
  config = tiny_config(init_from=workdir, init_optimizer=carry)
  _, abstract, fresh_state = setup(num_answers=5)
  state, _ = init_from.initial_state(config, abstract, fresh_state)
  adam, _, schedule = state["opt_state"][1]
  kernel = adam.mu["vision_0"]["mlp_in"]["kernel"]
  expected = MOMENT if carry else 0.0
  assert np.all(np.asarray(kernel) == expected)
  assert np.all(np.asarray(adam.nu["text_0"]["mixer"]["gain"]) == expected)
  # Adam's count goes with its moments (their bias correction); the learning-rate
  # schedule and the run's step start over.
  assert int(adam.count) == (SOURCE_STEP if carry else 0)
  assert int(schedule.count) == 0 and int(state["step"]) == 0
  # The new head's moments start at zero either way.
  assert not np.any(np.asarray(adam.mu["vqa_head_1"]["kernel"]))
  assert not np.any(np.asarray(adam.nu["vqa_head_1"]["bias"]))
  assert jax.tree.structure(state) == jax.tree.structure(fresh_state(0))


# --------------------------------------------------------------------- resume


@pytest.mark.slow
def test_a_stopped_fine_tuning_run_resumes_from_its_own_checkpoint(tmp_path):
  fast = ["--config.train.eval_every=100", "--config.eval.num_examples=8"]
  code, output = _train(tmp_path, tmp_path / "pretrain", "--config.train.steps=2", *fast)
  assert code == 0, output[-3000:]
  finetune = tmp_path / "finetune"
  code, output = _train(tmp_path, finetune, f"--config.init_from={tmp_path / 'pretrain'}",
                        "--config.train.steps=2", *fast)
  assert code == 0, output[-3000:]
  assert "Initialised from" in output and "(step 2): " in output
  # The source is gone: the rerun must not need it, its own checkpoint wins.
  shutil.rmtree(tmp_path / "pretrain")
  code, output = _train(tmp_path, finetune, f"--config.init_from={tmp_path / 'pretrain'}",
                        "--config.train.steps=4", *fast)
  assert code == 0, output[-3000:]
  assert "Resuming from the checkpoint at step 2" in output
  assert "Initialised from" not in output
  rows = [json.loads(line) for line in open(finetune / "metrics.jsonl")]
  assert {r["step"] for r in rows if "loss" in r} == {2, 4}


# --------------------------------------------------------------------- mesh


def _mesh_worker(out_path):
  """Writes a source with one device, reads it onto 4 devices split by fsdp."""
  import tempfile
  import jax
  from sdict_jax import init_from
  from sdict_jax import sharding

  config = tiny_config()
  one = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  _, _, fresh_one = setup(config, mesh=one)
  workdir = tempfile.mkdtemp()
  source_state = write_source(workdir, config, fresh_one)
  config = tiny_config(init_from=workdir)
  config.mesh.update(data=1, fsdp=4, tensor=1)
  four = sharding.make_mesh(config.mesh)
  _, abstract, fresh_four = setup(config, mesh=four, num_answers=5)
  with jax.set_mesh(four):
    state, report = init_from.initial_state(config, abstract, fresh_four)
  kernel = state["params"]["vision_0"]["mlp_in"]["kernel"]
  results = {
      "devices": len(kernel.sharding.device_set),
      "spec": [a for a in kernel.sharding.spec],
      "local_shape": list(kernel.addressable_shards[0].data.shape),
      "same_layout": all(a.sharding == s.sharding for a, s in zip(
          jax.tree.leaves(state), jax.tree.leaves(abstract))),
      "equal": all(np.array_equal(np.asarray(_leaf(state["params"], p)),
                                  np.asarray(_leaf(source_state["params"], p)))
                   for p in report.loaded),
      "moments": float(np.min(np.asarray(state["opt_state"][1][0].mu["vision_0"][
          "mlp_in"]["kernel"]))),
      "fresh": sorted(report.fresh),
  }
  with open(out_path, "w") as f:
    json.dump(results, f)


@pytest.mark.slow
def test_a_checkpoint_of_one_device_starts_a_run_on_four_with_fsdp(tmp_path):
  out = tmp_path / "mesh.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, __file__, "mesh", str(out)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  results = json.loads(out.read_text())
  assert results["devices"] == 4 and results["spec"] == [None, "fsdp"]
  assert results["local_shape"] == [32, 16]  # [32, 64] split 4 ways
  assert results["same_layout"] and results["equal"]
  assert results["moments"] == MOMENT
  assert results["fresh"] == ["object_head/bias", "object_head/kernel",
                              "vqa_head_1/bias", "vqa_head_1/kernel"]


# --------------------------------------------------------------------- schedule


def test_sparsity_term_stops_at_sparsity_until_step():
  import jax
  import jax.numpy as jnp
  from ml_collections import ConfigDict
  from sdict_jax import losses

  outputs = {"caption_logits": jnp.zeros((2, 3, 5)), "answer_logits": jnp.zeros((2, 0)),
             "box": jnp.zeros((2, 4))}
  batch = {"caption_out": jnp.zeros((2, 3), jnp.int32), "has_caption": jnp.zeros(2),
           "answer_scores": jnp.zeros((2, 0)), "has_vqa": jnp.zeros(2),
           "box": jnp.zeros((2, 4)), "has_box": jnp.zeros(2)}
  aux = {"text_0": {"sparsity": jnp.asarray(2.0)}}
  config = ConfigDict(dict(label_smoothing=0.1, caption=1.0, vqa=1.0, box=0.0,
                           recon_start=0.1, recon_floor=0.01, recon_anneal_steps=10,
                           sparsity=0.5, sparsity_until_step=5))
  total = jax.jit(lambda step: losses.total_loss(outputs, batch, aux, step, config))
  before, parts = total(jnp.asarray(4))
  after, parts_after = total(jnp.asarray(5))
  assert float(before) == pytest.approx(1.0) and float(after) == 0.0
  assert float(parts_after["sparsity_loss"]) == 2.0  # still measured, not applied
  config.sparsity_until_step = 0  # 0: always on
  assert float(losses.total_loss(outputs, batch, aux, 10_000, config)[0]) == 1.0


@pytest.mark.parametrize("changes,message", [
    (dict(init_from_step=3), "config.init_from_step=3 without config.init_from"),
    (dict(init_from="runs/x", init_exclude=("vqa_head_1/(",)), "is not a regex"),
    (dict(init_exclude=("vqa_head_1/.*",)), "without config.init_from"),
    (dict(init_from="runs/x", init_from_step=-1), "config.init_from_step=-1; use a"),
])
def test_bad_init_fields_are_named_with_their_fix(changes, message):
  from ml_collections import ConfigDict
  from sdict_jax import config_checks

  config = ConfigDict(tiny_config().to_dict())
  config.update(changes)
  with pytest.raises(config_checks.ConfigError, match=message.replace("(", r"\(")):
    config_checks.validate(config, num_devices=1)


def test_fine_tuning_configs_fit_the_pre_training_checkpoint():
  from sdict_jax import config_files

  modules = {name: config_files.load_module(os.path.join(ROOT, "configs", f"{name}.py"))
             for name in ("pretrain", "vqav2", "coco_caption")}
  pretrain = modules.pop("pretrain").get_config()
  for name, module in modules.items():
    config = module.get_config()
    assert config.model.to_dict() == pretrain.model.to_dict(), name
    assert config.data.image_size == pretrain.data.image_size, name
    assert config.optim.lr < pretrain.optim.lr, name
    assert config.loss.sparsity_until_step > 0, name
    assert config.init_optimizer and not config.init_from, name
    # The docstring's command pair, with the pre-training tokenizer.
    assert "--workdir runs/pretrain" in module.__doc__, name
    assert "--config.init_from=runs/pretrain" in module.__doc__, name
    assert f"--config.data.tokenizer={'/data/spm/web.model'}" in module.__doc__, name


if __name__ == "__main__":
  if sys.argv[1] == "mesh":
    _mesh_worker(sys.argv[2])
