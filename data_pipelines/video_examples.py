"""Shared by the builders: labelled videos -> simulated events -> stored examples.

A builder supplies clips (frames + per-frame landmarks and boxes); this module simulates the
events between consecutive frames, cuts each frame's window, crops, and yields examples in the
`schema` format. It also owns the bad-input policy: a clip that cannot be used (unreadable video,
label/frame count mismatch, NaN labels, ...) raises `BadInput`, which the builder either counts
and skips or turns into a build failure, by `on_error`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import multiprocessing
from typing import Iterable, Iterator

import cv2
import numpy as np

from data_pipelines import schema
from evalign_jax.events.events import Events
from evalign_jax.events.simulator import EventSimulator

ON_ERROR = ("skip", "fail")


class BadInput(ValueError):
  """An input file that cannot be used; the message names it and the problem."""


@dataclasses.dataclass
class BuildStats:
  """What a build did, for the report printed at the end and stored in the dataset metadata."""

  examples: int = 0
  clips: int = 0
  skipped: list[str] = dataclasses.field(default_factory=list)
  truncated_windows: int = 0
  events_total: int = 0

  def add(self, example: dict) -> None:
    self.examples += 1
    ev = example["events"]
    self.events_total += int(ev["count_total"])
    self.truncated_windows += int(ev["count_total"] > ev["count"])

  def as_dict(self) -> dict:
    n = max(self.examples, 1)
    return {"examples": self.examples, "clips": self.clips, "skipped": len(self.skipped),
            "skipped_inputs": self.skipped[:100],
            "truncated_windows": self.truncated_windows,
            "truncated_fraction": self.truncated_windows / n,
            "mean_events_per_window": self.events_total / n}


@dataclasses.dataclass(frozen=True)
class Clip:
  """A labelled clip: frames are produced lazily so long videos stream.

  Attributes:
    frames: iterable of (H, W, 3) uint8 RGB frames.
    timestamps_us: (T,) int64 strictly increasing.
    landmarks: (T, K, 2) float pixel coordinates.
    boxes: (T, 4) float face boxes (x0, y0, x1, y1).
    clip_id, subject_id, subset: ids stored with every example.
    source: the file(s) the clip came from, for error messages.
  """

  frames: Iterable[np.ndarray]
  timestamps_us: np.ndarray
  landmarks: np.ndarray
  boxes: np.ndarray
  clip_id: str
  subject_id: str
  subset: str
  source: str


def check_labels(clip: Clip) -> None:
  """Raises BadInput naming the clip's source for NaN/Inf or mis-shaped labels."""
  t = len(clip.timestamps_us)
  lm, bx = np.asarray(clip.landmarks), np.asarray(clip.boxes)
  if lm.ndim != 3 or lm.shape[0] != t or lm.shape[2] != 2:
    raise BadInput(f"{clip.source}: landmarks have shape {lm.shape}, expected ({t}, K, 2)")
  if bx.shape != (t, 4):
    raise BadInput(f"{clip.source}: boxes have shape {bx.shape}, expected ({t}, 4)")
  bad = ~(np.isfinite(lm).all(axis=(1, 2)) & np.isfinite(bx).all(axis=1))
  if bad.any():
    raise BadInput(f"{clip.source}: NaN/Inf labels in {int(bad.sum())} frames (first: frame "
                   f"{int(np.argmax(bad))})")
  if np.any(bx[:, 2] <= bx[:, 0]) or np.any(bx[:, 3] <= bx[:, 1]):
    raise BadInput(f"{clip.source}: empty face box (x1 <= x0 or y1 <= y0)")
  if t < 2:
    raise BadInput(f"{clip.source}: {t} frame(s); a window needs at least 2")
  if np.any(np.diff(clip.timestamps_us) <= 0):
    raise BadInput(f"{clip.source}: frame timestamps do not increase")


def simulate_clip(clip: Clip, *, sim_preset: str,
                  sim_seed: int) -> Iterator[tuple[int, np.ndarray, Events]]:
  """Yields (k, frame k, the events between frames k - 1 and k) for k = 1, 2, ... of a clip.

  Every frame feeds the simulator, whose seed is `sim_seed` offset by a hash of the clip id, so
  clips get independent noise and mismatch. Raises BadInput for frame-count mismatches found
  while streaming.
  """
  sim_seed = (sim_seed + stable_hash(clip.clip_id)) % 2**32
  n = len(clip.timestamps_us)
  frames = iter(clip.frames)
  first = next(frames, None)
  if first is None:
    raise BadInput(f"{clip.source}: no frames could be read")
  sim = EventSimulator(_gray(first, clip.source), int(clip.timestamps_us[0]), preset=sim_preset,
                       seed=sim_seed)
  k = 0
  for k, frame in enumerate(frames, start=1):
    if k >= n:
      raise BadInput(f"{clip.source}: the video has more frames than the {n} labelled ones")
    yield k, frame, sim.advance(_gray(frame, clip.source), int(clip.timestamps_us[k]))
  if k + 1 != n:
    raise BadInput(f"{clip.source}: the video has {k + 1} frames but {n} are labelled")


