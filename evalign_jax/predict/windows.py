"""Event windows of a recording, the face crop of each, and where the face is.

A recording is cut into windows in one pass (`iter_windows`, bounded memory); each window is
cropped around the face exactly as the evaluation crop of training does (a square of 1.2 x the
face box, `geometry.box_crop_matrix`; event coordinates moved and rounded by
`augment.transform_events`), so the model sees what it was trained on. The face box comes from
the user, from the event density of the first windows (`face_box_from_events`), and then from
the previous prediction (`tracked_box`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterator

import cv2
import numpy as np

from data_pipelines import augment
from data_pipelines import geometry
from evalign_jax.events import Events
from evalign_jax.events import io

# The evaluation crop of the alignment stages (augment.AlignmentAugment.crop_scale).
CROP_SCALE = augment.AlignmentAugment().crop_scale


@dataclasses.dataclass
class Window:
  """The events of one window, [end_us - duration_us, end_us), and its place in the stream.

  Attributes:
    index: 0, 1, ... in stream order.
    end_us: exclusive end of the window (µs, the recording's clock); the CSV's time.
    duration_us: the window's length; a `window_events` window spans its first to last event.
    events: the window's events (possibly none).
  """

  index: int
  end_us: int
  duration_us: int
  events: Events

  @property
  def start_us(self) -> int:
    return self.end_us - self.duration_us


def iter_windows(path, *, window_us: int | None = None, stride_us: int | None = None,
                 window_events: int | None = None, format: str | None = None,
                 sensor_size=None) -> Iterator[Window]:
  """Streams the windows of an event file of any size.

  Time windows: [t0 + k * stride, t0 + k * stride + window_us), t0 the first event's time,
  k = 0, 1, ..., the last being the first window that ends after the last event; empty
  windows included. `stride_us` (default `window_us`) must divide `window_us`. Count windows:
  consecutive runs of `window_events` events (the last may be shorter), each ending 1 µs
  after its last event.
  """
  if (window_us is None) == (window_events is None):
    raise ValueError("give one of window_us and window_events, not both")
  if window_events is not None:
    for k, ev in enumerate(io.iter_event_chunks(path, chunk_events=int(window_events),
                                                format=format, sensor_size=sensor_size)):
      end = int(ev.t[-1]) + 1
      yield Window(k, end, end - int(ev.t[0]), ev)
    return
  stride = int(stride_us or window_us)
  window_us = int(window_us)
  if window_us <= 0 or stride <= 0 or window_us % stride:
    raise ValueError(f"window_us ({window_us}) must be a positive multiple of stride_us "
                     f"({stride})")
  per_window = window_us // stride
  recent = collections.deque(maxlen=per_window)   # the last chunks of `stride` µs
  t0 = None
  for j, chunk in enumerate(io.iter_event_chunks(path, chunk_us=stride, format=format,
                                                 sensor_size=sensor_size)):
    if t0 is None:
      t0 = int(chunk.t[0])   # the first chunk starts at the first event
    recent.append(chunk)
    if len(recent) == per_window:
      events = recent[0] if per_window == 1 else Events.concatenate(list(recent))
      k = j - per_window + 1
      yield Window(k, t0 + k * stride + window_us, window_us, events)


def crop_matrix(box, size: int) -> np.ndarray:
  """The (2, 3) sensor -> crop affine of the size x size evaluation crop of `box`."""
  return geometry.box_crop_matrix(box, CROP_SCALE, size)


def crop_events(window: Window, m: np.ndarray, size: int, capacity: int) -> tuple[dict, int]:
  """The events of `window` in the size x size crop `m`, padded for the model.

  Args:
    window: the events, sensor pixels.
    m: (2, 3) sensor -> crop affine, `crop_matrix(box, size)`.
    size: the model's crop side in pixels.
    capacity: C, the fixed number of event slots; a window with more events in the crop keeps
      the latest C (as the dataset builders do).

  Returns:
    ({x, y (C,) int16 crop px, t (C,) int32 µs in (0, duration_us], p (C,) uint8, valid (C,)
    bool}, number of events that fell in the crop before truncation).
  """
  ev = window.events
  # Training windows are (start, end] with t in (0, window_us]; ours are [start, end) in whole
  # µs, the same events as (start - 1, end - 1], so t - start + 1 lands in (0, duration].
  rel = (ev.t - (window.start_us - 1)).astype(np.int32)
  moved = augment.transform_events(
      {"x": ev.x, "y": ev.y, "t": rel, "p": ev.p, "count": len(ev)}, m, size)
  inside = np.flatnonzero(moved["valid"])
  keep = inside[-capacity:]
  out = {k: np.zeros(capacity, v.dtype) for k, v in moved.items()}
  for k, v in moved.items():
    out[k][:len(keep)] = v[keep]
  return out, len(inside)


# Landmark box from event extent (`event_extent`): width and height scales, and the downward
# shift of the centre as a fraction of the extent's height; measured by benchmarks/face_box.py.
LANDMARK_BOX_MAP = (0.95, 0.7, 0.1)


def face_box_from_events(events: Events) -> np.ndarray:
  """A face box from where events are densest: (x0, y0, x1, y1) sensor pixels, float64.

  The box follows the datasets' convention, the box of the landmarks (brows to chin, contour
  to contour). A moving face is the densest event source in front of a still camera, but its
  events are uneven: the high-contrast eyes, brows, nose and mouth make most of them, the
  contour, hair and neck fewer, so the densest part alone is the inner face. Hence the whole
  blob's extent (`event_extent`), mapped to the landmark box by `LANDMARK_BOX_MAP`: 0.95 x as
  wide, 0.7 x as high, the centre 0.1 x the extent's height lower (hair above the brows and
  the neck below the chin make events too), as measured on simulated recordings of the
  synthetic faces. A moving camera or a busy background can fool it; then pass the box by hand.
  """
  return landmark_box(event_extent(events))


def landmark_box(extent, box_map=LANDMARK_BOX_MAP) -> np.ndarray:
  """(..., 4) event extents (x0, y0, x1, y1) -> the landmark boxes `box_map` = (width scale,
  height scale, downward shift of the centre / the extent's height) maps them to, float64."""
  e = np.asarray(extent, np.float64)
  sx, sy, shift = box_map
  width, height = e[..., 2] - e[..., 0], e[..., 3] - e[..., 1]
  cx, cy = (e[..., 0] + e[..., 2]) / 2, (e[..., 1] + e[..., 3]) / 2 + shift * height
  return np.stack([cx - sx * width / 2, cy - sy * height / 2,
                   cx + sx * width / 2, cy + sy * height / 2], -1)


def event_extent(events: Events, *, blur: float = 1 / 7, level: float = 0.1,
                 quantile: float = 0.05) -> tuple[float, float, float, float]:
  """(x0, y0, x1, y1): where the densest blob of events lies, sensor pixels.

  1. Per-pixel counts, clipped at their 99th percentile (hot pixels would otherwise win).
  2. A Gaussian blur of sigma = `blur` x max(height, width), wide enough to merge the inner
     features, contour and hair of a face into one blob.
  3. The connected region holding the blur's peak where it rises `level` of the way from its
     median (the floor of sparse background noise, e.g. low light or flicker) to its peak.
  4. The `quantile` and 1 - `quantile` quantiles of x and of y of the clipped counts in that
     region, robust to stray edges.
  """
  if not len(events):
    raise ValueError("no events to find a face in")
  h, w = events.sensor_size
  counts = np.bincount(events.y.astype(np.int64) * w + events.x, minlength=h * w)
  counts = counts.reshape(h, w).astype(np.float32)
  counts = np.minimum(counts, np.percentile(counts[counts > 0], 99))
  density = cv2.GaussianBlur(counts, (0, 0), blur * max(h, w))
  floor = float(np.median(density))
  mask = (density >= floor + level * (density.max() - floor)).astype(np.uint8)
  _, labels = cv2.connectedComponents(mask, connectivity=8)
  ys, xs = np.nonzero(labels == labels[np.unravel_index(np.argmax(density), density.shape)])
  (x0, x1), (y0, y1) = (_weighted_quantiles(v, counts[ys, xs], (quantile, 1 - quantile))
                        for v in (xs, ys))
  return x0, y0, x1, y1


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> list[float]:
  """The smallest values whose cumulative weight reaches each q of the total."""
  order = np.argsort(values, kind="stable")
  cum = np.cumsum(weights[order], dtype=np.float64)
  return [float(values[order][min(np.searchsorted(cum, q * cum[-1]), len(cum) - 1)])
          for q in qs]


def tracked_box(landmarks: np.ndarray, previous: np.ndarray,
                max_change: float = 2.0) -> np.ndarray | None:
  """The next face box from predicted (K, 2) sensor-pixel landmarks, or None to keep `previous`.

  The box of the landmarks (the face box convention of the datasets) is accepted when finite,
  at least 4 px a side, within `max_change` x the previous side and with its centre less than
  one previous side away: a wild prediction must not throw the crop off the face.
  """
  if not np.all(np.isfinite(landmarks)):
    return None
  box = geometry.box_of_points(landmarks).astype(np.float64)
  _, _, side = geometry.square_box(box, 1.0)
  pcx, pcy, pside = geometry.square_box(previous, 1.0)
  cx, cy, _ = geometry.square_box(box, 1.0)
  if side < 4 or not 1 / max_change <= side / pside <= max_change:
    return None
  if np.hypot(cx - pcx, cy - pcy) >= pside:
    return None
  return box
