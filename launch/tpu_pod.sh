#!/usr/bin/env bash
# Training on every host of a Cloud TPU VM slice: one process per host, joined by
# jax.distributed (sdict_jax/distributed.py detects the TPU VM; JAX reads the
# slice's hosts from the metadata server).
#
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --config configs/sdict_1p1b.py \
#       --workdir /mnt/shared/runs/sdict_1p1b --config.data.vqa_dir=/mnt/shared/vqav2 ...
#
# Once before, copy the repository to every host and install it (REPO_DIR below):
#
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --setup
#
# The workdir and the data must be visible to every host (a Filestore/NFS mount).
# Environment: TPU, ZONE (required), PROJECT, REPO_DIR (default sdict_jax in the
# home directory on each host), PYTHON (default python3).
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
repo_dir=${REPO_DIR:-sdict_jax}
python=${PYTHON:-python3}
ssh_all=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then ssh_all+=(--project="$PROJECT"); fi

cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--setup" ]]; then
  tar --exclude=./.git --exclude=./runs -czf /tmp/sdict_jax.tgz .
  gcloud compute tpus tpu-vm scp /tmp/sdict_jax.tgz "$TPU":sdict_jax.tgz --zone="$ZONE" \
      --worker=all ${PROJECT:+--project="$PROJECT"}
  "${ssh_all[@]}" --command="mkdir -p $repo_dir && tar -xzf sdict_jax.tgz -C $repo_dir && \
      $python -m pip install -q 'jax[tpu]<0.10' -r $repo_dir/requirements.txt"
  exit 0
fi

flags=$(printf ' %q' "$@")
"${ssh_all[@]}" --command="cd $repo_dir && PYTHONPATH=. $python -m sdict_jax.train$flags"
