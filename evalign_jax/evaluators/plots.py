"""Evaluation pictures: CED curves (matplotlib, Agg) and prediction grids (cv2).

Pictures are (H, W, 3) uint8 RGB arrays: what evaluators return, TensorBoard shows and
`files.write_png` writes. matplotlib is imported inside `ced_image` to keep
`import evalign_jax.evaluators` light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from evalign_jax.evaluators import metrics

GT_COLOR = (0, 255, 0)     # RGB green
PRED_COLOR = (255, 0, 0)   # RGB red


def ced_image(curves: Mapping[str, np.ndarray], threshold: float = 0.1, *,
              title: str | None = None) -> np.ndarray:
  """A CED plot: one line per method, its AUC@threshold and NME in the legend.

  Args:
    curves: method name -> (N,) per-image NMEs (fractions).
    threshold: the x-axis end and the AUC threshold (NME fraction).
    title: optional axes title.

  Returns:
    (540, 720, 3) uint8 RGB.
  """
  if not curves:
    raise ValueError("no curves to plot")
  # Every metric first, so a bad curve fails before anything is drawn.
  lines = []
  for name, nmes in curves.items():
    xs, ys = metrics.ced(nmes, threshold, 1001)
    nme = 100 * float(np.mean(nmes))
    lines.append((xs, ys, f"{name} (AUC {metrics.auc(nmes, threshold):.4f}, NME {nme:.2f}%)"))

  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  # A bare Figure + Agg canvas: no pyplot global state, no GUI backend.
  fig = Figure(figsize=(6, 4.5), dpi=120)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for xs, ys, label in lines:
    ax.plot(xs, ys, label=label, linewidth=1.5)
  ax.set_xlim(0, threshold)
  ax.set_ylim(0, 1)
  ax.set_xlabel("NME")
  ax.set_ylabel("fraction of images")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize="small")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_points(image: np.ndarray, points: np.ndarray, color, radius: int) -> np.ndarray:
  """Filled anti-aliased dots at sub-pixel positions, all in one colour.

  Not data_pipelines.landmarks.draw_landmarks: that one paints 98-point pupils in a fixed red,
  which would make gt pupils look like predictions here.
  """
  shift = 4
  points = np.asarray(points, np.float64)
  points = points[np.all(np.isfinite(points), axis=-1)]   # a diverged prediction draws nothing
  for x, y in np.round(points * (1 << shift)).astype(np.int64):
    cv2.circle(image, (int(x), int(y)), radius << shift, color, -1, cv2.LINE_AA, shift)
  return image


def _tile(image: np.ndarray) -> np.ndarray:
  """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3) uint8 RGB."""
  if image.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"images must be (H, W[, 1 | 3]), got {image.shape}")
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def prediction_grid(images, pred, gt=None, *, titles: Sequence[str] | None = None,
                    ncols: int | None = None, radius: int = 1) -> np.ndarray:
  """A grid of images with gt (green) and predicted (red) points drawn.

  Args:
    images: (N, H, W, 3) RGB, (N, H, W, 1) or (N, H, W) uint8.
    pred: (N, K, 2) predictions, px in the image frame.
    gt: optional (N, K', 2) ground truth, px (K' may differ from K, e.g. E-SIE's 5).
    titles: optional N strings written above each tile (e.g. "NME 12.3%").
    ncols: tiles per row; default ceil(sqrt(N)).
    radius: point radius, px.

  Returns:
    (rows * (H + title strip), ncols * W, 3) uint8 RGB; unused cells are black.
  """
  images = np.asarray(images)
  n = images.shape[0]
  pred = np.asarray(pred, np.float64)
  if n == 0 or pred.shape[0] != n or (gt is not None and np.asarray(gt).shape[0] != n):
    raise ValueError("images, pred and gt need the same non-zero count")
  if titles is not None and len(titles) != n:
    raise ValueError(f"need {n} titles, got {len(titles)}")
  ncols = ncols or math.ceil(math.sqrt(n))
  h, w = images.shape[1:3]
  strip = 14 if titles is not None else 0
  rows = math.ceil(n / ncols)
  grid = np.zeros((rows * (h + strip), ncols * w, 3), np.uint8)
  for i in range(n):
    tile = np.ascontiguousarray(_tile(images[i])).copy()
    if gt is not None:
      draw_points(tile, gt[i], GT_COLOR, radius)
    draw_points(tile, pred[i], PRED_COLOR, radius)
    r, c = divmod(i, ncols)
    y0, x0 = r * (h + strip), c * w
    grid[y0 + strip:y0 + strip + h, x0:x0 + w] = tile
    if titles is not None:
      cv2.putText(grid, str(titles[i]), (x0 + 2, y0 + strip - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                  (255, 255, 255), 1, cv2.LINE_AA)
  return grid

