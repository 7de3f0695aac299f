#!/usr/bin/env bash
# N training processes on this machine, D CPU devices each, joined by jax.distributed
# with explicit flags: a multi-host run without a cluster (tests/test_multihost.py).
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS TRAIN_FLAGS...
#   launch/local_multiprocess.sh 2 4 --config configs/shapes.py --workdir runs/mp
#
# Each process prints with a "[process i]" prefix. When one fails the others are
# stopped; SIGINT/SIGTERM are forwarded (train.py saves a checkpoint and exits).
# Environment: PYTHON (default python), MODULE (default sdict_jax.train),
# COORDINATOR_PORT (default: a free port chosen by Python).
set -euo pipefail

if (( $# < 2 )); then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS TRAIN_FLAGS..." >&2
  exit 2
fi
num_processes=$1
devices_per_process=$2
shift 2
python=${PYTHON:-python}
module=${MODULE:-sdict_jax.train}
port=${COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices_per_process}"

pids=()
stop_all() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap stop_all INT TERM
for ((i = 0; i < num_processes; i++)); do
  "$python" -m "$module" "$@" --coordinator_address="localhost:${port}" \
      --num_processes="$num_processes" --process_id="$i" \
      > >(sed -u "s/^/[process $i] /") 2>&1 &
  pids+=($!)
done

status=0
while (( ${#pids[@]} > 0 )); do  # (not `wait -n`: portable to older bash)
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      pid=${pids[$i]}
      unset "pids[$i]"
      if ! wait "$pid"; then
        status=1
        stop_all  # the others would wait for the failed one in their next collective
      fi
    fi
  done
  sleep 1
done
exit "$status"
