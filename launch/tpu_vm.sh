#!/usr/bin/env bash
# Training on a multi-host Cloud TPU VM slice: the same command on every worker.
#
#   launch/tpu_vm.sh my-tpu us-central2-b --config=configs/cmfa.py --workdir=/mnt/shared/cmfa \
#       --config.init.event_from=/mnt/shared/ssmer --config.init.rgb_from=/mnt/shared/rgb_slpt
#
# runs, through `gcloud compute tpus tpu-vm ssh TPU --zone=ZONE --worker=all`,
#   cd REPO_DIR && python -m evalign_jax.main --distributed=on <args>
# on every host of the slice, where jax.distributed.initialize() finds the coordinator and the
# process ids from the TPU metadata server. The repository and its environment must already be
# on every worker at REPO_DIR (default ~/evalign-jax; e.g. `--worker=all --command="git clone
# ... && pip install -e .[tpu]"`). Checkpoints and exports go to the workdir, which every
# worker must see (a shared filesystem: Filestore/NFS, or a bucket mounted with gcsfuse); the
# dataset must be at --config.data_dir on every worker.
# Environment: REPO_DIR, PYTHON (default python3), and PROJECT for gcloud's --project.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: launch/tpu_vm.sh TPU_NAME ZONE <main args>" >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
repo_dir=${REPO_DIR:-'~/evalign-jax'}
python=${PYTHON:-python3}
args=$(printf ' %q' "$@")

gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" ${PROJECT:+--project="$PROJECT"} \
  --worker=all \
  --command="cd $repo_dir && $python -m evalign_jax.main --distributed=on$args"