def clip_examples(clip: Clip, spec: schema.CropSpec, *, sim_preset: str, sim_seed: int,
                  frame_stride: int = 1) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) for frames 1, 1 + stride, ... of a clip (`simulate_clip`'s events).

  Every frame feeds the simulator (events need every interval); only every `frame_stride`-th
  becomes an example.
  """
  check_labels(clip)
  for k, frame, window in simulate_clip(clip, sim_preset=sim_preset, sim_seed=sim_seed):
    if (k - 1) % frame_stride:
      continue
    example = schema.crop_example(
        frame, clip.landmarks[k], clip.boxes[k], window, int(clip.timestamps_us[k - 1]),
        int(clip.timestamps_us[k]), spec, clip_id=clip.clip_id, subject_id=clip.subject_id,
        subset=clip.subset, frame_index=k)
    yield f"{clip.clip_id}/{k:06d}", example


def _gray(rgb: np.ndarray, source: str) -> np.ndarray:
  if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
    raise BadInput(f"{source}: frames must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
  return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _clip_work(clip, make_examples) -> list | BadInput:
  """Loads one clip and makes all its examples; a BadInput is returned, not raised."""
  try:
    if callable(clip):
      clip = clip()
    return list(make_examples(clip))
  except BadInput as e:
    return e


def guarded(clips: Iterable, make_examples, on_error: str, stats: BuildStats, *,
            workers: int = 0) -> Iterator[tuple[str, dict]]:
  """Runs `make_examples(clip)` per clip, applying the bad-input policy.

  `clips` yields Clips or zero-argument callables returning one (so a clip is loaded only when
  its turn comes); loading may raise BadInput. A clip is all-or-nothing: its examples are
  collected first, so a clip that fails halfway contributes none. With `workers` > 1, clips
  are processed in that many processes (clips and `make_examples` must then pickle); the
  output order, and so the dataset, is the same.
  """
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
  work = functools.partial(_clip_work, make_examples=make_examples)
  if workers > 1:
    # spawn, not fork: the parent has imported JAX, whose threads do not survive a fork.
    pool = multiprocessing.get_context("spawn").Pool(workers)
    results = pool.imap(work, clips)
  else:
    pool, results = None, map(work, clips)
  try:
    yield from _apply_policy(results, on_error, stats)
  finally:
    if pool is not None:
      pool.terminate()


def _apply_policy(results, on_error: str, stats: BuildStats) -> Iterator[tuple[str, dict]]:
  for examples in results:
    if isinstance(examples, BadInput):
      if on_error == "fail":
        raise examples
      logging.warning("skipping: %s", examples)
      stats.skipped.append(str(examples))
      continue
    stats.clips += 1
    for key, example in examples:
      stats.add(example)
      yield key, example


def read_video(path: str) -> tuple[Iterator[np.ndarray], float, int]:
  """Opens a video: (iterator of RGB frames, fps (0 if unknown), frame count (may be 0)).

  Raises BadInput if the file cannot be opened or decodes no frame.
  """
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise BadInput(f"{path}: cannot open the video (missing, corrupt or unsupported codec)")
  fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
  count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
  ok, first = cap.read()
  if not ok:
    cap.release()
    raise BadInput(f"{path}: the video decodes no frame (corrupt or empty)")

  def frames():
    try:
      frame = first
      while frame is not None:
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        ok, frame = cap.read()
        if not ok:
          frame = None
    finally:
      cap.release()

  return frames(), fps, count


def stable_hash(key: str) -> int:
  """A 64-bit hash of `key` that is the same in every process and on every machine."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def split_of(key: str, fractions: dict[str, float], salt: str = "") -> str:
  """A deterministic split for `key` (a video or subject id) by hashing: stable across runs,
  machines and dataset sizes, so adding videos never moves existing ones between splits."""
  h = stable_hash(salt + key) / 2.0**64
  acc = 0.0
  for name, frac in fractions.items():
    acc += frac
    if h < acc:
      return name
  return list(fractions)[-1]
