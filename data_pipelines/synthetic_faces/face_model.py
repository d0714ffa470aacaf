"""Geometry of the procedural face: a 3-D template of the 98 WFLW points, identity, expression,
pose and perspective projection.

Head coordinates ("head units", 1 unit ~ 7 cm, half the cheekbone width): x towards the image
right of a frontal face, y down, z out of the face towards the camera; the origin lies between
the eyes at eye level, on the skull's vertical axis (the face front is at z ~ 1.3). Camera
coordinates are cv2's (x right, y down, z forward = depth), so a head point P maps to
`X = M @ R @ (P - PIVOT) + translation` with M = diag(1, 1, -1). Pixels have their centres at
integer coordinates (cv2 convention).

Pose signs: yaw > 0 turns the nose towards the image right; pitch > 0 tilts the face up (nose
moves up in the image); roll > 0 rotates the face counter-clockwise as displayed (the image-right
eye, 72, moves up). Angles are in degrees.

The face surface is a "tube": at each height y its front is half a superellipse from the face
boundary (x = +-w(y), depth z0(y)) to the midline (depth zf(y)). Contour points sit on the
boundary of this tube; when the pose hides one, it slides forward along its cross-section to the
silhouette, as WFLW annotators put hidden contour points on the visible face edge.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from data_pipelines import landmarks as lm

NUM_POINTS = lm.NUM_WFLW
# The head rotates about a point low in the skull, behind the face (roughly the top of the neck),
# so yaw also shifts the face sideways as on a real head.
PIVOT = np.array([0.0, 0.45, -0.2])
# Skull ellipsoid (centre, semi-axes), used for the hair cap, head outline and shading.
SKULL_CENTRE = np.array([0.0, -0.35, 0.0])
# One ellipsoid enclosing skull and jaw: its normals shade the whole head smoothly.
SHADING_CENTRE = np.array([0.0, 0.12, -0.05])
SHADING_AXES = np.array([1.05, 1.62, 1.42])
_M = np.diag([1.0, 1.0, -1.0])
# Superellipse exponent of the face's horizontal cross-sections: flatter in front than an
# ellipse, so features near the sides stay visible under yaw as on a real face.
_FLAT = 3.0
# Image-right points that `build_face` fills by mirroring their image-left partners.
_MIRRORED = np.array([*range(42, 51), 58, 59, *range(80, 85), 91, 92, 93])


@dataclasses.dataclass(frozen=True)
class Identity:
  """Per-subject face shape, in head units (see module docstring); defaults = an average face.

  y values are heights below the eye line (negative = above); widths are half-widths.
  """

  face_width: float = 1.0        # contour half-width at the temples (points 0/32)
  contour_top: float = 0.06      # y of contour points 0 and 32
  chin_y: float = 1.63           # y of the chin, point 16
  jaw_taper: float = 0.16        # how much narrower the jaw is than the cheeks (0 = none)
  jaw_square: float = 2.4        # superellipse exponent of the contour: 2 = oval, 3 = square
  head_width: float = 1.08       # skull half-width
  head_height: float = 1.3       # skull half-height
  head_depth: float = 1.38       # skull half-depth (front-back)
  hairline_y: float = -1.15      # y of the hairline at the midline
  eye_spacing: float = 0.485     # half the distance between eye centres
  eye_width: float = 0.215       # half the eye width (corner to corner)
  eye_open: float = 0.075        # upper-lid height above the corner line
  eye_lower: float = 0.045       # lower-lid depth below the corner line
  eye_tilt: float = 0.02         # outer corner higher than the inner one by this
  iris_radius: float = 0.085
  brow_y: float = -0.31          # height of the brow's centre line above the eyes (negative)
  brow_thickness: float = 0.065  # at the inner end; the outer end is thinner
  brow_arch: float = 0.05
  brow_inner_x: float = 0.16
  brow_outer_x: float = 0.86
  nose_tip_y: float = 0.62       # point 54
  nose_base_y: float = 0.77      # point 57
  nose_width: float = 0.2        # half-width of the nose base (55, 59)
  nose_protrusion: float = 0.38  # tip height above the face surface
  mouth_y: float = 1.05          # mouth corners 76/82
  mouth_width: float = 0.4       # half-width
  upper_lip: float = 0.1         # vermilion height of the upper lip
  lower_lip: float = 0.15        # vermilion height of the lower lip
  asymmetry: tuple[float, ...] = ()  # per-part offsets; empty = perfectly symmetric

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "Identity":
    u = lambda lo, hi: float(rng.uniform(lo, hi))
    n = lambda mu, sd, lo, hi: float(np.clip(rng.normal(mu, sd), lo, hi))
    eye_spacing = n(0.485, 0.025, 0.43, 0.54)
    eye_width = n(0.215, 0.015, 0.18, 0.25)
    return cls(
        face_width=n(1.0, 0.04, 0.9, 1.1),
        contour_top=u(-0.02, 0.14),
        chin_y=n(1.63, 0.07, 1.45, 1.82),
        jaw_taper=u(0.04, 0.3),
        jaw_square=u(2.0, 3.1),
        head_width=n(1.08, 0.03, 1.0, 1.16),
        head_height=n(1.3, 0.05, 1.18, 1.42),
        head_depth=n(1.38, 0.05, 1.26, 1.5),
        hairline_y=u(-1.35, -0.95),
        eye_spacing=eye_spacing,
        eye_width=min(eye_width, eye_spacing - 0.2),
        eye_open=n(0.075, 0.01, 0.05, 0.1),
        eye_lower=n(0.045, 0.007, 0.03, 0.06),
        eye_tilt=n(0.02, 0.02, -0.03, 0.07),
        iris_radius=n(0.085, 0.006, 0.07, 0.1),
        brow_y=n(-0.31, 0.035, -0.42, -0.22),
        brow_thickness=n(0.065, 0.015, 0.035, 0.1),
        brow_arch=u(0.01, 0.1),
        brow_inner_x=n(0.16, 0.025, 0.09, 0.23),
        brow_outer_x=n(0.86, 0.04, 0.76, 0.96),
        nose_tip_y=n(0.62, 0.04, 0.5, 0.74),
        nose_base_y=0.0,  # set below, relative to the tip
        nose_width=n(0.2, 0.025, 0.14, 0.27),
        nose_protrusion=n(0.38, 0.05, 0.28, 0.5),
        mouth_y=0.0,
        mouth_width=n(0.4, 0.035, 0.3, 0.5),
        upper_lip=n(0.1, 0.02, 0.05, 0.15),
        lower_lip=n(0.15, 0.025, 0.08, 0.21),
        asymmetry=tuple(float(v) for v in rng.normal(0.0, 0.012, 12)),
    )._finish(rng)

  def _finish(self, rng: np.random.Generator) -> "Identity":
    # Vertical features depend on each other; place them in order so they cannot cross.
    base = self.nose_tip_y + float(rng.uniform(0.11, 0.19))
    mouth = base + float(rng.uniform(0.22, 0.34))
    chin = max(self.chin_y, mouth + self.lower_lip + 0.35)
    return dataclasses.replace(self, nose_base_y=base, mouth_y=mouth, chin_y=chin)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["asymmetry"] = list(self.asymmetry)
    return d


@dataclasses.dataclass(frozen=True)
class Expression:
  """Per-frame expression. Amounts are in [0, 1] unless noted.

  blink_left/right close the image-left (60-67) / image-right (68-75) eye; brow_raise is in
  [-1, 1] (negative = frown); gaze_x/y in [-1, 1] move the pupils (+x = image right, +y = down).
  """

  mouth_open: float = 0.0
  smile: float = 0.0
  blink_left: float = 0.0
  blink_right: float = 0.0
  brow_raise: float = 0.0
  gaze_x: float = 0.0
  gaze_y: float = 0.0


@dataclasses.dataclass(frozen=True)
class Pose:
  """Head pose: angles in degrees (signs in the module docstring); translation = the camera
  coordinates of PIVOT in head units (z = distance from the camera)."""

  yaw: float = 0.0
  pitch: float = 0.0
  roll: float = 0.0
  translation: tuple[float, float, float] = (0.0, 0.0, 8.0)


@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera: focal length and principal point in pixels."""

  focal_px: float
  cx: float
  cy: float

  @classmethod
  def for_image(cls, height: int, width: int, hfov_deg: float = 40.0) -> "Camera":
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    return cls(f, (width - 1) / 2.0, (height - 1) / 2.0)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """(3, 3) rotation in head coordinates; yaw first, then pitch, then roll (degrees)."""
  a, b, c = np.radians([yaw, pitch, roll])
  ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
  rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
  rz = np.array([[math.cos(c), math.sin(c), 0], [-math.sin(c), math.cos(c), 0], [0, 0, 1]])
  return rz @ rx @ ry


