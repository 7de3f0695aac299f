#!/usr/bin/env bash
# The accelerator check (issue #14): on one CUDA GPU, in under 5 minutes, every
# benchmark at accelerator sizes, a 200-step training run and the 1.1B compile check.
#
#   launch/device_check.sh [--out DIR]            # CUDA machine: DIR/bench_*_gpu.json (DIR: docs)
#   launch/device_check.sh --dry-run [--out DIR]  # the same steps at toy sizes on the CPU,
#                                                 # nothing installed (DIR: a new temp dir)
#
# Steps, each under its own time limit (`timeout`), all under DEVICE_CHECK_BUDGET_S
# (default 290 s; a step gets at most what is left):
#   install       only if jax sees no GPU or sdict_jax does not import: `pip install -e .`,
#                 then "jax[cuda13]" (cuda12 for a driver older than CUDA 13) at the
#                 installed jax version (requirements.txt caps it). WHEELS=DIR installs
#                 from a folder of wheels instead (no network); JAX_CUDA=cuda12 forces.
#   devices       jax.devices(); stops the check unless the backend is a GPU
#   mixers        bench mixers: d = 1,024, N = 1,024 … 65,536, bf16, 8 heads
#   model         bench model: width 1,024, 64 … 65,536 patches, bf16
#   decode        bench decode: width 1,024, positions 64 … 65,536, bf16
#   train_run     python -m sdict_jax.train, configs/shapes.py, 200 steps
#   bench_train   bench train: configs/shapes.py's step per mixer, with its breakdown
#   compile_check the 1.1B config's training step compiled for this GPU (batch 16)
# Writes into DIR: bench_{mixers,model,decode,train}_gpu.json and their plots,
# train_run_gpu.json (the run's metrics.jsonl), compile_check_1p1b_gpu.txt, and
# device_check_gpu.json (each step's status and seconds) with device_check_gpu.log.
# Exits non-zero if any step failed, timed out or was left out for lack of time
# (the later steps still run: one hung step does not cost the others).
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
out=""
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --out) out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${DEVICE_CHECK_DRY_RUN:-0} == 1 ]] && dry_run=1

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONUNBUFFERED=1
tag=_gpu
if ((dry_run)); then
  export JAX_PLATFORMS=cpu
  out=${out:-$(mktemp -d -t device_check.XXXXXX)}
  budget=${DEVICE_CHECK_BUDGET_S:-1800}  # a shared 2-core machine compiles slowly
else
  out=${out:-docs}
  budget=${DEVICE_CHECK_BUDGET_S:-290}
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d -t device_check_work.XXXXXX)
log=$out/device_check$tag.log
steps_tsv=$work/steps.tsv
: >"$log"
: >"$steps_tsv"
deadline=$((SECONDS + budget))
failed=0

summarise() {  # device_check_gpu.json from the steps' table
  "$PYTHON" - "$steps_tsv" "$out/device_check$tag.json" "$dry_run" "$budget" <<'EOF'
import json, sys
tsv, path, dry_run, budget = sys.argv[1:]
steps = []
for line in open(tsv):
  name, status, seconds, limit, command = line.rstrip("\n").split("\t")
  steps.append({"step": name, "status": status, "seconds": int(seconds),
                "limit_s": int(limit), "command": command})
with open(path, "w") as f:
  json.dump({"dry_run": dry_run == "1", "budget_s": int(budget), "steps": steps,
             "ok": all(s["status"] == "ok" for s in steps)}, f, indent=1)
EOF
  rm -rf "$work"
}
trap summarise EXIT

# step NAME LIMIT_S COMMAND...: runs COMMAND under min(LIMIT_S, time left), logs it.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS)) start=$SECONDS rc=0 status=ok
  if ((left < 10)); then
    printf '%s\tskipped: out of the %ss budget\t0\t0\t%s\n' "$name" "$budget" "$*" \
      >>"$steps_tsv"
    echo "=== $name: SKIPPED (out of the ${budget}s budget)" | tee -a "$log"
    failed=1
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log" "$work/$name.out" || rc=$?
  if ((rc == 124 || rc == 137)); then
    status="timed out after ${limit}s"
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  [[ $status == ok ]] || failed=1
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$limit" "$*" \
    >>"$steps_tsv"
  echo "=== $name: $status in $((SECONDS - start))s" | tee -a "$log"
  return 0
}

install_cuda_jax() {
  if "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null &&
     "$PYTHON" -c "import sdict_jax.train" 2>/dev/null; then
    echo "jax already runs on the GPU and sdict_jax imports: nothing to install."
    return 0
  fi
  local pip=("$PYTHON" -m pip install -q)
  [[ -n ${WHEELS:-} ]] && pip+=(--no-index --find-links "$WHEELS")
  "${pip[@]}" -e .  # the project and its requirements (jax capped there)
  local version cuda major
  version=$("$PYTHON" -c "import jax; print(jax.__version__)")
  major=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || true)
  if [[ -n ${JAX_CUDA:-} ]]; then
    cuda=$JAX_CUDA
  elif ((${major:-13} >= 13)); then
    cuda=cuda13
  else
    cuda=cuda12
  fi
  echo "installing jax[$cuda]==$version"
  "${pip[@]}" "jax[$cuda]==$version"
}
export -f install_cuda_jax
export PYTHON

