"""Landmark layouts: WFLW's 98 points, E-SIE's 5, their left-right mirror maps, and drawing.

"Left" and "right" are as seen in the image (WFLW's convention): point 60 is the outer corner of
the eye on the image's left, 72 that of the eye on the image's right.

WFLW 98 (0-based):
  0-32   face contour, from the image-left temple down the chin to the image-right temple
  33-41  image-left brow: 33-37 upper edge outer -> inner, 38-41 lower edge inner -> outer
  42-50  image-right brow: 42-46 upper edge inner -> outer, 47-50 lower edge outer -> inner
  51-54  nose bridge, top -> tip (54 = tip); 55-59 nose base, image-left -> image-right
  60-67  image-left eye: 60 outer corner, 61-63 upper lid, 64 inner corner, 65-67 lower lid
  68-75  image-right eye: 68 inner corner, 69-71 upper lid, 72 outer corner, 73-75 lower lid
  76-87  outer lip: 76 image-left corner, 77-81 upper lip, 82 image-right corner, 83-87 lower
  88-95  inner lip: 88 left corner, 89-91 upper, 92 right corner, 93-95 lower
  96, 97 pupils (image-left, image-right)
5 points: 0 nose tip, 1 and 2 mouth corners (image-left, image-right), 3 and 4 eyes
  (image-left, image-right): E-SIE's pupils, FES's eye centres.

Errors are normalised by the distance of two points that depends on the layout
(`default_norm`, the one table the training loss and NME's norm="auto" read): WFLW's outer eye
corners 60, 72 (inter-ocular); the 5-point layout's eyes 3, 4 (inter-pupil: the eye centres).
"""

from __future__ import annotations

import cv2
import numpy as np

NUM_WFLW = 98
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 60, 72
LEFT_PUPIL, RIGHT_PUPIL = 96, 97
NOSE_TIP = 54
MOUTH_LEFT, MOUTH_RIGHT = 76, 82
# The 98-point indices that E-SIE's 5 points correspond to (nose tip, mouth corners, pupils).
ESIE_FROM_WFLW = (54, 76, 82, 96, 97)
# The eyes of the 5-point layout (image-left, image-right).
LEFT_EYE_5, RIGHT_EYE_5 = 3, 4
# Number of points -> (the metric's name, the two points whose distance normalises errors).
# 300W's 68 points have no dataset here; their outer eye corners are STAR's inter-ocular.
DEFAULT_NORM = {
    NUM_WFLW: ("inter_ocular", (LEFT_EYE_OUTER, RIGHT_EYE_OUTER)),
    68: ("inter_ocular", (36, 45)),
    5: ("inter_pupil", (LEFT_EYE_5, RIGHT_EYE_5)),
}

GROUPS_98 = {
    "contour": range(0, 33), "left_brow": range(33, 42), "right_brow": range(42, 51),
    "nose_bridge": range(51, 55), "nose_base": range(55, 60), "left_eye": range(60, 68),
    "right_eye": range(68, 76), "outer_lip": range(76, 88), "inner_lip": range(88, 96),
    "pupils": range(96, 98),
}


def _mirror_98() -> np.ndarray:
  pairs = [(i, 32 - i) for i in range(16)]                                  # contour
  pairs += list(zip(range(33, 38), range(46, 41, -1)))                      # brow upper
  pairs += list(zip(range(38, 42), range(50, 46, -1)))                      # brow lower
  pairs += [(55, 59), (56, 58)]                                             # nose base
  pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
  pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]               # outer lip
  pairs += [(88, 92), (89, 91), (93, 95)]                                   # inner lip
  pairs += [(96, 97)]
  perm = np.arange(NUM_WFLW)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


# After a horizontal flip, new point i is old point MIRROR[i].
MIRROR_98 = _mirror_98()
MIRROR_5 = np.array([0, 2, 1, 4, 3])
MIRRORS = {98: MIRROR_98, 5: MIRROR_5}

# Polylines for drawing 98-point faces: (indices, closed).
_CURVES_98 = [
    (range(0, 33), False), (range(33, 42), True), (range(42, 51), True), (range(51, 55), False),
    (range(55, 60), False), (range(60, 68), True), (range(68, 76), True), (range(76, 88), True),
    (range(88, 96), True),
]


def default_norm(num_points: int) -> tuple[str, tuple[int, int]]:
  """(name, (a, b)): the default error normaliser of a layout of `num_points` points, the
  distance ||gt_a - gt_b|| (see the module docstring).

  Raises:
    ValueError: a layout without one, naming the known layouts.
  """
  if num_points not in DEFAULT_NORM:
    raise ValueError(f"no default normaliser for {num_points} landmarks; known layouts: "
                     f"{sorted(DEFAULT_NORM)} points")
  return DEFAULT_NORM[num_points]


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
  """(..., 98, 2) -> (...,) distance between the outer eye corners 60 and 72."""
  return np.linalg.norm(landmarks[..., LEFT_EYE_OUTER, :] - landmarks[..., RIGHT_EYE_OUTER, :],
                        axis=-1)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, color=(0, 255, 0),
                   radius: int = 1, curves: bool = True) -> np.ndarray:
  """Draws (K, 2) points (and, for 98 points, the face curves) on a copy of an RGB image."""
  out = np.ascontiguousarray(image).copy()
  pts = np.asarray(landmarks, np.float64)
  shift = 4   # sub-pixel drawing
  scaled = np.round(pts * (1 << shift)).astype(np.int32)
  if curves and len(pts) == NUM_WFLW:
    for idx, closed in _CURVES_98:
      cv2.polylines(out, [scaled[list(idx)]], closed, color, 1, cv2.LINE_AA, shift)
  for i, (x, y) in enumerate(scaled):
    c = (255, 64, 64) if len(pts) == NUM_WFLW and i in (LEFT_PUPIL, RIGHT_PUPIL) else color
    cv2.circle(out, (int(x), int(y)), radius << shift, c, -1, cv2.LINE_AA, shift)
  return out
