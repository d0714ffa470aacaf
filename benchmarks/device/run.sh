#!/usr/bin/env bash
# The device benchmark in one command: train steps (ours and the official PyTorch code on the
# same GPU), event representations, prediction, the train step's profile and the input
# pipeline, each part under a time budget (about 7 minutes on an H100 / H200 in all).
# Entry point: benchmarks/device/bench.py (its docstring lists the parts and outputs).
#
#   bash benchmarks/device/run.sh [--out=DIR] [--official_dir=PATH] [--jobs=...] [--budgets=...]
#   bash benchmarks/device/run.sh --dry_run       # tiny sizes on the CPU: every part, < 10 min
#   bash benchmarks/device/run.sh --prepare [OFFICIAL_CHECKOUT]    # once, on a machine with pip
#
# Results go to --out, else $OUT, else workdir/device_benchmark: tables.txt, results.json,
# rows.jsonl (each measurement as it is made), jobs.log, and the profiled CMFA step's trace and
# compiled HLO.
#
# The GPU machine runs Python 3.12 with JAX (CUDA), flax, optax, orbax, PyTorch, numpy, opencv
# and h5py, and cannot download anything. What else the benchmark imports is listed, pinned, in
# benchmarks/device/requirements.txt and travels as wheels in .whl/; the official code travels
# in .official/CMFA-SSMER/. Both folders are ignored by git (.git/info/exclude) and never
# committed. `--prepare` makes them here; by hand it is:
#
#   printf '/.whl/\n/.official/\n' >> .git/info/exclude
#   rm -rf .whl && mkdir .whl
#   grep -v -e '^#' -e '^$' -e '^promise' benchmarks/device/requirements.txt > /tmp/evalign_req.txt
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r /tmp/evalign_req.txt
#   python3 -m pip wheel --no-deps -w .whl "$(grep '^promise==' benchmarks/device/requirements.txt)"
#   rm -rf .official/CMFA-SSMER && mkdir -p .official/CMFA-SSMER
#   tar -C OFFICIAL_CHECKOUT --exclude=.git --exclude=.idea --exclude=assets --exclude='*.json' \
#     --exclude=__pycache__ -cf - . | tar -C .official/CMFA-SSMER -xf -
#
# (OFFICIAL_CHECKOUT: a clone of github.com/iulab-hongik/CMFA-SSMER.) Then, on the GPU machine,
# with .whl and .official carried along, this script installs the wheels into /tmp/evalign_site
# when the image lacks them (protobuf only if the image's is older than 6.33.5) and runs
# bench.py with the arguments given.
#
# With this workplace's device tool: run(command="bash benchmarks/device/run.sh",
# carry=[".whl", ".official"], timeout_s=540); the tables end the output and the files come
# back from $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"

if [[ "${1:-}" == "--prepare" ]]; then
  official="${2:-}"
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  grep -qx '/.official/' .git/info/exclude 2>/dev/null || echo '/.official/' >> .git/info/exclude
  rm -rf .whl && mkdir .whl
  grep -v -e '^#' -e '^$' -e '^promise' benchmarks/device/requirements.txt > /tmp/evalign_req.txt
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r /tmp/evalign_req.txt \
    || exit 1
  "$PYTHON" -m pip wheel -q --no-deps -w .whl "$(grep '^promise==' benchmarks/device/requirements.txt)" \
    || exit 1
  if [[ -n "$official" ]]; then
    rm -rf .official/CMFA-SSMER && mkdir -p .official/CMFA-SSMER
    tar -C "$official" --exclude=.git --exclude=.idea --exclude=assets --exclude='*.json' \
      --exclude=__pycache__ -cf - . | tar -C .official/CMFA-SSMER -xf - || exit 1
  fi
  du -sh .whl .official 2>/dev/null
  exit 0
fi

# On the GPU machine: the carried wheels, when the image lacks what they hold.
if ! "$PYTHON" -c "import grain, tensorflow_datasets, ml_collections" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "grain / tensorflow_datasets / ml_collections are missing and there is no .whl/:" \
      "run 'bash benchmarks/device/run.sh --prepare' where pip works and carry .whl" >&2
    exit 1
  fi
  wheels=$(ls .whl/*.whl | grep -v '/protobuf-')
  if ! "$PYTHON" -c "
import sys, google.protobuf as p
sys.exit(tuple(int(x) for x in p.__version__.split('.')[:3]) < (6, 33, 5))" 2>/dev/null; then
    wheels="$wheels $(ls .whl/protobuf-*.whl)"
  fi
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/evalign_site $wheels || exit 1
  export PYTHONPATH="/tmp/evalign_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -u benchmarks/device/bench.py "$@"
