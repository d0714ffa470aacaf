"""Checks that stop a run early with a message saying what is wrong, instead of failing late.

- `check_workdir`: before a stage starts, the workdir can be written (a real write, synced to
  disk) and its filesystem has room for the checkpoints the run will keep.
- `check_finite_metrics`, `check_finite_state`: training stops at the first non-finite loss it
  sees, and a checkpoint is only written from a finite state, so resuming never starts from NaN.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

WRITE_TEST = ".write_test"   # + ".<process index>", removed again at once
WRITE_TEST_BYTES = 1 << 20   # a real block write: ENOSPC shows up here, not at the first save


class WorkdirError(OSError):
  """The workdir cannot be written, or its filesystem is too full for the run's checkpoints."""


def check_workdir(workdir: str, need_bytes: int = 0) -> None:
  """Creates `workdir` if needed, writes and removes a 1 MiB file in it, checks free space.

  Args:
    workdir: the stage's output folder.
    need_bytes: the most the run will have on disk at once (`checkpoint_bytes`); 0 skips the
      free-space check.

  Raises:
    WorkdirError: naming the folder and the cause (not writable, no space left, too little free).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  probe = os.path.join(workdir, f"{WRITE_TEST}.{jax.process_index()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"\0" * WRITE_TEST_BYTES)
      f.flush()
      os.fsync(f.fileno())   # so a full disk fails here and not in a background checkpoint write
  except OSError as e:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise WorkdirError(e.errno, f"no space left on the device of the workdir {workdir}: "
                         f"writing a {WRITE_TEST_BYTES >> 20} MiB test file failed ({e}); free "
                         "some space or choose another --workdir") from e
    raise WorkdirError(e.errno, f"the workdir {workdir} cannot be written ({e}); choose "
                       "another --workdir") from e
  finally:
    try:
      os.remove(probe)
    except OSError:
      pass
  if need_bytes:
    free = shutil.disk_usage(workdir).free
    if free < need_bytes:
      raise WorkdirError(errno.ENOSPC, f"the workdir {workdir} has {free / 2**20:.0f} MiB free "
                         f"but the run's checkpoints need about {need_bytes / 2**20:.0f} MiB; "
                         "free some space, lower config.checkpoint.keep or choose another "
                         "--workdir")


def checkpoint_bytes(state: Any, keep: int) -> int:
  """Disk the checkpoints of a run take at most: (keep + 3) x the state's size in bytes.

  The latest `keep` steps, `best/`, the step being written before the oldest is deleted, and
  the export (the model without the optimizer, at most one state's size). Global array sizes:
  the processes of a multi-host job write their shards into one shared folder.
  """
  size = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(state) if _is_float(x))
  return (keep + 3) * size


def check_finite_metrics(name: str, step: int, metrics: dict) -> dict:
  """{name: float} of the step's metrics; FloatingPointError naming the step if one is not finite.

  Reading the metrics waits for the step to finish on the device.
  """
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    raise FloatingPointError(f"[{name}] non-finite training metrics at step {step}: {bad}; "
                             "training stopped and no checkpoint of this step was saved")
  return values


def check_finite_state(name: str, step: int, state: Any) -> None:
  """FloatingPointError naming the step if any floating-point array of `state` holds NaN or Inf.

  Called before every save: a finite loss can still come with an overflowing update.
  """
  if not bool(_all_finite(state)):
    raise FloatingPointError(f"[{name}] non-finite parameters or optimizer state after step "
                             f"{step}; training stopped and this step was not saved")


def _is_float(x) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


@jax.jit
def _all_finite(state) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if _is_float(x)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
