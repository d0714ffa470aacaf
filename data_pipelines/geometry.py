"""2-D affine maps between pixel frames: the one place crops and geometric augmentation live.

Convention: pixel centres sit at integer coordinates (pixel (i, j) is the point x=j, y=i), as in
cv2.warpAffine. Landmarks, face boxes and event coordinates all use it, so one matrix moves an
image, its landmarks and its events consistently. Matrices are (2, 3) float64 mapping source
(x, y, 1) to destination (x', y').
"""

from __future__ import annotations

import numpy as np


def as_3x3(m: np.ndarray) -> np.ndarray:
  return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])


def compose(*ms: np.ndarray) -> np.ndarray:
  """compose(a, b, c) applies a first, then b, then c."""
  out = np.eye(3)
  for m in ms:
    out = as_3x3(m) @ out
  return out[:2]


def invert(m: np.ndarray) -> np.ndarray:
  return np.linalg.inv(as_3x3(m))[:2]


def apply_to_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
  """(..., 2) points -> (..., 2) transformed points, in float64."""
  pts = np.asarray(pts, np.float64)
  return pts @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def square_box(box: np.ndarray, scale: float) -> tuple[float, float, float]:
  """(x0, y0, x1, y1) -> centre x, centre y and side of the square `scale` x its longer side."""
  x0, y0, x1, y1 = (float(v) for v in box)
  return (x0 + x1) / 2.0, (y0 + y1) / 2.0, scale * max(x1 - x0, y1 - y0)


def box_crop_matrix(box: np.ndarray, scale: float, size: int, *, rotation_deg: float = 0.0,
                    shift: tuple[float, float] = (0.0, 0.0), flip: bool = False) -> np.ndarray:
  """The map from a source frame to a size x size crop of the square `scale` x box side.

  The crop square is centred on the box, optionally rotated by `rotation_deg` (counter-clockwise
  in the image as displayed), shifted by `shift` (fractions of the square's side, in the
  destination frame) and mirrored left-right. The square's edges map to the crop's outer pixel
  edges, so its centre lands on ((size - 1) / 2, (size - 1) / 2).
  """
  cx, cy, side = square_box(box, scale)
  if side <= 0:
    raise ValueError(f"degenerate box {box}")
  s = size / side
  a = np.deg2rad(rotation_deg)
  cos, sin = np.cos(a) * s, np.sin(a) * s
  # Rotate/scale about the box centre, then move the centre to the crop centre (+ shift).
  c = (size - 1) / 2.0
  m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
  m[:, 2] = np.array([c + shift[0] * size, c + shift[1] * size]) - m[:, :2] @ [cx, cy]
  if flip:
    m = compose(m, np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]))
  return m


def box_of_points(pts: np.ndarray) -> np.ndarray:
  """(K, 2) points -> their bounding box (x0, y0, x1, y1), float32."""
  pts = np.asarray(pts)
  return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()],
                  np.float32)


def hflip_matrix(width: int) -> np.ndarray:
  """Left-right mirror of a `width`-pixel-wide frame: x -> width - 1 - x (pixel centres swap)."""
  return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def rect_crop_matrix(rect: np.ndarray, size: int | tuple[int, int], *,
                     flip: bool = False) -> np.ndarray:
  """The map from a source frame to a resize of the axis-aligned rectangle `rect`.

  Unlike `box_crop_matrix` the rectangle keeps its own aspect ratio, so x and y scale
  differently (torchvision's RandomResizedCrop). Its edges map to the output's outer pixel edges.

  Args:
    rect: (x0, y0, x1, y1) outer edges in the source frame; the pixels left..left+w-1 of a
      torchvision crop span (left - 0.5, left + w - 0.5).
    size: output side S, or (height, width), in pixels.
    flip: mirror the output left-right.
  """
  out_h, out_w = (size, size) if np.isscalar(size) else size
  x0, y0, x1, y1 = (float(v) for v in rect)
  if x1 <= x0 or y1 <= y0:
    raise ValueError(f"degenerate rectangle {rect}")
  sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
  m = np.array([[sx, 0.0, -0.5 - sx * x0], [0.0, sy, -0.5 - sy * y0]])
  return compose(m, hflip_matrix(out_w)) if flip else m
