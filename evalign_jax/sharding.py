"""The one place that builds the device mesh and the shardings of training state and batches.

The mesh has two axes: `data` (replicas, each with its own slice of the batch) and `fsdp`
(devices that also take their own slice of the batch but split the large parameters and their
optimizer state among themselves, gathering them layer by layer). `config.mesh =
dict(data=-1, fsdp=1)` is plain data parallelism over every device; `fsdp=4` shards the state
4 ways. A batch's leading axis is split over data x fsdp, so every device sees different
examples.

Imports only jax and numpy, so the step and benchmarks can use it anywhere.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
# Chosen once for the whole code base: with Auto axes XLA's partitioner propagates the shardings
# given at the jit boundary (state, batch) through the models, which carry no annotations.
AXIS_TYPE = AxisType.Auto
BATCH_AXES = AXES
# Arrays smaller than this (elements) stay replicated under FSDP: biases, norms and small
# kernels cost more in per-layer all-gathers than they save in memory.
FSDP_MIN_SIZE = 2 ** 14


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Axis sizes in AXES order; one axis may be -1, meaning the devices the others leave.

  Raises ValueError naming the config when the sizes do not multiply to `num_devices`.
  """
  unknown = set(mesh_config) - set(AXES)
  if unknown:
    raise ValueError(f"mesh axes must be among {AXES}, got {sorted(unknown)}")
  sizes = [int(mesh_config.get(a, 1)) for a in AXES]
  rest = [i for i, s in enumerate(sizes) if s == -1]
  if len(rest) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh {dict(mesh_config)}: sizes must be positive, at most one -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if rest:
    if num_devices % fixed:
      raise ValueError(f"mesh {dict(mesh_config)}: {num_devices} devices do not divide into "
                       f"groups of {fixed}")
    sizes[rest[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(mesh_config)} needs {math.prod(sizes)} devices, "
                     f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int] | None = None, devices=None, *,
              global_batch: int | None = None) -> Mesh:
  """A (data, fsdp) mesh over `devices` (default: every device of every process).

  With `global_batch`, a batch that does not divide over data x fsdp raises in a multi-process
  job; a single process warns and uses one device instead (a tiny test batch on a many-device
  host), rather than have every device compute the whole batch.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config or {"data": -1}, len(devices))
  shards = math.prod(s for a, s in zip(AXES, shape) if a in BATCH_AXES)
  if global_batch is not None and global_batch % shards:
    if jax.process_count() > 1:
      raise ValueError(f"global batch {global_batch} does not divide over the {shards} devices "
                       f"of the mesh {dict(zip(AXES, shape))}")
    logging.warning("batch %d does not divide over the %d devices of the mesh %s: using one "
                    "device", global_batch, shards, dict(zip(AXES, shape)))
    devices, shape = devices[:1], (1,) * len(AXES)
  return jax.make_mesh(shape, AXES, axis_types=(AXIS_TYPE,) * len(AXES), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, global_batch_size: int) -> NamedSharding:
  """The leading (batch) axis split over data x fsdp.

  A single process whose batch does not divide over the devices (a small evaluation batch)
  gets the batch replicated instead, with a warning: each device then computes all of it.
  Several processes cannot do that (each holds only its own examples), so they raise.
  """
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if global_batch_size % shards == 0:
    return NamedSharding(mesh, P(BATCH_AXES))
  if jax.process_count() > 1:
    raise ValueError(f"global batch {global_batch_size} does not divide over the {shards} "
                     f"devices of the mesh's {' x '.join(BATCH_AXES)} axes")
  logging.warning("batch %d does not divide over %d devices: every device computes the whole "
                  "batch", global_batch_size, shards)
  return replicated(mesh)


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
  """Where an array of `shape` is split over `fsdp` devices: its largest divisible axis.

  Arrays that are small or have no axis divisible by `fsdp` stay replicated (P()).
  """
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  candidates = [i for i, n in enumerate(shape) if n % fsdp == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: shape[i])
  return P(*([None] * axis + ["fsdp"]))


def state_shardings(state: Any, mesh: Mesh, min_size: int = FSDP_MIN_SIZE) -> Any:
  """NamedShardings like `state` (model + optimizer): replicated, or FSDP-split when the mesh's
  fsdp axis is > 1. The rule depends on the shape alone, so an optimizer moment lands on the
  same devices as its parameter."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(np.shape(a), fsdp, min_size)),
                      state)


def put_global(tree: Any, shardings: Any) -> Any:
  """Host or single-device arrays, equal on every process (same seed), onto global shardings.

  Each process fills only its own devices' slices, so this works across hosts.
  """
  def put(x, sharding):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      # Typed keys (dropout streams) travel as their uint32 data, one more trailing axis.
      data = put(jax.random.key_data(x), NamedSharding(sharding.mesh, sharding.spec))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: np.asarray(host[index]))
  return jax.tree.map(put, tree, shardings)


def global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
  """This process's numpy batch (leading axis = its share of the global batch) -> global arrays.

  With a replicated sharding (single process only, see `batch_sharding`) the local batch is the
  global one.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def host_local(x: jax.Array) -> np.ndarray:
  """The rows of a batch-sharded global array that belong to this process, in its local order
  (the inverse of `global_batch` for outputs such as predictions)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  rows = {}
  for shard in x.addressable_shards:   # fsdp-replicated outputs repeat rows: keep one copy
    rows.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate([np.asarray(rows[k]) for k in sorted(rows)])


def to_host(tree: Any) -> Any:
  """Global (possibly FSDP-split) arrays -> numpy arrays, identical on every process.

  Every process must call it (split arrays are gathered with a collective).
  """
  leaves = jax.tree.leaves(tree)
  if not leaves or all(getattr(x, "is_fully_addressable", True) for x in leaves):
    return jax.device_get(tree)
  shardings = jax.tree.map(lambda x: replicated(x.sharding.mesh), tree)
  gathered = jax.jit(lambda t: t, out_shardings=shardings)(tree)
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), gathered)


@dataclasses.dataclass(frozen=True)
class StepShardings:
  """What a jitted train step is compiled for.

  Attributes:
    state: NamedShardings like the (model, optimizer) state.
    batch: the sharding of every batch leaf (leading axis = batch).
    replicated: for scalar metrics.
  """

  state: Any
  batch: NamedSharding
  replicated: NamedSharding


def step_shardings(state: Any, mesh: Mesh, global_batch_size: int) -> StepShardings:
  return StepShardings(state_shardings(state, mesh), batch_sharding(mesh, global_batch_size),
                       replicated(mesh))


def describe(mesh: Mesh) -> str:
  """e.g. "mesh data=2 x fsdp=2 over 4 devices in 2 processes"."""
  axes = " x ".join(f"{a}={n}" for a, n in mesh.shape.items())
  return (f"mesh {axes} over {mesh.devices.size} {mesh.devices.flat[0].platform} devices in "
          f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}")