# ----------------------------------------------------------------------------------------------
# The face surface ("tube").


@dataclasses.dataclass(frozen=True)
class _Tube:
  """Cross-section tables over height y: half-width w, boundary depth z0, midline depth zf."""

  y: np.ndarray
  w: np.ndarray
  z0: np.ndarray
  zf: np.ndarray

  def at(self, y):
    return (np.interp(y, self.y, self.w), np.interp(y, self.y, self.z0),
            np.interp(y, self.y, self.zf))

  def surface_z(self, x, y):
    """Depth of the face front at frontal coordinates (x, y), head units."""
    w, z0, zf = self.at(y)
    u = np.clip(np.abs(x) / np.maximum(w, 1e-6), 0.0, 1.0)
    return z0 + (zf - z0) * (1.0 - u ** _FLAT) ** (1.0 / _FLAT)

  def boundary_point(self, x, y, view_from):
    """Points (N, 3) on the tube at frontal (x, y), pushed onto the silhouette when hidden.

    The cross-section is the superellipse (x/w)^p + ((z - z0)/d)^p = 1, parametrised as
    (w cos(a)^(2/p), z0 + d sin(a)^(2/p)) with a = 0 at the boundary and 90 deg at the midline.
    A point is hidden when the normal there faces away from the camera at `view_from` (head
    coordinates); it then moves forward to the silhouette angle, which is where a hidden WFLW
    contour point is annotated.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w, z0, zf = self.at(y)
    w = np.maximum(w, np.abs(x) + 1e-6)
    d = np.maximum(zf - z0, 1e-3)
    s = np.where(x >= 0, 1.0, -1.0)
    e, q = 2.0 / _FLAT, 2.0 * (_FLAT - 1.0) / _FLAT
    point = lambda a: np.stack([s * w * np.cos(a) ** e, y, z0 + d * np.sin(a) ** e], -1)
    alpha0 = np.arccos(np.clip(np.abs(x) / w, 0.0, 1.0) ** (_FLAT / 2.0))
    alpha = alpha0
    for _ in range(2):   # the view ray depends on the point; two fixed-point steps suffice
      v = view_from[None] - point(alpha)
      # Silhouette: normal (s cos^q / w, 0, sin^q / d) orthogonal to the view ray.
      r = -s * d * v[:, 0] / (w * np.maximum(v[:, 2], 1e-6))
      sil = np.arctan(np.maximum(r, 0.0) ** (1.0 / q))
      alpha = np.maximum(alpha0, sil)
    return point(alpha)


def _contour_2d(ident: Identity) -> np.ndarray:
  """(33, 2) frontal contour, evenly spaced by arc length from the image-left temple."""
  phi = np.linspace(0.0, math.pi, 721)
  c, s = np.cos(phi), np.sin(phi)
  e = 2.0 / ident.jaw_square
  depth = np.abs(s) ** e                     # 0 at the temples, 1 at the chin
  x = -ident.face_width * np.sign(c) * np.abs(c) ** e * (1.0 - ident.jaw_taper * depth ** 2)
  y = ident.contour_top + (ident.chin_y - ident.contour_top) * depth
  seg = np.hypot(np.diff(x), np.diff(y))
  arc = np.concatenate([[0.0], np.cumsum(seg)])
  target = np.linspace(0.0, arc[-1], 33)
  out = np.stack([np.interp(target, arc, x), np.interp(target, arc, y)], -1)
  out[16, 0] = 0.0
  return out


def _make_tube(ident: Identity, contour: np.ndarray) -> _Tube:
  top, chin = ident.contour_top, float(contour[16, 1])
  # Above the contour the boundary follows an ellipse up to the crown, inside the skull.
  skull_top = SKULL_CENTRE[1] - ident.head_height
  crown = max(ident.hairline_y - 0.45, skull_top + 0.02)
  y_up = np.linspace(crown + 0.02, top, 24)[:-1]
  skull = np.sqrt(np.clip(1.0 - ((y_up - SKULL_CENTRE[1]) / ident.head_height) ** 2, 0, 1))
  w_up = abs(contour[0, 0]) * np.sqrt(1.0 - ((top - y_up) / (top - crown)) ** 2)
  w_up = np.minimum(w_up, 0.97 * ident.head_width * skull)
  y_lo, w_lo = contour[:17, 1], np.abs(contour[:17, 0])
  y = np.concatenate([y_up, y_lo])
  w = np.concatenate([w_up, w_lo])
  # The face edge runs from in front of the ears (z ~ 0.15) forward to the chin (z ~ 1.05).
  frac = np.clip((y - top) / (chin - top), 0.0, 1.0)
  z0 = 0.15 + 0.9 * frac ** 4
  # Midline depth (without the nose): forehead rounding back to the crown, lips forward, chin.
  zf = np.interp(y, [crown, crown + 0.3, ident.hairline_y, -0.4, ident.mouth_y, chin - 0.25, chin],
                 [0.35, 0.95, 1.2, 1.32, 1.42, 1.3, 1.1])
  # The forehead must stay inside the skull (and so under the hair).
  skull_z = ident.head_depth * np.sqrt(np.clip(1.0 - ((y - SKULL_CENTRE[1])
                                                      / ident.head_height) ** 2, 0, 1))
  zf = np.where(y < top, np.minimum(zf, 0.97 * skull_z), zf)
  zf = np.maximum(zf, z0 + 0.05)
  return _Tube(y, w, z0, zf)


def _forehead_2d(ident: Identity, contour: np.ndarray) -> np.ndarray:
  """(14, 2) frontal outline above the contour: image-right temple -> hairline -> left."""
  top_r, top_l = contour[32], contour[0]
  th = np.linspace(0.0, math.pi, 16)[1:-1]
  half = 0.5 * (top_r[0] - top_l[0])
  h = top_r[1] - ident.hairline_y
  # A squarish arc: steep temples, flat hairline across the forehead.
  c, s = np.cos(th), np.sin(th)
  x = half * np.sign(c) * np.abs(c) ** 0.8
  y = 0.5 * (top_r[1] + top_l[1]) - h * s ** 0.6
  return np.stack([x, y], -1)


def _surface(tube: _Tube, xy, lift: float = 0.0) -> np.ndarray:
  """Frontal (N, 2) points -> (N, 3) on the face surface, raised by `lift`."""
  xy = np.asarray(xy, np.float64)
  return np.concatenate([xy, tube.surface_z(xy[:, 0], xy[:, 1])[:, None] + lift], -1)


def _pack(named: dict) -> tuple[np.ndarray, dict]:
  """Named (N_i, 3) arrays -> one (sum N_i, 3) array and name -> slice."""
  index, start = {}, 0
  for name, a in named.items():
    index[name] = slice(start, start + len(a))
    start += len(a)
  return np.concatenate(list(named.values())), index


@dataclasses.dataclass(frozen=True)
class _Template:
  """Everything about a face that does not depend on expression (cached per identity)."""

  contour: np.ndarray       # (33, 2) frontal contour, mouth closed
  tube: _Tube
  forehead: np.ndarray      # (14, 2)
  lid_base: np.ndarray      # (3, 2) corner line under the lid samples, image-left eye
  upper_open: np.ndarray    # (3,) open upper-lid heights
  lower: np.ndarray         # (3,) lower-lid heights
  static: np.ndarray        # (N, 3) render points that do not move with expression
  static_index: dict


@functools.lru_cache(maxsize=256)
def _template(ident: Identity) -> _Template:
  contour = _contour_2d(ident)
  tube = _make_tube(ident, contour)
  ex, ew = -ident.eye_spacing, ident.eye_width
  outer = np.array([ex - ew, -ident.eye_tilt])
  inner = np.array([ex + ew, 0.3 * ident.eye_tilt])
  tl = np.array([0.25, 0.5, 0.75])
  base = outer[None] + tl[:, None] * (inner - outer)[None]
  upper_open = base[:, 1] - ident.eye_open * np.sin(math.pi * tl ** 0.9) ** 0.8
  lower = base[:, 1] + ident.eye_lower * np.sin(math.pi * tl ** 1.15) ** 0.9

  st = {}
  for s, name in ((-1.0, "left"), (1.0, "right")):
    # Lid crease: above the open upper lid; stays put when the eye closes.
    crease = np.stack([base[:, 0], upper_open - 0.75 * ident.eye_open - 0.02], -1)
    crease = np.concatenate([[[base[0, 0] - 0.45 * ew, base[0, 1] - 0.06]], crease,
                             [[base[2, 0] + 0.25 * ew, base[2, 1] - 0.07]]])
    st[f"crease_{name}"] = _surface(tube, crease * [-s, 1.0], -0.03)
    # Ear: a flat C-shape in a plane turned 25 deg out of the head's side.
    ang = math.radians(25)
    eu = np.array([s * math.sin(ang), 0.0, -math.cos(ang)])
    ev = np.array([0.0, 1.0, 0.0])
    root = np.array([s * (ident.head_width - 0.06), 0.28, -0.12])
    th = np.linspace(-0.5 * math.pi, 1.5 * math.pi, 14)[:-1]
    uu = 0.17 + 0.17 * np.cos(th) * (1.0 - 0.25 * np.sin(th))
    vv = 0.42 * np.sin(th)
    st[f"ear_{name}"] = root + uu[:, None] * eu + vv[:, None] * ev
    inner_th = np.linspace(-0.3 * math.pi, 0.7 * math.pi, 6)
    st[f"ear_inner_{name}"] = (root + (0.17 + 0.09 * np.cos(inner_th))[:, None] * eu
                               + (0.2 * np.sin(inner_th) - 0.05)[:, None] * ev)
    # Glasses: a rounded lens outline in front of each eye, and the arm to the ear.
    eye_c = np.array([s * ident.eye_spacing, 0.0])
    th = np.linspace(0.0, 2.0 * math.pi, 25)[:-1]
    rx, ry = ew + 0.1, 0.19
    lens = np.stack([eye_c[0] + rx * np.sign(np.cos(th)) * np.abs(np.cos(th)) ** 0.7,
                     eye_c[1] + 0.02 + ry * np.sign(np.sin(th)) * np.abs(np.sin(th)) ** 0.7], -1)
    lz = float(tube.surface_z(eye_c[0], eye_c[1])) + 0.2
    st[f"lens_{name}"] = np.concatenate([lens, np.full((len(lens), 1), lz)], -1)
    outer_edge = st[f"lens_{name}"][0 if s > 0 else 12]
    st[f"arm_{name}"] = np.stack([outer_edge, [s * (ident.head_width + 0.02), 0.02, -0.05]])
  # Bridge from the upper-inner corner of one lens to the other's.
  st["bridge"] = np.stack([st["lens_left"][21], [0.0, -0.03, st["lens_left"][0, 2] + 0.06],
                           st["lens_right"][15]])
  # Neck, attached under the jaw (head frame).
  st["neck_top"] = np.array([[-0.72, 0.75, -0.2], [-0.72, 1.3, -0.05], [0.72, 1.3, -0.05],
                             [0.72, 0.75, -0.2]])
  # The jaw tube seen from any side, for the skin behind the contour.
  ys = np.linspace(ident.contour_top, ident.chin_y, 9)
  w, z0, zf = tube.at(ys)
  d = zf - z0
  shell = [np.stack([s * w * math.cos(a), ys, z0 + d * math.sin(a)], -1)
           for a in np.radians([-90.0, -50.0, 0.0]) for s in (-1.0, 1.0)]
  st["jaw_shell"] = np.concatenate(shell)
  static, index = _pack(st)
  return _Template(contour, tube, _forehead_2d(ident, contour), base, upper_open, lower,
                   static, index)


@dataclasses.dataclass(frozen=True)
class Face3D:
  """A face in head coordinates.

  Attributes:
    landmarks: (98, 3) WFLW points (contour points at their frontal boundary position).
    contour_2d: (33, 2) frontal (x, y) of the contour; re-placed on the silhouette per pose.
    forehead_2d: (14, 2) frontal (x, y) of the face outline above the contour, image-right
      temple -> hairline -> image-left temple (the skin polygon is contour + this).
    extra: (N, 3) render points (ears, neck, creases, glasses, folds, beard...).
    extra_index: name -> slice of `extra`.
    tube: the surface model.
    identity: the shape parameters used.
  """

  landmarks: np.ndarray
  contour_2d: np.ndarray
  forehead_2d: np.ndarray
  extra: np.ndarray
  extra_index: dict
  tube: _Tube
  identity: Identity


def build_face(ident: Identity, expr: Expression = Expression()) -> Face3D:
  """The 98 landmarks and render points of `ident` wearing `expr`, in head coordinates."""
  tpl = _template(ident)
  p = np.full((NUM_POINTS, 2), np.nan)
  contour = tpl.contour.copy()

  # Jaw drop: an open mouth lowers the chin and lower contour (more towards the chin).
  low = np.clip((contour[:, 1] - ident.nose_base_y) / (ident.chin_y - ident.nose_base_y), 0, 1)
  contour[:, 1] += 0.32 * expr.mouth_open * low ** 1.5
  p[0:33] = contour

  # Brows (image-left, then mirrored): centre line from the outer tip (t=0) to the inner end.
  t = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
  xs = -(ident.brow_outer_x + (ident.brow_inner_x - ident.brow_outer_x) * t)
  yc = (ident.brow_y + 0.07 * (1 - t) ** 2 - ident.brow_arch * np.sin(math.pi * (0.1 + 0.9 * t))
        - 0.08 * expr.brow_raise * (0.7 + 0.3 * t))
  th = ident.brow_thickness * (0.35 + 0.65 * t ** 0.7)
  p[33] = [xs[0], yc[0]]
  p[34:38] = np.stack([xs[1:], yc[1:] - th[1:] / 2], -1)
  rev = [4, 3, 2, 1]
  p[38:42] = np.stack([xs[rev], yc[rev] + th[rev] / 2], -1)

  # Eyes (image-left): corners, lids sampled at t = 0.25/0.5/0.75 from outer to inner corner.
  ex, ew = -ident.eye_spacing, ident.eye_width
  base, upper_open = tpl.lid_base, tpl.upper_open
  lower = tpl.lower - 0.25 * ident.eye_lower * expr.smile     # smiling raises the lower lids
  outer = [ex - ew, -ident.eye_tilt]
  inner = [ex + ew, 0.3 * ident.eye_tilt]
  pupil_y = 0.5 * (upper_open[1] + lower[1]) + 0.25 * ident.eye_open * expr.gaze_y
  gaze_dx = 0.33 * ew * expr.gaze_x        # both eyes look the same way (+x = image right)
  eye = []
  for blink in (expr.blink_left, expr.blink_right):
    b = min(max(float(blink), 0.0), 1.0)
    up = upper_open + b * (lower - upper_open)     # a closed upper lid lies on the lower lid
    eye.append(np.concatenate([[outer], np.stack([base[:, 0], up], -1), [inner],
                               np.stack([base[::-1, 0], lower[::-1]], -1)]))
  p[60:68] = eye[0]
  p[68:76] = (eye[1] * [-1.0, 1.0])[[4, 3, 2, 1, 0, 7, 6, 5]]   # mirrored index order
  p[96] = [ex + gaze_dx, pupil_y]
  p[97] = [-ex + gaze_dx, pupil_y]

  # Nose: bridge from between the eyes to the tip; base arc with the centre lowest.
  p[51:55] = np.stack([np.zeros(4), np.linspace(-0.04, ident.nose_tip_y, 4)], -1)
  nb, nw = ident.nose_base_y, ident.nose_width
  p[55] = [-nw, nb - 0.05]
  p[56] = [-0.5 * nw, nb - 0.01]
  p[57] = [0.0, nb]

  # Mouth: corners, cupid's bow upper lip, inner lips parted by `mouth_open`.
  my, mw = ident.mouth_y, ident.mouth_width * (1.0 - 0.12 * expr.mouth_open + 0.1 * expr.smile)
  lift = 0.09 * expr.smile
  gap = 0.42 * expr.mouth_open
  stom = my + 0.015 + 0.06 * expr.smile            # lip seam, below the corners when smiling
  ul, ll = ident.upper_lip, ident.lower_lip * (1.0 - 0.25 * expr.smile)
  g = lambda tt: (1.0 - tt ** 2) ** 0.6               # opening profile along the mouth width
  y_up_in = lambda tt: stom - lift * tt ** 2 - 0.25 * gap * g(tt)
  y_lo_in = lambda tt: stom - lift * tt ** 2 + 0.75 * gap * g(tt)
  p[76] = [-mw, my - lift]
  for idx, tt, hh in ((77, -0.6, 0.6), (78, -0.27, 1.0), (79, 0.0, 0.82)):
    p[idx] = [mw * tt, y_up_in(tt) - ul * hh - 0.02 * (1 - abs(tt))]
  for idx, tt, hh in ((87, -0.6, 0.65), (86, -0.3, 0.93), (85, 0.0, 1.0)):
    p[idx] = [mw * tt, y_lo_in(tt) + ll * hh]
  p[88] = [-0.88 * mw, my - lift * 0.85 + 0.005]
  p[89] = [-0.45 * mw, y_up_in(-0.45)]
  p[90] = [0.0, y_up_in(0.0)]
  p[95] = [-0.45 * mw, y_lo_in(-0.45)]
  p[94] = [0.0, y_lo_in(0.0)]
  p[_MIRRORED] = p[lm.MIRROR_98[_MIRRORED]] * [-1.0, 1.0]

  # Small per-part offsets make the face slightly asymmetric.
  if ident.asymmetry:
    a = ident.asymmetry
    for k, (lo, hi) in enumerate(((33, 42), (42, 51), (60, 68), (68, 76), (51, 60), (76, 96))):
      p[lo:hi] += a[2 * k: 2 * k + 2]
    p[96] += a[4:6]
    p[97] += a[6:8]
    p[0:16, 0] *= 1.0 + a[0]
    p[17:33, 0] *= 1.0 - a[0]

  # Render points that move with the expression (frontal x, y; lifted off the surface below).
  dyn = {}
  for s, name, corner, wing in ((-1.0, "left", 76, 55), (1.0, "right", 82, 59)):
    # Nasolabial fold: from beside the nostril wing to outside the mouth corner.
    dyn[f"fold_{name}"] = np.stack([p[wing] + [s * 0.07, -0.06], p[wing] + [s * 0.14, 0.07],
                                    p[corner] + [s * 0.09, -0.08], p[corner] + [s * 0.1, 0.06]])
  # Beard region: lower contour, then up around the mouth (the lips are drawn over it).
  dyn["beard"] = np.concatenate([
      p[4:29], [p[28] + [-0.02, -0.15]], [p[82] + [0.14, -0.06]],
      p[[82, 81, 80, 79, 78, 77, 76]] + [0.0, -0.09], [p[76] + [-0.14, -0.06]],
      [p[4] + [0.02, -0.15]]])
  dyn["moustache"] = np.concatenate([
      p[76:83] + [0.0, 0.005], [p[82] + [0.03, 0.03]], [p[59] + [0.03, 0.04]],
      [p[57] + [0.0, 0.03]], [p[55] + [-0.03, 0.04]], [p[76] + [-0.03, 0.03]]])
  lift = {"fold_left": 0.0, "fold_right": 0.0, "beard": 0.02, "moustache": 0.03}

  # Depths (one surface lookup for everything): surface plus per-feature relief.
  tube = tpl.tube
  flat = np.concatenate([p] + list(dyn.values()))
  z = tube.surface_z(flat[:, 0], flat[:, 1])
  z[:NUM_POINTS] += _relief(ident, expr)
  z[0:33] = tube.at(p[0:33, 1])[1]    # the contour sits on the face boundary
  start = NUM_POINTS
  for name, pts in dyn.items():
    z[start:start + len(pts)] += lift[name]
    start += len(pts)
  pts3 = np.concatenate([flat, z[:, None]], -1)
  landmarks = pts3[:NUM_POINTS]
  n_static = len(tpl.static)
  index = dict(tpl.static_index)
  start = n_static
  for name, pts in dyn.items():
    index[name] = slice(start, start + len(pts))
    start += len(pts)
  return Face3D(landmarks, p[0:33].copy(), tpl.forehead,
                np.concatenate([tpl.static, pts3[NUM_POINTS:]]), index, tube, ident)


def _relief(ident: Identity, expr: Expression) -> np.ndarray:
  """(98,) height of each landmark above the smooth face surface, head units."""
  r = np.zeros(NUM_POINTS)
  r[33:51] = 0.03
  r[51:55] = [0.04, 0.14, 0.27, ident.nose_protrusion]
  r[55:60] = np.array([0.08, 0.18, 0.22, 0.18, 0.08]) * ident.nose_protrusion / 0.42
  r[60:76] = -0.05
  r[96:98] = -0.01
  r[76:88] = 0.06
  r[88:96] = 0.04 - 0.1 * expr.mouth_open
  return r


# ----------------------------------------------------------------------------------------------
# Posing and projection.


@dataclasses.dataclass(frozen=True)
class ProjectedFace:
  """A posed face in pixels.

  Attributes:
    landmarks: (98, 2) float64 WFLW points, pixels (x, y).
    outline: (33 + 14, 2) skin polygon: the contour then the forehead/hairline arc, pixels.
    points: name -> (N, 2) projected render points (see `Face3D.extra`), pixels.
    px_per_unit: pixels per head unit at the face (for line widths and radii).
    head_to_camera: (3, 4) [M R | t], so that X_cam = [M R | t] @ [P - PIVOT; 1].
    camera: the camera.
    face3d: the unposed face.
    pose: the pose.
  """

  landmarks: np.ndarray
  outline: np.ndarray
  points: dict
  px_per_unit: float
  head_to_camera: np.ndarray
  camera: Camera
  face3d: Face3D
  pose: Pose

  def camera_in_head(self) -> np.ndarray:
    """The camera centre in head coordinates."""
    mr, t = self.head_to_camera[:, :3], self.head_to_camera[:, 3]
    return PIVOT - mr.T @ t

  def project(self, pts3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head points (N, 3) -> pixels (N, 2) and camera depths (N,), head units."""
    return project(pts3d, self.head_to_camera, self.camera)


