"""Faults a training run survives or reports clearly: kill -9 at any step, kill -9 while a
checkpoint is being written, a NaN loss or state, an unwritable or full workdir."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from data_pipelines.build import ensure_built
from evalign_jax import checkpoints
from evalign_jax import export
from evalign_jax import guards
from evalign_jax.models import checkpoint_io
from evalign_jax.trainers import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8


def env():
  # One compilation cache for every run here (and across test sessions): the runs compile the
  # same programs, so only the first pays for it. Unoptimised XLA code compiles in half the
  # time, and every run uses the same flags, so bit-exactness between them still holds.
  cache = os.path.join(tempfile.gettempdir(), f"evalign_jax_test_cache_{os.getuid()}", "main")
  return dict(os.environ, EVALIGN_JAX_CACHE=cache, JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true")


def wait_for_line(process, text: str) -> list[str]:
  """Reads `process`'s stdout until a line contains `text`; returns the lines read."""
  seen = []
  for line in process.stdout:
    seen.append(line)
    if text in line:
      return seen
  raise AssertionError(f"{text!r} never came:\n" + "".join(seen))


def train_command(workdir, data_dir):
  """A tiny rgb_slpt run (configs/rgb_slpt.py:tiny) of STEPS steps, a checkpoint every 2."""
  return [sys.executable, "-m", "evalign_jax.main", "--config=configs/rgb_slpt.py:tiny",
          f"--workdir={workdir}", f"--config.data_dir={data_dir}",
          f"--config.total_steps={STEPS}", f"--config.evals.val.every={STEPS}",
          "--config.checkpoint.every=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted run, and the same command killed (-9) at a random step then rerun.

  The second starts once the first has compiled its step (and cached it). The kill comes after
  step 5 at the earliest: by then the save of step 2 has completed (a save waits for the one
  before), so there is a step to resume from.
  """
  root = tmp_path_factory.mktemp("faults")
  data = str(root / "data")
  ensure_built("synthetic_faces/tiny", data)   # once, not by two runs at the same time
  full_dir, killed_dir = root / "full", root / "killed"
  kill_at = random.randint(5, STEPS - 1)
  with open(root / "full.log", "w") as full_log, open(root / "killed.log", "w") as killed_log:
    full = subprocess.Popen(train_command(full_dir, data), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=full_log, text=True)
    wait_for_line(full, f"step 1/{STEPS}")
    killed = subprocess.Popen(train_command(killed_dir, data), cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, stderr=killed_log, text=True)
    wait_for_line(killed, f"step {kill_at}/{STEPS}")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    rerun = subprocess.run(train_command(killed_dir, data), cwd=REPO, env=env(),
                           capture_output=True, text=True, timeout=300)
    full_out, _ = full.communicate(timeout=300)
  assert killed.returncode == -signal.SIGKILL
  assert full.returncode == 0, (root / "full.log").read_text()[-3000:]
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert not (killed_dir / "export.tmp").exists()
  return dict(full=full_dir, killed=killed_dir, kill_at=kill_at, rerun=rerun.stdout,
              full_out=full_out)


def losses(workdir):
  """{step: loss}, the last line of each step (a resumed run writes some steps twice)."""
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "loss" in record:
      out[record["step"]] = record["loss"]
  return out


@pytest.mark.slow
def test_kill_at_a_random_step_then_rerun_ends_bit_exact(runs):
  kill_at = runs["kill_at"]
  resumed = re.search(r"resumed from step (\d+)", runs["rerun"])
  assert resumed, runs["rerun"]
  assert 2 <= int(resumed.group(1)) <= kill_at
  full = checkpoint_io.read_model_state(str(runs["full"] / export.EXPORT_DIR / "state"))
  again = checkpoint_io.read_model_state(str(runs["killed"] / export.EXPORT_DIR / "state"))
  assert jax.tree.structure(full) == jax.tree.structure(again)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"killed at {kill_at}")
  # Every step's loss too: the data iterator resumed at the same batch.
  assert losses(runs["killed"]) == losses(runs["full"])
  assert sorted(losses(runs["full"])) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_training_writes_prediction_pictures(runs):
  pictures = runs["full"] / "pictures"
  assert [p.name for p in pictures.iterdir()] == [f"val_predictions_{STEPS}.png"]
  assert (pictures / f"val_predictions_{STEPS}.png").stat().st_size > 1000


KILL_MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    import grain, jax.numpy as jnp, numpy as np
    from evalign_jax import checkpoints
    it = iter(grain.MapDataset.range(10).to_iter_dataset())
    ckpts = checkpoints.TrainCheckpoints(sys.argv[1], keep=2, best_metric=None)
    ckpts.save(1, {"w": jnp.ones((4,))}, it, {"step": 1})
    ckpts.wait()
    big = jnp.asarray(np.random.default_rng(0).random(25_000_000, dtype=np.float32))  # 100 MB
    ckpts.save(2, {"w": big}, it, {"step": 2})   # returns while the arrays are being written
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_restores_the_previous_one(tmp_path):
  out = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(tmp_path)], cwd=REPO,
                       env=env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
  names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  # Step 2 died half written: only its temporary folder exists.
  assert "1" in names and "2" not in names
  assert any(n.startswith("2.orbax-checkpoint-tmp") for n in names), names
  abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  ckpts = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, best_metric=None,
                                       async_save=False)
  step, state = ckpts.restore_latest(abstract, it)
  assert step == 1
  np.testing.assert_array_equal(state["w"], np.ones(4))
  # The same step saves again over the leftover (a resumed run reaches it again).
  ckpts.save(2, {"w": jnp.full((4,), 2.0)}, it, {"step": 2})
  ckpts.close()
  again = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, best_metric=None)
  step, state = again.restore_latest(abstract, iter(grain.MapDataset.range(10).to_iter_dataset()))
  again.close()
  assert step == 2
  np.testing.assert_array_equal(state["w"], np.full(4, 2.0))


# ---------------------------------------------------------------------------------------------
# In-process: a linear model on hand-made batches, so only the loop is under test.


def linear_stage(num_steps, *, nan_batch=None, nan_state_after=None):
  """A Stage fitting y = x . [1, 2, 3]; batch `nan_batch` (1-based) holds a NaN input, or the
  step `nan_state_after` returns a NaN parameter with a finite loss (an overflowing update)."""
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)))

  def loss_fn(model, batch):
    return jnp.mean((model(batch["x"])[:, 0] - batch["y"]) ** 2)

  update = loop.make_update_step(graphdef, loss_fn, lambda step: 0.05)
  calls = []

  def train_step(state, batch):
    calls.append(1)
    state, metrics = update(state, batch)
    if len(calls) == nan_state_after:
      state = jax.tree.map(lambda a: a * jnp.nan if jnp.issubdtype(a.dtype, jnp.floating)
                           else a, state)
    return state, metrics

  rng = np.random.default_rng(0)
  examples = []
  for i in range(2 * num_steps):
    x = rng.normal(size=3).astype(np.float32)
    if nan_batch is not None and i // 2 == nan_batch - 1:
      x[0] = np.nan
    examples.append({"x": x, "y": np.float32(x @ [1.0, 2.0, 3.0])})
  ds = grain.MapDataset.source(examples).batch(2)
  stage = loop.Stage(name="linear", graphdef=graphdef, state=state, train_step=train_step,
                       train_iter=iter(ds.to_iter_dataset()), total_steps=num_steps)
  return stage, calls


def loop_config(log_every=10, every=1):
  return ml_collections.ConfigDict(dict(log_every=log_every,
                                        checkpoint=dict(every=every, keep=10)))


def saved_states(workdir, stage):
  """{step: state} of every checkpoint in workdir."""
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), stage.state)
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  return {s: checkpoints.restore_state(str(workdir / "checkpoints"), abstract, step=s)[1]
          for s in steps}


def all_finite(state):
  return all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(state)
             if jnp.issubdtype(a.dtype, jnp.floating))


def test_nan_loss_between_log_steps_stops_before_it_is_saved(tmp_path):
  stage, _ = linear_stage(6, nan_batch=3)
  with pytest.raises(FloatingPointError, match=r"non-finite training metrics at step 3\b"):
    loop.run_training(stage, loop_config(log_every=10, every=1), str(tmp_path))
  states = saved_states(tmp_path, stage)
  assert sorted(states) == [1, 2] and all(all_finite(s) for s in states.values())


def test_nan_state_with_a_finite_loss_is_not_saved(tmp_path):
  stage, _ = linear_stage(6, nan_state_after=4)
  with pytest.raises(FloatingPointError, match=r"after step 4\b"):
    loop.run_training(stage, loop_config(log_every=10, every=2), str(tmp_path))
  states = saved_states(tmp_path, stage)
  assert sorted(states) == [2] and all_finite(states[2])


def test_unwritable_workdir_fails_before_training(tmp_path):
  (tmp_path / "file").write_text("")
  stage, calls = linear_stage(2)
  # A folder below a regular file: unwritable even for root, which ignores permission bits.
  with pytest.raises(guards.WorkdirError, match="cannot be written"):
    loop.run_training(stage, loop_config(), str(tmp_path / "file" / "work"))
  assert not calls


@pytest.mark.slow
def test_unwritable_workdir_stops_the_entry_point_before_any_work(tmp_path):
  (tmp_path / "file").write_text("")
  # The entry point checks before building data or models.
  out = subprocess.run([sys.executable, "-m", "evalign_jax.main",
                        "--config=configs/rgb_slpt.py:runlocal",
                        f"--workdir={tmp_path / 'file' / 'work'}"], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "cannot be written" in out.stderr
  assert "Building" not in out.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_fails_before_training(tmp_path):
  # /dev/full answers every write with ENOSPC, like a full filesystem.
  os.symlink("/dev/full", tmp_path / f"{guards.WRITE_TEST}.0")
  stage, calls = linear_stage(2)
  with pytest.raises(guards.WorkdirError, match="no space left") as e:
    loop.run_training(stage, loop_config(), str(tmp_path))
  assert e.value.errno == 28 and not calls   # ENOSPC


def test_too_little_free_space_for_the_checkpoints(tmp_path):
  with pytest.raises(guards.WorkdirError, match=r"MiB free but the run's checkpoints need"):
    guards.check_workdir(str(tmp_path), need_bytes=1 << 60)
  guards.check_workdir(str(tmp_path), need_bytes=1 << 20)   # fits
  assert not list(tmp_path.iterdir())   # the write test left nothing behind
  state = {"w": jnp.zeros((10,), jnp.float32), "b": jnp.zeros((3,), jnp.bfloat16),
           "count": jnp.zeros((), jnp.int32)}
  assert guards.checkpoint_bytes(state, keep=2) == 5 * (10 * 4 + 3 * 2)