# What each step runs, by mode: accelerator sizes, or toy sizes on the CPU.
declare -A limit
bench=("$PYTHON" -m sdict_jax.bench)
to_out=(--out_dir "$out" --tag "$tag")
if ((dry_run)); then
  echo "Dry run on the CPU (toy sizes, nothing installed); output in $out" | tee -a "$log"
  install=(echo "dry run: nothing installed (would run install_cuda_jax)")
  devices="import jax; print(jax.devices())"
  tiny=configs/tiny.py
  mixers=(--sizes 64,128 --d 16 --atoms 4 --heads 2 --dtype bfloat16 --repeats 2)
  model=(--base_config "$tiny" --image_sizes 32 --model_mixers sdict --d 16 --atoms 4
         --dtype bfloat16 --repeats 2)
  decode=(--base_config "$tiny" --positions 20,40 --d 16 --atoms 4 --heads 2
          --dtype bfloat16 --decode_steps 2 --repeats 2)
  train_config=$tiny
  train_steps=4
  train_run=()
  bench_train=(--base_config "$tiny" --model_mixers sdict --batch 4 --repeats 2
               --train_steps 1 --pipeline_batches 2 --nobreakdown)
  compile_check=(--config "$tiny")
  for name in install devices mixers model decode train_run bench_train compile_check; do
    limit[$name]=300
  done
else
  install=(bash -c install_cuda_jax)
  devices="import jax; print(jax.devices()); assert jax.default_backend() == 'gpu', \
'jax sees no GPU: the _gpu files would hold CPU numbers'"
  mixers=(--sizes 1024,4096,16384,65536 --d 1024 --atoms 64 --heads 8 --dtype bfloat16
          --budget_gb 100 --max_seconds 5 --repeats 5)
  model=(--image_sizes 64,256,512,2048 --d 1024 --atoms 64 --dtype bfloat16
         --budget_gb 100 --max_seconds 5 --repeats 5)
  decode=(--positions 64,2048,65536 --d 1024 --atoms 64 --heads 8 --dtype bfloat16
          --repeats 5)
  train_config=configs/shapes.py
  train_steps=200
  train_run=(--config.eval.num_examples=100)
  bench_train=(--repeats 5 --train_steps 10)
  # One GPU: no FSDP, and batch 16, the 8-device config's share per device.
  compile_check=(--config configs/sdict_1p1b.py --config.mesh.fsdp=1
                 --config.train.batch_size=16)
  # Estimates made without a GPU; DEVICE_CHECK_BUDGET_S caps their sum.
  limit=([install]=120 [devices]=30 [mixers]=60 [model]=75 [decode]=45 [train_run]=60
         [bench_train]=90 [compile_check]=120)
fi

step install "${limit[install]}" "${install[@]}"
step devices "${limit[devices]}" "$PYTHON" -c "$devices"
if ! grep -q $'^devices\tok\t' "$steps_tsv"; then
  echo "device_check: the devices step failed; stopping before any benchmark." |
    tee -a "$log"
  exit 1
fi
step mixers "${limit[mixers]}" "${bench[@]}" mixers "${to_out[@]}" "${mixers[@]}"
step model "${limit[model]}" "${bench[@]}" model "${to_out[@]}" "${model[@]}"
step decode "${limit[decode]}" "${bench[@]}" decode "${to_out[@]}" "${decode[@]}"
step train_run "${limit[train_run]}" "$PYTHON" -m sdict_jax.train \
  --config "$train_config" --workdir "$work/train_run" \
  --config.train.steps="$train_steps" --config.train.log_every=$((train_steps / 4)) \
  --config.train.eval_every="$train_steps" --config.train.checkpoint_every="$train_steps" \
  "${train_run[@]}"
# The run's metrics.jsonl (steps/s and losses every log_every steps) as one JSON file.
"$PYTHON" - "$work/train_run/metrics.jsonl" "$out/train_run$tag.json" "$train_config" \
  "$train_steps" <<'PY' || failed=1
import json, os, sys
metrics, path, config, steps = sys.argv[1:]
lines = [json.loads(l) for l in open(metrics)] if os.path.exists(metrics) else []
with open(path, "w") as f:
  json.dump({"config": config, "steps": int(steps), "metrics": lines}, f, indent=1)
PY
step bench_train "${limit[bench_train]}" "${bench[@]}" train "${to_out[@]}" \
  "${bench_train[@]}"
step compile_check "${limit[compile_check]}" "$PYTHON" -m sdict_jax.compile_check \
  --devices 0 "${compile_check[@]}"
cp "$work/compile_check.out" "$out/compile_check_1p1b$tag.txt" 2>/dev/null || true

echo "device_check: output in $out" | tee -a "$log"
if ((failed)); then
  echo "device_check: some steps failed, timed out or did not run (see" \
    "$out/device_check$tag.json)" | tee -a "$log"
  exit 1
fi
