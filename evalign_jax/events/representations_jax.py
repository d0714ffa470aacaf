"""JAX renderers of the event representations, for use inside jitted (and vmapped) steps.

Each mirrors its float64 numpy reference in `representations` (same conventions, same channel
order) but takes fixed-shape `PaddedEvents`, so one compiled function serves every window:
padding slots (valid = False) and valid events outside the sensor are ignored. Timestamps are
int32 µs relative to the producer's reference time; window bounds use the same reference.

Every renderer is a scatter into a flat (C * H * W) buffer: dropped events are sent to an
out-of-range index (never a negative one, which JAX would wrap) and `mode="drop"` discards them.
Outputs are float32. Each renderer is jitted with `sensor_size` (a tuple), `num_bins` and
`convention` static, so eager calls reuse one compiled kernel per shape and nest freely in a step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from evalign_jax.events.events import PaddedEvents
from evalign_jax.events.representations import VOXEL_CONVENTIONS


def _on_sensor(events: PaddedEvents, sensor_size: tuple[int, int]) -> jax.Array:
  h, w = sensor_size
  return (events.valid & (events.x >= 0) & (events.x < w) & (events.y >= 0)
          & (events.y < h))


def _scatter_add(size: int, index: jax.Array, keep: jax.Array, values) -> jax.Array:
  index = jnp.where(keep, index, size)
  return jnp.zeros(size, jnp.float32).at[index].add(values, mode="drop")


def _valid_bounds(events: PaddedEvents, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
  """First and last kept timestamp (0, 0 when none is kept)."""
  big = jnp.iinfo(jnp.int32).max
  # One variadic reduction: on XLA:CPU it measured ~8x faster than separate min and max.
  t0, t1 = jax.lax.reduce(
      (jnp.where(keep, events.t, big), jnp.where(keep, events.t, -big)),
      (jnp.int32(big), jnp.int32(-big)),
      lambda a, b: (jnp.minimum(a[0], b[0]), jnp.maximum(a[1], b[1])), (0,))
  none = t0 > t1
  return jnp.where(none, 0, t0), jnp.where(none, 0, t1)


@functools.partial(jax.jit, static_argnames=("sensor_size",))
def event_frame(events: PaddedEvents, sensor_size: tuple[int, int]) -> jax.Array:
  """Per-polarity counts, (2, H, W) float32: channel 0 OFF, channel 1 ON."""
  h, w = sensor_size
  keep = _on_sensor(events, sensor_size)
  index = (events.p * h + events.y) * w + events.x
  return _scatter_add(2 * h * w, index, keep, 1.0).reshape(2, h, w)


@functools.partial(jax.jit, static_argnames=("sensor_size", "num_bins", "convention"))
def voxel_grid(events: PaddedEvents, sensor_size: tuple[int, int], num_bins: int = 5,
               convention: str = "e2vid", *, t_start_us=None, t_end_us=None) -> jax.Array:
  """Bilinear-in-time voxel grid, (B, H, W) float32; see `representations.voxel_grid`.

  Args:
    events: padded events of one window.
    sensor_size: (H, W), static.
    num_bins: B, static.
    convention: "e2vid" or "tonic", static.
    t_start_us, t_end_us: int32 scalars (may be traced), relative like `events.t`; default the
      first and last valid event.
  """
  if convention not in VOXEL_CONVENTIONS:
    raise ValueError(f"convention must be one of {VOXEL_CONVENTIONS}, got {convention!r}")
  h, w = sensor_size
  keep = _on_sensor(events, sensor_size)
  first, last = _valid_bounds(events, keep)
  t0 = first if t_start_us is None else jnp.asarray(t_start_us, jnp.int32)
  t1 = last if t_end_us is None else jnp.asarray(t_end_us, jnp.int32)
  span = jnp.where(t1 == t0, 1, t1 - t0).astype(jnp.float32)
  scale = (num_bins - 1) if convention == "e2vid" else num_bins
  # Subtract in int32 first: exact, and float32 then carries the small offset at 1 µs.
  tau = (events.t - t0).astype(jnp.float32) * (scale / span)
  left = jnp.floor(tau)
  frac = tau - left
  left = left.astype(jnp.int32)
  pol = jnp.where(events.p > 0, 1.0, -1.0).astype(jnp.float32)
  size = num_bins * h * w
  index = left * (h * w) + events.y * w + events.x
  # Two scatters into one buffer (left and right neighbour); measured 3x faster on CPU than
  # one scatter of the concatenated 2N updates, which materialises the concatenation.
  grid = _scatter_add(size, index, keep & (left >= 0) & (left < num_bins), pol * (1.0 - frac))
  right = keep & (left >= -1) & (left < num_bins - 1)
  grid = grid.at[jnp.where(right, index + h * w, size)].add(pol * frac, mode="drop")
  return grid.reshape(num_bins, h, w)


@functools.partial(jax.jit, static_argnames=("sensor_size",))
def time_surface(events: PaddedEvents, sensor_size: tuple[int, int], tau_us: float = 30_000.0,
                 *, t_end_us=None) -> jax.Array:
  """Exponential time surface at t_end, (2, H, W) float32 in [0, 1]; channel 0 OFF, 1 ON.

  t_end_us: int32 scalar relative like `events.t` (may be traced); default the last valid
  event. Events after t_end are ignored.
  """
  h, w = sensor_size
  keep = _on_sensor(events, sensor_size)
  _, last = _valid_bounds(events, keep)
  t_end = last if t_end_us is None else jnp.asarray(t_end_us, jnp.int32)
  keep = keep & (events.t <= t_end)
  size = 2 * h * w
  index = jnp.where(keep, (events.p * h + events.y) * w + events.x, size)
  never = jnp.iinfo(jnp.int32).min
  latest = jnp.full(size, never, jnp.int32).at[index].max(events.t, mode="drop")
  age = (t_end - latest).astype(jnp.float32)
  surface = jnp.where(latest == never, 0.0, jnp.exp(-age / tau_us))
  return surface.reshape(2, h, w)
