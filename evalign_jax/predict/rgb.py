"""RGB frames with timestamps on the event clock, for the models that need RGB (CMFA, rgb_slpt).

Two layouts, both registered pixel to pixel with the event sensor (same width and height, as a
DAVIS346's APS frames are):

- a folder of images named by their timestamp in µs: `1000000.png`, `1033333.jpg`, ...;
- a video file plus a timestamps file: one integer µs per line, one line per frame, in order
  (`--rgb_times`; default `<video>.times.txt` beside the video, e.g. `rec.mp4.times.txt`).

A window is paired with the frame nearest its end (training windows end at their RGB frame); a
window with no frame within `max_gap_us` gets none (the caller skips it and counts it). Frames
are read forward only, so a long video is never held in memory.
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class RgbInputError(ValueError):
  """Unusable RGB input; the message names the file."""


class RgbFrames:
  """Timestamped RGB frames, looked up by time in non-decreasing order.

  Attributes:
    times_us: (N,) int64 non-decreasing frame times.
    size: (height, width) of every frame.
  """

  def __init__(self, path, times_path=None):
    self.path = pathlib.Path(os.fspath(path))
    if self.path.is_dir():
      self._files, self.times_us = _frame_folder(self.path)
      self._video = None
      first = self._read_file(0)
    elif self.path.is_file():
      times_path = pathlib.Path(times_path or f"{self.path}.times.txt")
      self.times_us = _times_file(times_path)
      self._video = cv2.VideoCapture(str(self.path))
      if not self._video.isOpened():
        raise RgbInputError(f"{self.path}: cannot open the video")
      frames = int(self._video.get(cv2.CAP_PROP_FRAME_COUNT))
      if frames > 0 and frames != len(self.times_us):
        raise RgbInputError(f"{self.path}: the video has {frames} frames but {times_path} "
                            f"holds {len(self.times_us)} timestamps; give one per frame")
      self._next, self._current = 0, None
      first = self._read_video(0)
    else:
      raise RgbInputError(f"{self.path}: no such video file or frame folder")
    self.size = first.shape[:2]
    self._last = (0, first)

  def nearest(self, t_us: int, max_gap_us: int) -> tuple[np.ndarray, int] | None:
    """(frame (H, W, 3) uint8 RGB, its time) nearest t_us within max_gap_us, else None."""
    i = int(np.searchsorted(self.times_us, t_us))
    candidates = [j for j in (i - 1, i) if 0 <= j < len(self.times_us)]
    if not candidates:
      return None
    j = min(candidates, key=lambda j: abs(int(self.times_us[j]) - t_us))
    if abs(int(self.times_us[j]) - t_us) > max_gap_us:
      return None
    return self._frame(j), int(self.times_us[j])

  def close(self) -> None:
    if self._video is not None:
      self._video.release()

  def _frame(self, j: int) -> np.ndarray:
    if self._last[0] != j:
      frame = self._read_file(j) if self._video is None else self._read_video(j)
      if frame.shape[:2] != self.size:
        raise RgbInputError(f"{self.path}: frame {j} is {frame.shape[1]}x{frame.shape[0]}, "
                            f"the first was {self.size[1]}x{self.size[0]}")
      self._last = (j, frame)
    return self._last[1]

  def _read_file(self, j: int) -> np.ndarray:
    image = cv2.imread(str(self._files[j]), cv2.IMREAD_COLOR)
    if image is None:
      raise RgbInputError(f"{self._files[j]}: cannot read the image")
    return image[..., ::-1].copy()

  def _read_video(self, j: int) -> np.ndarray:
    if j < self._next - 1:
      raise RgbInputError(f"{self.path}: frame {j} requested after frame {self._next - 1}; "
                          "frames are read forward only")
    while self._next <= j:
      ok, frame = self._video.read()
      if not ok:
        raise RgbInputError(f"{self.path}: the video ends after {self._next} frames but the "
                            f"timestamps list {len(self.times_us)}")
      self._current, self._next = frame, self._next + 1
    return self._current[..., ::-1].copy()


def _frame_folder(path: pathlib.Path) -> tuple[list[pathlib.Path], np.ndarray]:
  files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
  if not files:
    raise RgbInputError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
  bad = [p.name for p in files if not p.stem.isdigit()]
  if bad:
    raise RgbInputError(f"{path}: frame names must be their timestamp in µs (e.g. "
                        f"1033333.png); found {bad[:3]}")
  times = np.array([int(p.stem) for p in files], np.int64)
  order = np.argsort(times, kind="stable")
  return [files[i] for i in order], times[order]


def _times_file(path: pathlib.Path) -> np.ndarray:
  if not path.is_file():
    raise RgbInputError(f"{path}: no timestamps file (one integer µs per line, one line per "
                        "video frame); pass --rgb_times")
  try:
    times = np.array([int(line) for line in path.read_text().split()], np.int64)
  except ValueError as e:
    raise RgbInputError(f"{path}: timestamps must be integers in µs, one per line ({e})") from e
  if not len(times):
    raise RgbInputError(f"{path}: no timestamps")
  bad = np.flatnonzero(np.diff(times) < 0)
  if bad.size:
    raise RgbInputError(f"{path}: timestamps decrease at line {int(bad[0]) + 2}")
  return times
