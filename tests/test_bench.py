"""`python -m sdict_jax.bench`: each suite runs at toy sizes and writes what it claims."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from sdict_jax import bench
from sdict_jax import bench_lib
from sdict_jax import bench_train
from sdict_jax import mixers
from sdict_jax import step_profile

REPO = os.path.join(os.path.dirname(__file__), "..")
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")
DEVICE_CHECK = os.path.join(REPO, "launch", "device_check.sh")
RECORD_KEYS = {"suite", "settings", "machine", "rows", "targets", "tables",
               "wall_seconds"}
TARGET_KEYS = {"name", "ratio", "bound", "met", "verdict"}


def _saved(out_dir, suite):
  with open(os.path.join(out_dir, f"bench_{suite}.json")) as f:
    return json.load(f)


def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
  assert os.path.getsize(path) > 5_000, path  # axes, lines and labels, not a blank


def _mixer_settings(**changes):
  settings = dict(sizes=[256, 512], d=32, atoms=8, batch=1, dtype="float32", heads=2,
                  budget_gb=8.0, max_seconds=30.0, repeats=2)
  settings.update(changes)
  return settings


def test_mixers_suite_measures_every_mixer_and_writes_json_and_plots(tmp_path):
  record = bench.run_suite("mixers", str(tmp_path), **_mixer_settings())
  saved = _saved(tmp_path, "mixers")
  assert RECORD_KEYS <= set(saved) and saved["suite"] == "mixers"
  assert saved["settings"]["sizes"] == [256, 512]
  assert {(r["mixer"], r["n"]) for r in saved["rows"]} == {
      (m, n) for m in bench_lib.mixer_functions(256, d=32, atoms=8, heads=2)
      for n in (256, 512)}
  for row in saved["rows"]:
    assert row["status"] == "ok", row
    assert row["time_ms"] > 0 and row["temp_bytes"] >= 0, row
  # Targets are at N ≥ 1024: reported, honestly, as not measured here.
  assert all(set(t) == TARGET_KEYS and t["met"] is None for t in saved["targets"])
  assert "| n | sdict_dense |" in saved["tables"]["fwd+bwd time (ms)"]
  assert saved == json.loads(json.dumps(record))
  for suffix in ("time", "memory"):
    _assert_png(tmp_path / f"bench_mixers_{suffix}.png")


def test_programs_over_the_memory_budget_are_skipped_not_run(tmp_path):
  record = bench.run_suite("mixers", str(tmp_path),
                           **_mixer_settings(sizes=[256], budget_gb=1e-6))
  for row in record["rows"]:
    assert row["status"].startswith("skipped: would need"), row
    assert row["time_ms"] is None and row["temp_bytes"] is not None


def _mixer_row(mixer, n, time_ms, temp_bytes=1):
  return {"mixer": mixer, "n": n, "time_ms": time_ms, "temp_bytes": temp_bytes,
          "status": "ok"}


def test_targets_say_met_or_missed_with_the_measured_ratio():
  rows = [_mixer_row("fnet", 1024, 2.0), _mixer_row("sdict_dense", 1024, 3.0),
          _mixer_row("sdict_fft", 1024, 2.5)]
  targets = {t["name"]: t for t in bench.mixer_targets(rows)}
  dense = targets["SDict dense ≤ 1.5× FNet time at N=1024"]
  fft = targets["SDict fft ≤ 1.0× FNet time at N=1024"]
  assert dense["met"] is True and dense["ratio"] == pytest.approx(1.5)
  assert fft["met"] is False and fft["verdict"].startswith("MISSED: 1.25×")
  assert targets["SDict dense ≤ 1.5× FNet time at N=4096"]["met"] is None


def test_projection_follows_local_growth_between_linear_and_quadratic():
  assert bench_lib.projected_seconds([], 1024) is None
  assert bench_lib.projected_seconds([(256, 1.0)], 1024) == pytest.approx(16.0)
  assert bench_lib.projected_seconds([(256, 1.0), (512, 4.0)],
                                     1024) == pytest.approx(16.0)
  # Sub-linear growth (overheads) is not extrapolated below linear.
  assert bench_lib.projected_seconds([(256, 1.0), (512, 1.2)],
                                     1024) == pytest.approx(2.4)


@pytest.mark.slow
def test_model_suite_compares_mixers_at_equal_parameters(tmp_path):
  bench.run_suite("model", str(tmp_path), image_sizes=[32],
                  model_mixers=["sdict", "attention"], base_config=TINY_CONFIG,
                  width=16, atoms=4, batch=1, dtype="float32", budget_gb=8.0,
                  max_seconds=60.0, repeats=2)
  saved = _saved(tmp_path, "model")
  assert RECORD_KEYS | {"matmul_peak_flops"} <= set(saved)
  assert saved["matmul_peak_flops"] > 1e8
  rows = {r["mixer"]: r for r in saved["rows"]}
  assert set(rows) == {"sdict", "attention"}
  for row in rows.values():
    assert row["status"] == "ok" and row["patches"] == 16, row
    assert row["examples_per_s"] > 0 and row["mfu"] > 0, row
    assert row["patches_per_s"] == pytest.approx(16 * row["examples_per_s"])
  # The attention baseline is sized to SDict's parameter count; at width 16 one step
  # of the width (8) moves the count by about 20 %.
  assert abs(rows["attention"]["params"] / rows["sdict"]["params"] - 1) < 0.25
  assert abs(rows["attention"]["params"] / rows["sdict"]["params"] - 1) < 0.25
  assert [t["met"] for t in saved["targets"]] == [None, None]
  _assert_png(tmp_path / "bench_model_throughput.png")


@pytest.mark.slow
def test_decode_suite_times_both_decoders_at_every_position(tmp_path):
  bench.run_suite("decode", str(tmp_path), positions=[20, 40], base_config=TINY_CONFIG,
                  width=16, atoms=4, dtype="float32", heads=2, steps=2, repeats=2)
  saved = _saved(tmp_path, "decode")
  assert RECORD_KEYS <= set(saved)
  assert {(r["level"], r["mixer"], r["position"]) for r in saved["rows"]} == {
      (level, mixer, position) for level in ("model", "operator")
      for mixer in ("sdict", "attention") for position in (20, 40)}
  assert all(r["us_per_token"] > 0 for r in saved["rows"])
  _assert_png(tmp_path / "bench_decode_latency.png")


def test_decode_positions_inside_the_prompt_are_refused(tmp_path):
  with pytest.raises(ValueError, match="must exceed"):
    bench.run_suite("decode", str(tmp_path), positions=[8], base_config=TINY_CONFIG,
                    width=16, atoms=4, dtype="float32", heads=2, steps=2, repeats=2)


def test_unknown_suite_is_refused():
  with pytest.raises(ValueError, match="Unknown suite"):
    bench.run_suite("speed", "/nonexistent")
  assert "fnet" in mixers.MIXERS  # the model suite's default comparison set


@pytest.mark.slow
def test_vision_suite_trains_every_mixer_on_both_probes(tmp_path):
  bench.run_suite("vision", str(tmp_path), tasks=["lone_shape", "left_shape"],
                  variants=["sdict", "sdict (paper)", "attention", "fnet"],
                  base_config=TINY_CONFIG, steps=4, batch=8, lr=3e-3, warmup_steps=1,
                  eval_every=2, eval_examples=16)
  saved = _saved(tmp_path, "vision")
  assert RECORD_KEYS <= set(saved)
  rows = {(r["task"], r["variant"]): r for r in saved["rows"]}
  assert len(rows) == 8
  sdict_params = rows[("lone_shape", "sdict")]["vision_params"]
  for row in rows.values():
    assert [p["step"] for p in row["curve"]] == [2, 4]
    assert all(0 <= p["accuracy"] <= 1 and p["seconds"] > 0 for p in row["curve"])
    # Equal parameters: the baselines' vision encoders are resized to SDict's.
    assert abs(row["vision_params"] / sdict_params - 1) < 0.25, row
  assert len(saved["targets"]) == 4
  assert "lone_shape: held-out accuracy" in saved["tables"]
  _assert_png(tmp_path / "bench_vision_curves.png")


def test_vision_probe_labels_name_what_the_image_shows():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sdict_jax import vision_probe  # pylint: disable=g-import-not-at-top
  images, labels = vision_probe.probe_data("lone_shape", 40, seed=0, image_size=32)
  assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
  assert set(labels.tolist()) <= set(range(vision_probe.NUM_CLASSES))
  assert len(set(labels.tolist())) > 1
  # The same seed draws the same images; another seed others.
  again, _ = vision_probe.probe_data("lone_shape", 40, seed=0, image_size=32)
  other, _ = vision_probe.probe_data("lone_shape", 40, seed=1, image_size=32)
  np.testing.assert_array_equal(images, again)
  assert not np.array_equal(images, other)


def test_unknown_vision_variant_is_named_before_training(tmp_path):
  with pytest.raises(ValueError, match=r"sdict\*<filter_lr_mult>"):
    bench.run_suite("vision", str(tmp_path), tasks=["lone_shape"], variants=["conv"],
                    base_config=TINY_CONFIG, steps=2, batch=4, lr=1e-3,
                    warmup_steps=1, eval_every=1, eval_examples=4)


@pytest.mark.slow
def test_questions_suite_trains_each_readout_and_trunk_step(tmp_path):
  bench.run_suite("questions", str(tmp_path), base_config=TINY_CONFIG,
                  variants=["pool", "tokens*0"], kinds=["exist", "exist_sized"],
                  steps=4, batch=8, eval_every=2, eval_examples=8)
  saved = _saved(tmp_path, "questions")
  assert RECORD_KEYS <= set(saved)
  assert [r["variant"] for r in saved["rows"]] == ["pool", "tokens*0"]
  for row in saved["rows"]:
    assert [p["step"] for p in row["curve"]] == [2, 4]
    assert all(0 <= p["accuracy"] <= 1 and p["seconds"] > 0 for p in row["curve"])
    assert 0.5 <= row["constant_answer"] <= 1
  assert len(saved["targets"]) == 2
  _assert_png(tmp_path / "bench_questions_curves.png")


def test_question_data_holds_only_the_asked_kinds():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sdict_jax import config_files  # pylint: disable=g-import-not-at-top
  from sdict_jax import question_probe  # pylint: disable=g-import-not-at-top
  from sdict_jax.data import sources  # pylint: disable=g-import-not-at-top
  data_config = config_files.get_config(TINY_CONFIG).data
  data = question_probe.question_data(data_config, "train", 24)
  vocab = sources.load(data_config, "train").answer_vocab
  assert data["image"].shape[0] == data["question"].shape[0] == 24
  assert data["image"].dtype == np.uint8 and data["image"].shape[1:] == (32, 32, 3)
  assert {vocab[a] for a in data["answer"]} == {"yes", "no"}
  with pytest.raises(ValueError, match="questions of kinds"):
    question_probe.question_data(data_config, "validation", 10**6)
  held_out = question_probe.question_data(data_config, "validation", 10**6,
                                          at_most=True)
  assert 0 < len(held_out["answer"]) <= data_config.eval_examples


def test_unknown_question_variant_is_named_before_training(tmp_path):
  with pytest.raises(ValueError, match=r"tokens\*0.1"):
    bench.run_suite("questions", str(tmp_path), base_config=TINY_CONFIG,
                    variants=["cls"], kinds=["exist"], steps=2, batch=4,
                    eval_every=1, eval_examples=4)


def test_ridge_readout_reads_what_the_features_hold():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sdict_jax import vision_probe  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(vision_probe.NUM_CLASSES, size=600)
  noise = rng.normal(size=(600, 16))
  informative = np.concatenate([3 * np.eye(vision_probe.NUM_CLASSES)[labels], noise], 1)
  accuracy = lambda x: vision_probe.ridge_readout_accuracy(
      x[:400], labels[:400], x[400:], labels[400:], ridge_per_feature=0.1)
  assert accuracy(informative) > 0.95
  assert accuracy(noise) < 0.35  # chance is 0.2


# ---------------------------------------------------------------------------
# bench train and launch/device_check.sh
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_train_suite_times_the_real_step_per_mixer_and_its_parts(tmp_path):
  bench.run_suite("train", str(tmp_path), tag="_test", base_config=TINY_CONFIG,
                  train_mixers=["sdict", "fnet"], batch=4, dtype=None, width=None,
                  steps=1, repeats=2, breakdown=True, pipeline_batches=2,
                  profile=True)
  saved = _saved(tmp_path, "train_test")
  assert RECORD_KEYS <= set(saved) and saved["suite"] == "train"
  steps = {r["mixer"]: r for r in saved["rows"] if r["kind"] == "step"}
  assert set(steps) == {"sdict", "fnet"}
  for row in steps.values():
    assert row["batch"] == 4 and row["config"] == "tiny.py", row
    assert row["ms_per_step"] >= row["ms_min"] > 0 and len(row["samples_ms"]) == 2
    assert row["steps_per_s"] == pytest.approx(1e3 / row["ms_per_step"])
  assert steps["sdict"]["time_vs_sdict"] == 1.0
  # FNet gets SDict's parameter count (train.build_model), within a width step.
  assert abs(steps["fnet"]["params"] / steps["sdict"]["params"] - 1) < 0.25
  parts = {(r["mixer"], r["part"]): r for r in saved["rows"] if r["kind"] == "part"}
  assert set(parts) == {(m, p) for m in steps for p in bench_train.PARTS}
  for (mixer, part), row in parts.items():
    if not row["derived"]:
      assert row["ms"] > 0 and row["flops"] > 0, row
  # Derived rows are differences and sums of the measured ones.
  at = lambda part: parts[("sdict", part)]["ms"]
  assert at("fusion_text") == pytest.approx(at("fusion_text_with_encoder") - at("text"))
  assert at("sum") == pytest.approx(sum(at(p) for p in bench_train.IN_SUM))
  assert parts[("sdict", "auxiliary")]["flops"] > 0  # SDict's losses cost something
  assert parts[("fnet", "auxiliary")]["flops"] == 0  # FNet has none
  pipeline = [r for r in saved["rows"] if r["kind"] == "pipeline"]
  assert len(pipeline) == 1 and pipeline[0]["ms_per_batch"] > 0
  assert [t["met"] is None for t in saved["targets"]] == [True, False, False]
  assert "| mixer | width |" in saved["tables"]["training step"]
  assert "vision encoder" in saved["tables"]["breakdown, ms fwd+bwd (share of the step)"]
  _assert_png(tmp_path / "bench_train_test.png")
  # The profiler trace: every mixer's op time attributed, shares summing to 1.
  profile = [r for r in saved["rows"] if r["kind"] == "profile"]
  for mixer in steps:
    rows = [r for r in profile if r["mixer"] == mixer]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    by = lambda key: {r[key] for r in rows if r["ms"] > 0}
    assert {"vision encoder", "fusion", "caption decoder", "optimizer"} <= by("part")
    assert {"token mixing", "MLP matmuls", "LayerNorm"} <= by("component")
  mixing = {(r["mixer"], r["primitive"]) for r in saved["rows"]
            if r["kind"] == "profile_mixing"}
  assert ("fnet", "fft") in mixing and ("sdict", "dot_general") in mixing
  table = saved["tables"]["profile: op time by component, ms per step (share of the "
                          "ops' time)"]
  assert "| token mixing |" in table and "None" not in table


def test_profile_attributes_ops_to_parts_and_components():
  scope = "jit(train_step)/while/body/closed_call/jvp(SDictVLM)/SDictVLM.fuse"
  assert step_profile.classify(f"{scope}/SDictVLM.encode_text/text_0/mixer/dot_general"
                               ) == ("text encoder", "token mixing")
  assert step_profile.classify(f"{scope}/fusion_1/mlp_in/dot_general") == (
      "fusion", "MLP matmuls")
  assert step_profile.classify(f"{scope}/fusion_0/norm_mix/reduce_sum") == (
      "fusion", "LayerNorm")
  assert step_profile.classify(f"{scope}/fusion_norm/rsqrt") == ("fusion", "LayerNorm")
  # A norm computed elsewhere is not a LayerNorm module's.
  assert step_profile.classify(f"{scope}/fusion_0/question_film_0/norm/sqrt")[1] != (
      "LayerNorm")
  assert step_profile.classify(f"{scope}/SDictVLM.box/normalize/div") == (
      "fusion", "other")
  assert step_profile.classify("jit(train_step)/while/body/closed_call/"
                               "integer_pow") == ("heads and losses", "other")
  assert step_profile.classify("jit(train_step)/sqrt") == ("optimizer", "other")


def test_profile_reads_every_executed_op_of_a_real_trace():
  x = jnp.ones((256, 256))
  compiled = jax.jit(lambda a: jnp.tanh(a @ a) @ a).lower(x).compile()
  records = step_profile.trace_op_times(lambda: compiled(x), 3, compiled.as_text())
  opcodes = {r["opcode"] for r in records}
  assert "dot" in opcodes or "fusion" in opcodes, records
  assert all(r["ms"] > 0 for r in records)
  assert sum(r["opcode"] == "dot" or "dot" in r["name"] for r in records) >= 2, records


def _train_rows(sdict_ms, attention_ms, fnet_ms, pipeline_ms):
  rows = [{"kind": "step", "mixer": m, "config": "shapes.py", "ms_per_step": ms,
           "steps_per_s": 1e3 / ms} for m, ms in (("sdict", sdict_ms),
                                                  ("attention", attention_ms),
                                                  ("fnet", fnet_ms))]
  return rows + [{"kind": "pipeline", "ms_per_batch": pipeline_ms}]


def test_train_targets_are_the_issues_ratios_of_steps_per_second_and_time():
  targets = bench_train.train_targets(_train_rows(500.0, 700.0, 450.0, 100.0))
  speed, time_ratio, pipeline = targets
  assert speed["name"].startswith("shapes.py: SDict training steps/s ≥ 1.3×")
  assert speed["ratio"] == pytest.approx(1.4) and speed["met"] is True
  assert time_ratio["ratio"] == pytest.approx(500 / 450) and time_ratio["met"] is True
  assert pipeline["ratio"] == pytest.approx(0.2) and pipeline["met"] is True
  slow = bench_train.train_targets(_train_rows(1000.0, 700.0, 450.0, 1500.0))
  assert [t["met"] for t in slow] == [False, False, False]


def test_output_names_carry_the_tag_before_the_extension():
  assert bench.output_path("docs", "bench_mixers.json", "_gpu") == os.path.join(
      "docs", "bench_mixers_gpu.json")
  assert bench.output_path("d", "bench_mixers_time.png") == os.path.join(
      "d", "bench_mixers_time.png")


def test_device_check_refuses_unknown_arguments():
  result = subprocess.run(["bash", DEVICE_CHECK, "--gpu-please"], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2 and "unknown argument --gpu-please" in result.stderr


def test_device_check_out_of_budget_skips_steps_reports_them_and_fails(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, DEVICE_CHECK_BUDGET_S="1")
  result = subprocess.run(["bash", DEVICE_CHECK, "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 1, result.stdout + result.stderr
  with open(tmp_path / "device_check_gpu.json") as f:
    summary = json.load(f)
  assert not summary["ok"]
  assert [(s["step"], s["status"]) for s in summary["steps"]] == [
      ("install", "skipped: out of the 1s budget"),
      ("devices", "skipped: out of the 1s budget")]  # no devices: nothing else runs
  assert "stopping before any benchmark" in result.stdout


DEVICE_CHECK_STEPS = ["install", "devices", "mixers", "model", "decode", "train_run",
                      "bench_train", "compile_check"]


@pytest.mark.slow
def test_device_check_dry_run_runs_every_step_and_writes_the_gpu_files(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  result = subprocess.run(["bash", DEVICE_CHECK, "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, env=env)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
  with open(tmp_path / "device_check_gpu.json") as f:
    summary = json.load(f)
  assert summary["dry_run"] and summary["ok"]
  assert [s["step"] for s in summary["steps"]] == DEVICE_CHECK_STEPS
  assert all(s["status"] == "ok" and s["seconds"] <= s["limit_s"]
             for s in summary["steps"])
  for suite in ("mixers", "model", "decode", "train"):
    saved = _saved(tmp_path, f"{suite}_gpu")
    assert RECORD_KEYS <= set(saved) and saved["suite"] == suite
    assert saved["machine"]["platform"] == "cpu"  # the dry run never leaves the CPU
    assert saved["rows"], suite
  assert saved["settings"]["breakdown"] is False  # the dry run's train suite
  for png in ("bench_mixers_time_gpu.png", "bench_model_throughput_gpu.png",
              "bench_decode_latency_gpu.png", "bench_train_gpu.png"):
    assert (tmp_path / png).exists(), png
  with open(tmp_path / "train_run_gpu.json") as f:
    run = json.load(f)
  assert run["steps"] == 4 and any("steps_per_second" in m for m in run["metrics"])
  assert "memory per device" in (tmp_path / "compile_check_1p1b_gpu.txt").read_text()
  assert "=== compile_check: ok" in (tmp_path / "device_check_gpu.log").read_text()


def test_object_shape_readout_takes_the_3x3_tokens_around_each_object():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sdict_jax import vision_probe  # pylint: disable=g-import-not-at-top
  from sdict_jax.data import shapes  # pylint: disable=g-import-not-at-top
  images, where, labels = vision_probe.object_data(6, seed=0, image_size=64,
                                                   patch_size=8)
  assert images.shape == (6, 64, 64, 3) and len(where) == len(labels) >= 6
  assert set(labels.tolist()) <= set(range(len(shapes.SHAPES)))
  # The centre patch of each object holds object colour, not background.
  for image, row, column in where:
    patch = images[image, 8 * row:8 * row + 8, 8 * column:8 * column + 8]
    assert patch.max() > 150  # the background stays darker (shapes._BACKGROUND_MAX)
  # An "encoder" whose token is its own (image, row, column): the features are
  # the nine neighbours in row-major order, zeros past the edge.
  def encode(batch):
    count = batch.shape[0]
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1)
    ids = np.broadcast_to(grid.reshape(1, 64, 2) + 1, (count, 64, 2))
    return np.asarray(ids, np.float32)
  features = vision_probe.neighbourhood_features(
      encode, images, np.asarray([[0, 0, 3], [1, 4, 4]]), grid=8, batch_size=4)
  assert features.shape == (2, 18)
  np.testing.assert_array_equal(features[0].reshape(9, 2)[:3], 0)  # above row 0
  np.testing.assert_array_equal(features[0].reshape(9, 2)[4], [1, 4])  # itself, +1
  np.testing.assert_array_equal(features[1].reshape(9, 2)[[0, 8]], [[4, 4], [6, 6]])
