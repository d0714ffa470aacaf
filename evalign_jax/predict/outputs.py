"""Prediction outputs, written beside their final names and renamed into place only at the end.

  landmarks.csv   window_end_us,point,x,y   (µs; landmark index; sensor pixels, centres at
                  integers) one row per landmark per predicted window
  overlay.mp4     the event rendering of each predicted window with the crop box (grey) and the
                  landmarks (green); or overlay/<window_end_us>.png with `overlay="png"`
  summary.json    counts, skips, rates; written last, so its presence means the others are
                  complete and belong to it

Until `commit`, everything goes to hidden temporary names in the output folder; `abort` (or a
crash) leaves the previous outputs as they were and no half-written file under a final name.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import cv2
import numpy as np

from data_pipelines import geometry
from evalign_jax import files
from evalign_jax.evaluators import plots

OVERLAY_KINDS = ("mp4", "png", "none")
LANDMARK_COLOUR = (0, 200, 0)      # BGR
BOX_COLOUR = (128, 128, 128)


class PredictionWriter:
  """Streams landmarks and overlay frames to temporary files; `commit` publishes them."""

  def __init__(self, out_dir, overlay: str = "mp4", fps: float = 30.0):
    if overlay not in OVERLAY_KINDS:
      raise ValueError(f"overlay must be one of {OVERLAY_KINDS}, got {overlay!r}")
    self.out = pathlib.Path(os.fspath(out_dir))
    self.out.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}"
    self.final = {"csv": self.out / "landmarks.csv", "summary": self.out / "summary.json",
                  "mp4": self.out / "overlay.mp4", "png": self.out / "overlay"}
    # The video temp keeps the .mp4 suffix: cv2 picks the container from it.
    self.tmp = {"csv": self.out / f".landmarks{tag}.csv", "mp4": self.out / f".overlay{tag}.mp4",
                "png": self.out / f".overlay{tag}"}
    self.overlay, self.fps = overlay, fps
    self._csv = open(self.tmp["csv"], "w", newline="")
    self._csv.write("window_end_us,point,x,y\n")
    self._video = None
    if overlay == "png":
      shutil.rmtree(self.tmp["png"], ignore_errors=True)
      self.tmp["png"].mkdir()

  def landmarks(self, end_us: int, points: np.ndarray) -> None:
    """One window's (K, 2) sensor-pixel landmarks."""
    self._csv.writelines(f"{end_us},{k},{x:.3f},{y:.3f}\n" for k, (x, y) in enumerate(points))

  def frame(self, end_us: int, image: np.ndarray, box, points: np.ndarray,
            crop_scale: float) -> None:
    """One overlay frame: (H, W, 3) uint8 RGB event image, face box, (K, 2) points."""
    canvas = np.ascontiguousarray(image[..., ::-1])   # cv2 writes BGR
    cx, cy, side = geometry.square_box(box, crop_scale)
    cv2.rectangle(canvas, (int(round(cx - side / 2)), int(round(cy - side / 2))),
                  (int(round(cx + side / 2)), int(round(cy + side / 2))), BOX_COLOUR, 1)
    radius = max(1, round(max(canvas.shape[:2]) / 300))
    plots.draw_points(canvas, points, LANDMARK_COLOUR, radius)
    if self.overlay == "png":
      files.write_png(str(self.tmp["png"] / f"{end_us:012d}.png"), canvas[..., ::-1])
      return
    if self._video is None:
      h, w = canvas.shape[:2]
      self._video = cv2.VideoWriter(str(self.tmp["mp4"]), cv2.VideoWriter_fourcc(*"mp4v"),
                                    float(self.fps), (w, h))
      if not self._video.isOpened():
        raise OSError(f"{self.final['mp4']}: this OpenCV cannot write mp4 video; use "
                      "--overlay=png")
    self._video.write(canvas)

  def commit(self, summary: dict) -> dict:
    """Publishes every output; summary.json last. Returns the final paths."""
    self._close()
    text = json.dumps(summary, indent=2)   # fails, if at all, before anything is published
    self.final["summary"].unlink(missing_ok=True)   # stale outputs stay unmarked until done
    os.replace(self.tmp["csv"], self.final["csv"])
    paths = {"landmarks": str(self.final["csv"])}
    if self.overlay == "mp4" and self._video is not None:
      os.replace(self.tmp["mp4"], self.final["mp4"])
      paths["overlay"] = str(self.final["mp4"])
    elif self.overlay == "png":
      shutil.rmtree(self.final["png"], ignore_errors=True)
      os.replace(self.tmp["png"], self.final["png"])
      paths["overlay"] = str(self.final["png"])
    paths["summary"] = str(self.final["summary"])
    files.write_text(paths["summary"], text)
    return paths

  def abort(self) -> None:
    """Removes every temporary output (the previous final outputs are untouched)."""
    self._close()
    for key, path in self.tmp.items():
      if key == "png":
        shutil.rmtree(path, ignore_errors=True)
      else:
        path.unlink(missing_ok=True)

  def _close(self) -> None:
    if not self._csv.closed:
      self._csv.close()
    if self._video is not None:
      self._video.release()
