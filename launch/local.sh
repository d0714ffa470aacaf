#!/usr/bin/env bash
# N processes of one job on this machine, joined over 127.0.0.1, each with 2 CPU devices:
#
#   launch/local.sh 2 -- --config=configs/ssmer.py:runlocal --workdir=workdir/ssmer_2proc
#
# is `python -m evalign_jax.main <args> --coordinator_address=127.0.0.1:PORT --num_processes=2
# --process_id=i` for i = 0, 1 (a 4-device mesh). A first argument ending in .py runs that
# script instead of the main entry point (it must accept the same flags, see
# evalign_jax/distributed.py):
#
#   launch/local.sh 2 -- tests/distributed/worker.py --stage=ssmer ...
#
# Environment: PYTHON (default python), PORT (default a free one), DEVICES_PER_PROCESS (2).
# Only process 0 prints progress; every process's errors go to stderr. When one process fails
# the others are stopped, and the first failure's exit status is returned.
set -uo pipefail

if [[ $# -lt 2 || $2 != "--" ]]; then
  echo "usage: launch/local.sh N -- [script.py] <main args>" >&2
  exit 2
fi
num=$1
shift 2
python=${PYTHON:-python}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}${XLA_FLAGS:+ $XLA_FLAGS}"
if [[ ${1:-} == *.py ]]; then
  program=("$python" "$1")
  shift
else
  program=("$python" -m evalign_jax.main)
fi

pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null; }
trap 'stop_all; exit 130' INT TERM
for ((i = 0; i < num; i++)); do
  "${program[@]}" "$@" --coordinator_address="127.0.0.1:$port" --num_processes="$num" \
      --process_id="$i" &
  pids+=($!)
done

status=0
for _ in "${pids[@]}"; do
  wait -n
  rc=$?
  if [[ $rc -ne 0 && $status -eq 0 ]]; then
    status=$rc
    echo "launch/local.sh: a process exited with status $rc; stopping the others" >&2
    stop_all
  fi
done
exit $status
