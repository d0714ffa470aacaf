"""The event container shared by readers, representations and the simulator.

An event is (t, x, y, p): a timestamp in integer microseconds, a pixel column x and row y on a
sensor of (height, width) pixels, and a polarity p in {0, 1} (0 = OFF, the log intensity fell;
1 = ON, it rose). `Events` holds one numpy array per field, sorted by t.

`PaddedEvents` is the fixed-shape form that JAX code takes: events padded to a fixed capacity,
with timestamps as int32 offsets from a reference time (JAX has no int64 by default, and float32
only resolves 1 µs up to 16.7 s) and a validity mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


class EventFileError(ValueError):
  """An event file or array that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class Events:
  """A time-sorted event stream.

  The constructor only casts dtypes (it trusts its caller, e.g. a renderer slicing a valid
  stream); use `from_arrays` for data from outside, which checks everything.

  Attributes:
    t: (N,) int64 timestamps in µs.
    x: (N,) uint16 pixel columns, 0 <= x < width.
    y: (N,) uint16 pixel rows, 0 <= y < height.
    p: (N,) uint8 polarities, 0 = OFF, 1 = ON.
    sensor_size: (height, width) of the sensor in pixels.
    metadata: free-form facts about the stream (e.g. every simulator parameter).
  """

  t: np.ndarray
  x: np.ndarray
  y: np.ndarray
  p: np.ndarray
  sensor_size: tuple[int, int]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Normalise dtypes once here so every consumer can rely on them.
    object.__setattr__(self, "t", np.asarray(self.t, dtype=np.int64))
    object.__setattr__(self, "x", np.asarray(self.x, dtype=np.uint16))
    object.__setattr__(self, "y", np.asarray(self.y, dtype=np.uint16))
    object.__setattr__(self, "p", np.asarray(self.p, dtype=np.uint8))
    h, w = (int(s) for s in self.sensor_size)
    object.__setattr__(self, "sensor_size", (h, w))
    n = self.t.shape
    if len(n) != 1 or any(a.shape != n for a in (self.x, self.y, self.p)):
      raise ValueError(
          f"t, x, y, p must be 1-D arrays of one length, got shapes {self.t.shape}, "
          f"{self.x.shape}, {self.y.shape}, {self.p.shape}")

  @classmethod
  def from_arrays(cls, t, x, y, p, sensor_size: Sequence[int], *, metadata=None,
                  source: str = "arrays", sort: bool = False) -> "Events":
    """Builds a validated stream from arrays of any numeric dtype.

    Polarity may be 0/1, -1/+1 or bool. Coordinates must lie on the sensor and timestamps must
    not decrease; with `sort=True` unsorted input is stably sorted instead of rejected. Errors
    name `source` (e.g. the file the arrays came from).
    """
    t = np.asarray(t)
    x, y, p = np.asarray(x), np.asarray(y), np.asarray(p)
    h, w = (int(s) for s in sensor_size)
    if h <= 0 or w <= 0:
      raise EventFileError(f"{source}: sensor size must be positive, got (height, width)={(h, w)}")
    if not (t.shape == x.shape == y.shape == p.shape) or t.ndim != 1:
      raise EventFileError(
          f"{source}: t, x, y, p must be 1-D and of equal length, got shapes "
          f"{t.shape}, {x.shape}, {y.shape}, {p.shape}")
    for name, a in (("t", t), ("x", x), ("y", y)):
      if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        if np.issubdtype(a.dtype, np.floating):
          if not np.all(np.isfinite(a)):
            raise EventFileError(f"{source}: {name} contains NaN or Inf")
          if np.any(a != np.round(a)):
            raise EventFileError(f"{source}: {name} must hold whole numbers, got fractions")
        else:
          raise EventFileError(f"{source}: {name} has non-numeric dtype {a.dtype}")
    p = normalize_polarity(p, source)
    check_coordinates(x, y, (h, w), source)
    t = t.astype(np.int64)
    x, y = x.astype(np.uint16), y.astype(np.uint16)
    bad = first_decrease(t)
    if bad is not None:
      if not sort:
        raise EventFileError(
            f"{source}: timestamps decrease at event {bad} ({t[bad - 1]} µs -> {t[bad]} µs); "
            "pass sort=True to sort them")
      order = np.argsort(t, kind="stable")
      t, x, y, p = t[order], x[order], y[order], p[order]
    return cls(t, x, y, p, (h, w), dict(metadata or {}))

  @classmethod
  def empty(cls, sensor_size: Sequence[int], metadata=None) -> "Events":
    z = np.zeros(0)
    return cls(z, z, z, z, tuple(sensor_size), dict(metadata or {}))

  @classmethod
  def concatenate(cls, parts: Sequence["Events"]) -> "Events":
    """Joins time-ordered pieces of one stream (same sensor)."""
    if not parts:
      raise ValueError("concatenate needs at least one Events")
    sizes = {e.sensor_size for e in parts}
    if len(sizes) != 1:
      raise ValueError(f"cannot concatenate streams of different sensor sizes {sizes}")
    cat = lambda f: np.concatenate([getattr(e, f) for e in parts])
    return cls(cat("t"), cat("x"), cat("y"), cat("p"), parts[0].sensor_size,
               dict(parts[0].metadata))

  @property
  def height(self) -> int:
    return self.sensor_size[0]

  @property
  def width(self) -> int:
    return self.sensor_size[1]

  @property
  def duration_us(self) -> int:
    """Time from the first to the last event in µs (0 for fewer than two events)."""
    return int(self.t[-1] - self.t[0]) if len(self) else 0

  def __len__(self) -> int:
    return int(self.t.shape[0])

  def __getitem__(self, index) -> "Events":
    """Slices, index arrays and boolean masks select events (order is kept for masks/slices)."""
    if isinstance(index, (int, np.integer)):
      index = slice(index, index + 1 if index != -1 else None)
    return Events(self.t[index], self.x[index], self.y[index], self.p[index],
                  self.sensor_size, self.metadata)

  def time_window(self, t_start_us: int | None = None, t_end_us: int | None = None) -> "Events":
    """The events with t_start_us <= t < t_end_us (either bound may be None); O(log N)."""
    i = 0 if t_start_us is None else int(np.searchsorted(self.t, t_start_us, side="left"))
    j = len(self) if t_end_us is None else int(np.searchsorted(self.t, t_end_us, side="left"))
    return self[i:max(i, j)]

  def to_structured(self) -> np.ndarray:
    """A structured array with fields t (int64), x, y (uint16), p (uint8)."""
    out = np.empty(len(self), dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    out["t"], out["x"], out["y"], out["p"] = self.t, self.x, self.y, self.p
    return out

  def pad(self, capacity: int, *, t_ref_us: int | None = None) -> "PaddedEvents":
    """Pads (or rejects) to a fixed capacity for JAX; t becomes int32 µs after `t_ref_us`.

    Args:
      capacity: number of slots; more events than this is an error (truncate explicitly with
        `events[:capacity]` if that is what you want).
      t_ref_us: reference time subtracted in int64 before the cast; defaults to the first
        event's time (0 for an empty stream).
    """
    n = len(self)
    if n > capacity:
      raise ValueError(f"{n} events do not fit a capacity of {capacity}")
    if t_ref_us is None:
      t_ref_us = int(self.t[0]) if n else 0
    rel = self.t - np.int64(t_ref_us)
    if n and (rel.min() < -_INT32_MAX or rel.max() > _INT32_MAX):
      raise ValueError("timestamps span more than ±2147 s around t_ref_us; cut the stream first")
    t = np.zeros(capacity, np.int32)
    x = np.zeros(capacity, np.int32)
    y = np.zeros(capacity, np.int32)
    p = np.zeros(capacity, np.int32)
    valid = np.zeros(capacity, bool)
    t[:n], x[:n], y[:n], p[:n], valid[:n] = rel, self.x, self.y, self.p, True
    return PaddedEvents(t=t, x=x, y=y, p=p, valid=valid)


class PaddedEvents(NamedTuple):
  """Fixed-capacity events for jit/vmap (a pytree; add a leading batch axis for batches).

  Attributes:
    t: (N,) int32 µs relative to a reference time chosen by the producer.
    x: (N,) int32 pixel columns.
    y: (N,) int32 pixel rows.
    p: (N,) int32 polarities in {0, 1}.
    valid: (N,) bool; False marks padding. Valid events outside the sensor are ignored by the
      renderers (so a geometric crop can simply move events off the image).
  """

  t: Any
  x: Any
  y: Any
  p: Any
  valid: Any


def normalize_polarity(p: np.ndarray, source: str) -> np.ndarray:
  """Maps 0/1, -1/+1 or bool polarities to uint8 0/1; anything else is an error naming `source`."""
  p = np.asarray(p)
  if p.dtype == np.bool_:
    return p.astype(np.uint8)
  if p.size == 0:
    return p.astype(np.uint8)
  lo, hi = p.min(), p.max()
  if lo >= 0 and hi <= 1:
    if np.issubdtype(p.dtype, np.floating) and np.any((p != 0) & (p != 1)):
      raise EventFileError(f"{source}: polarity must be 0/1 or -1/+1, found fractional values")
    return p.astype(np.uint8)
  if lo >= -1 and hi <= 1 and not np.any(p == 0):
    return (p > 0).astype(np.uint8)
  raise EventFileError(
      f"{source}: polarity must be 0/1 or -1/+1, found values in [{lo}, {hi}]")


def check_coordinates(x: np.ndarray, y: np.ndarray, sensor_size: tuple[int, int],
                      source: str) -> None:
  """Raises EventFileError naming `source` and the first offending event if off the sensor."""
  h, w = sensor_size
  bad = (x < 0) | (x >= w) | (y < 0) | (y >= h)
  if np.any(bad):
    i = int(np.argmax(bad))
    raise EventFileError(
        f"{source}: {int(bad.sum())} events lie outside the {w}x{h} (width x height) sensor, "
        f"first at index {i}: x={x[i]}, y={y[i]}")


def first_decrease(t: np.ndarray) -> int | None:
  """Index of the first timestamp smaller than its predecessor, or None if non-decreasing."""
  if t.shape[0] < 2:
    return None
  d = np.flatnonzero(t[1:] < t[:-1])
  return int(d[0]) + 1 if d.size else None
