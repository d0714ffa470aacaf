"""Joining a multi-process job: `jax.distributed.initialize` before any other JAX call.

  --distributed=auto  (default) join when the environment shows a multi-process launch: explicit
                      --coordinator_address (or JAX_COORDINATOR_ADDRESS), a SLURM step with
                      several tasks, Open MPI with several ranks, a multi-host GKE TPU slice.
  --distributed=on    always call jax.distributed.initialize(), letting JAX detect the cluster
                      (also Cloud TPU VMs through their metadata server, and Kubernetes); for
                      launchers the environment check above does not recognise.
  --distributed=off   a single process, whatever the environment says.

Failure handling: every process sends heartbeats to the coordinator (process 0). When a process
dies, the others are stopped after --heartbeat_timeout_s with "Terminating process because the
JAX distributed service detected fatal errors ... another task died", instead of hanging in a
collective; a process that never joins fails after --initialization_timeout_s.

Only process 0 writes logs: the others' stdout and absl info lines are silenced (stderr, with
any error, stays).
"""

from __future__ import annotations

import itertools
import os
import sys

import jax
import numpy as np
from absl import flags
from absl import logging

_MODE = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                          "Join a multi-process job (see evalign_jax/distributed.py).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for launches JAX cannot detect.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "A process silent this long is dead; the others then exit.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout_s", 300, "How long processes wait for each other at start.")
_SHUTDOWN_TIMEOUT = flags.DEFINE_integer(
    "shutdown_timeout_s", 60, "How long a finished process waits for the others at exit.")


def detect_launch(environ=None) -> str | None:
  """The multi-process launcher visible in the environment, or None (one process).

  Only cheap environment checks (no network): "explicit", "slurm", "openmpi", "gke_tpu".
  """
  env = os.environ if environ is None else environ
  count = lambda name: int(env.get(name, "1") or 1)
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  # Inside an srun step (SLURM_STEP_NODELIST is what JAX reads), with several tasks.
  if "SLURM_JOB_ID" in env and "SLURM_STEP_NODELIST" in env and count("SLURM_NTASKS") > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
    return "openmpi"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "gke_tpu"
  return None


def initialize(mode: str = "auto", *, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 300,
               shutdown_timeout_s: int = 60, quiet_others: bool = True) -> bool:
  """Joins the job if `mode` (see the module docstring) says so; True when it did.

  Must run before anything touches a JAX backend (jax.devices(), an array, a jit call).
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode must be auto, on or off, got {mode!r}")
  explicit = coordinator_address is not None or num_processes is not None
  if mode == "off" or (mode == "auto" and not explicit and detect_launch() is None):
    return False
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, initialization_timeout=initialization_timeout_s,
      heartbeat_timeout_seconds=heartbeat_timeout_s,
      shutdown_timeout_seconds=shutdown_timeout_s)
  if quiet_others and jax.process_index() != 0:
    sys.stdout = open(os.devnull, "w")   # pylint: disable=consider-using-with
    logging.set_verbosity(logging.WARNING)
  logging.info("process %d of %d, %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def initialize_from_flags() -> bool:
  """`initialize` with this module's command-line flags."""
  return initialize(_MODE.value, coordinator_address=_COORDINATOR.value,
                    num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                    heartbeat_timeout_s=_HEARTBEAT.value,
                    initialization_timeout_s=_INIT_TIMEOUT.value,
                    shutdown_timeout_s=_SHUTDOWN_TIMEOUT.value)


def is_primary() -> bool:
  """Process 0: the one that writes logs, configs and exports' metadata."""
  return jax.process_index() == 0


_BARRIER_COUNT = itertools.count()


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Waits until every process reaches the same `name` (no-op in a single process).

  A barrier of the coordination service, not a device collective: XLA:CPU's gloo collectives
  wait only 30 s for their peers, too short for a process still building a dataset or compiling.
  Every process must pass the same barriers in the same order.
  """
  if jax.process_count() > 1:
    import orbax.checkpoint as ocp   # pylint: disable=g-import-not-at-top
    ocp.multihost.get_barrier_sync_fn()(key=f"evalign.{name}.{next(_BARRIER_COUNT)}",
                                        timeout_ms=timeout_s * 1000)


class CompiledTogether:
  """A jitted function whose first call compiles, then waits for every process, then runs.

  Processes finish compiling a large step seconds to minutes apart; its first collective must
  not start before all of them can join it. In a single process it is the jitted function.
  Other attributes (`lower`, `trace`, ...) are the jitted function's.
  """

  def __init__(self, jitted, name: str):
    self._jitted, self._name = jitted, name
    self._ready = jax.process_count() == 1

  def __call__(self, *args):
    if not self._ready:
      self._jitted.lower(*args).compile()   # the call below reuses this executable
      barrier(f"{self._name}_compiled")
      self._ready = True
    return self._jitted(*args)

  def __getattr__(self, name):
    return getattr(self._jitted, name)


def gather_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every process's rows of each array, process 0's first, on every process.

  Args:
    arrays: name -> (n, ...) array; n may differ between processes but not between the
      arrays of one process. Byte-string arrays (object or "S" dtype, e.g. clip ids) work too.

  Returns:
    name -> (sum of n over processes, ...); the arrays themselves in a single process.
  """
  if jax.process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils   # pylint: disable=g-import-not-at-top
  gather = lambda x: np.asarray(multihost_utils.process_allgather(x))   # (processes, ...)
  n = len(next(iter(arrays.values())))
  counts = gather(np.array([n], np.int64)).reshape(-1)
  out = {}
  for name, a in arrays.items():
    a = np.asarray(a)
    text = a.dtype.kind in "OS"
    if text:   # fixed-width bytes, as uint8 rows of the widest string of any process
      a = a.astype(bytes)
      width = int(gather(np.array([max(a.dtype.itemsize, 1)], np.int64)).max())
      a = a.astype(f"S{width}").view(np.uint8).reshape(n, width)
    padded = np.zeros((int(counts.max()),) + a.shape[1:], a.dtype)
    padded[:n] = a
    everything = gather(padded)
    rows = np.concatenate([everything[i, :c] for i, c in enumerate(counts)])
    out[name] = rows.view(f"S{width}").reshape(-1).astype(object) if text else rows
  return out