def project(pts3d, head_to_camera, camera) -> tuple[np.ndarray, np.ndarray]:
  """Points (N, 3) -> pixels (N, 2) and depths (N,) under X_cam = [A | t] @ [P - PIVOT; 1]."""
  x = (np.asarray(pts3d, np.float64) - PIVOT) @ head_to_camera[:, :3].T + head_to_camera[:, 3]
  z = np.maximum(x[:, 2], 1e-3)
  f = camera.focal_px / z
  return np.stack([x[:, 0] * f + camera.cx, x[:, 1] * f + camera.cy], -1), x[:, 2]


def head_to_camera(pose: Pose) -> np.ndarray:
  """(3, 4) [M R | t] of a pose."""
  r = rotation_matrix(pose.yaw, pose.pitch, pose.roll)
  return np.concatenate([_M @ r, np.asarray(pose.translation, np.float64)[:, None]], -1)


def pose_face(face: Face3D, pose: Pose, camera: Camera) -> ProjectedFace:
  """Projects a face; contour and outline points hidden by the pose move to the silhouette."""
  h2c = head_to_camera(pose)
  cam_head = PIVOT - h2c[:, :3].T @ h2c[:, 3]
  boundary = np.concatenate([face.contour_2d, face.forehead_2d])
  bnd = face.tube.boundary_point(boundary[:, 0], boundary[:, 1], cam_head)
  pts = np.concatenate([bnd[:33], face.landmarks[33:], bnd[33:], face.extra])
  uv, _ = project(pts, h2c, camera)
  n, k = NUM_POINTS, len(face.forehead_2d)
  landmarks = uv[:n]
  outline = np.concatenate([uv[:33], uv[n:n + k]])
  extra = uv[n + k:]
  points = {name: extra[sl] for name, sl in face.extra_index.items()}
  ppu = camera.focal_px / float(h2c[2, 3] - 1.3)   # scale at the face front
  return ProjectedFace(landmarks, outline, points, ppu, h2c, camera, face, pose)


# Head point at the centre of a frontal face's landmark box, and that box's side (head units).
_BOX_CENTRE_HEAD = np.array([0.0, 0.66, 1.0])
_BOX_SIDE_UNITS = 2.15


def translation_for_box(center_px: tuple[float, float], side_px: float,
                        camera: Camera) -> tuple[float, float, float]:
  """Translation putting a frontal face's landmark box near `center_px`, side ~`side_px`."""
  depth = camera.focal_px * _BOX_SIDE_UNITS / side_px
  target = np.array([(center_px[0] - camera.cx) * depth / camera.focal_px,
                     (center_px[1] - camera.cy) * depth / camera.focal_px, depth])
  t = target - _M @ (_BOX_CENTRE_HEAD - PIVOT)
  return tuple(float(v) for v in t)


def posed_landmarks(ident: Identity, expr: Expression, pose: Pose, camera: Camera) -> np.ndarray:
  """(98, 2) pixel landmarks of a face; see `pose_face` for everything else."""
  return pose_face(build_face(ident, expr), pose, camera).landmarks
