"""Multi-process training on one machine (launch/local.sh: 2 processes x 2 CPU devices), against
single-process runs of the same programs, and a process dying mid-job.

Runs (module-scoped, shared by the tests), tiny models at 32 px on synthetic_faces/tiny, each
job running ssmer then cmfa:
  2 processes: ssmer on mesh data=4, cmfa on mesh data=2 x fsdp=2 (2 steps each)
  then 1 process on 1 device in the same workdirs: restore (resharded), resume to step 3.
The worker (tests/distributed/worker.py) records each run's loss on one fixed global batch.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from data_pipelines.build import ensure_built
from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import models

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = "tests/distributed/worker.py"
pytestmark = pytest.mark.slow


def env(**extra):
  cache = os.path.join(tempfile.gettempdir(), f"evalign_jax_test_cache_{os.getuid()}",
                       "distributed")
  # Every run here compiles with the test session's XLA_FLAGS (conftest.py: unoptimised, which
  # compiles about twice as fast), so the losses compared come from the same arithmetic.
  return {**os.environ, "PYTHON": sys.executable, "EVALIGN_JAX_CACHE": cache,
          "JAX_PLATFORMS": "cpu", **extra}


def start(args, **extra):
  return subprocess.Popen(args, cwd=REPO, env=env(**extra), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def finish(proc, what, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out[-6000:]}"
  return out


def worker_args(root, out, *extra):
  return [WORKER, f"--workdir={root}", f"--data_dir={root / 'data'}", f"--out={out}",
          f"--rgb_from={root / 'rgb'}", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("distributed")
  ensure_built("synthetic_faces/tiny", str(root / "data"))
  # cmfa's frozen RGB branch: a fresh tiny SLPT export (what rgb_slpt would leave).
  config = json.loads(config_utils.load_config("configs/rgb_slpt.py:tiny").to_json())
  export.export(models.build_model(config, np.full((98, 2), 0.5, np.float32)), config,
                str(root / "rgb"))

  outs = {2: finish(start(["launch/local.sh", "2", "--",
                           *worker_args(root, root / "two.json", "--cmfa_fsdp=2")]),
                    "the 2-process job")}
  # The same workdirs in 1 process on 1 device: restore (resharded), compare, train a step more.
  outs[1] = finish(start([sys.executable, *worker_args(root, root / "one.json", "--steps=3")],
                         XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
                         + " --xla_force_host_platform_device_count=1"),
                   "the 1-process job")
  res = {2: json.loads((root / "two.json").read_text()),
         1: json.loads((root / "one.json").read_text())}
  return root, res, outs


@pytest.mark.parametrize("stage", ["ssmer", "cmfa"])
def test_two_processes_train_on_one_mesh(runs, stage):
  root, res, outs = runs
  r = res[2][stage]
  assert r["process_count"] == 2 and r["device_count"] == 4
  assert r["mesh"] == ({"data": 4, "fsdp": 1} if stage == "ssmer" else {"data": 2, "fsdp": 2})
  assert (r["fsdp_split_leaves"] > 0) == (stage == "cmfa")
  # Only process 0 logs: one progress line per step, one metrics file.
  assert outs[2].count(f"[{stage}] step 2/2") == 1
  steps = [json.loads(l)["step"] for l in (root / stage / "metrics.jsonl").read_text().splitlines()
           if "loss" in l]
  assert steps[:2] == [1, 2]
  data_iters = sorted(f for f in os.listdir(root / stage / "checkpoints" / "2" / "data_iter")
                      if f.startswith("process_"))
  assert data_iters == ["process_0-of-2.json", "process_1-of-2.json"]   # one per process
  if stage == "cmfa":   # validation over both processes' examples
    assert np.isfinite(r["final_eval"]["val_nme"])


@pytest.mark.parametrize("stage", ["ssmer", "cmfa"])
def test_loss_of_a_global_batch_does_not_depend_on_the_process_count(runs, stage):
  _, res, _ = runs
  two, one = res[2][stage], res[1][stage]
  assert one["process_count"] == 1 and one["device_count"] == 1
  np.testing.assert_allclose(two["fixed_batch_loss"], one["fixed_batch_loss"], rtol=1e-4,
                             atol=1e-6)


@pytest.mark.parametrize("stage", ["ssmer", "cmfa"])
def test_checkpoint_of_two_processes_restores_on_one_device(runs, stage):
  _, res, outs = runs
  # The newest checkpoint (step 2, split over 4 devices, FSDP for cmfa) equals the export the
  # 2-process run wrote, once restored onto 1 device; the run then resumed from it.
  assert res[1][stage]["restored_vs_export"] == 0.0
  assert f"[{stage}] resumed from step 2" in outs[1]
  assert f"[{stage}] step 3/3" in outs[1]


def test_a_dead_process_stops_the_others_within_the_heartbeat_timeout():
  port = 20000 + os.getpid() % 20000
  flags = ["--mode=die", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           "--heartbeat_timeout_s=5", "--shutdown_timeout_s=5"]
  extra = dict(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  started = time.monotonic()
  procs = [start([sys.executable, WORKER, *flags, f"--process_id={i}"], **extra) for i in (0, 1)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  elapsed = time.monotonic() - started
  assert "joined" in outs[0] and procs[1].returncode == 7
  assert procs[0].returncode != 0, outs[0][-3000:]
  # Either the heartbeat monitor stops it, or its next collective fails on the closed peer.
  assert ("another task died" in outs[0] or "unhealthy" in outs[0]
          or "Connection closed by peer" in outs[0]), outs[0][-3000:]
  assert elapsed < 60
