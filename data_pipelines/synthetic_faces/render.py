"""Draws RGB frames of a posed procedural face: background clutter, body, hair, face features,
occluders, lighting and sensor noise.

Everything is drawn with cv2's anti-aliased primitives at 1/16-pixel precision (`shift=4`), so
edges move smoothly with sub-pixel motion and carry no aliasing stair-steps (an event camera
would fire on those). Colours are RGB albedo in 0-255; lighting multiplies them.

Per frame: canvas = the clip's background (drawn once, shifted by a sub-pixel amount per frame)
-> body, hair and face drawn flat -> mild optical blur -> a smooth shading map multiplies the
head (ray-cast head ellipsoid with diffuse + specular light, plus soft feature shadows drawn on
a coarse grid, blurred and upsampled) -> global gain and colour temperature (flicker is a gain
over time) -> sensor noise -> uint8.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import math

import cv2
import numpy as np

from data_pipelines.synthetic_faces import face_model as fm

_SHIFT = 4
_SCALE = float(1 << _SHIFT)
_AA = cv2.LINE_AA

HAIR_STYLES = ("bald", "short", "medium", "long")
FRINGES = ("none", "straight", "side")
BEARDS = ("none", "stubble", "full", "moustache")
GLASSES = ("none", "clear", "sun")
OCCLUDERS = ("hand", "phone", "cup", "mic", "strand")


def _tup(v) -> tuple:
  return tuple(float(x) for x in np.asarray(v, np.float64).ravel())


def _mix(a, b, t: float) -> tuple:
  return _tup((1.0 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64))


def _scale_color(c, s: float) -> tuple:
  return _tup(np.clip(np.asarray(c, np.float64) * s, 0, 255))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
  """HSV in [0, 1] -> RGB in 0-255."""
  return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


# ----------------------------------------------------------------------------------------------
# Appearance (per subject) and lighting (per frame).


def _skin_tone(t: float) -> np.ndarray:
  """RGB skin albedo along a light (t=0) to dark (t=1) ramp."""
  knots = np.array([[242, 206, 184], [224, 172, 138], [190, 134, 98], [140, 92, 62],
                    [92, 58, 40]], np.float64)
  x = t * (len(knots) - 1)
  i = min(int(x), len(knots) - 2)
  return knots[i] + (x - i) * (knots[i + 1] - knots[i])


@dataclasses.dataclass(frozen=True)
class Appearance:
  """Colours (RGB albedo, 0-255) and styles of one subject; `clothing` may change per clip."""

  skin: tuple = (224.0, 172.0, 138.0)
  hair: tuple = (50.0, 35.0, 25.0)
  brow: tuple = (60.0, 42.0, 30.0)
  lip: tuple = (185.0, 95.0, 95.0)
  iris: tuple = (90.0, 60.0, 35.0)
  sclera: tuple = (235.0, 228.0, 222.0)
  clothing: tuple = (60.0, 80.0, 120.0)
  hair_style: str = "short"
  hair_volume: float = 1.08     # hair-cap ellipsoid scale relative to the skull
  hair_cut_y: float = 0.1       # the cap covers the skull above this head-frame y
  fringe: str = "none"
  fringe_depth: float = 0.4     # fraction of the forehead covered
  beard: str = "none"
  glasses: str = "none"
  glasses_color: tuple = (30.0, 30.0, 35.0)
  moles: tuple = ()             # frontal (x, y) head-unit positions of small dark spots
  hair_seed: int = 0            # shapes the strands and the fringe edge

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "Appearance":
    skin = _skin_tone(float(rng.beta(1.6, 1.6))) * rng.uniform(0.94, 1.06, 3)
    hair_kind = rng.choice(["black", "dark", "brown", "blond", "red", "grey"],
                           p=[0.3, 0.3, 0.18, 0.1, 0.05, 0.07])
    hair = {"black": [25, 22, 22], "dark": [55, 38, 28], "brown": [105, 72, 45],
            "blond": [200, 165, 110], "red": [150, 70, 35], "grey": [170, 168, 165]}[hair_kind]
    hair = np.asarray(hair, np.float64) * rng.uniform(0.85, 1.15)
    # Brows are usually darker than the hair, always darker than the skin.
    brow = np.minimum(hair * rng.uniform(0.6, 1.0), skin * 0.5)
    lip = skin * [0.88, 0.58, 0.6] + rng.uniform(-10, 10, 3)
    if rng.random() < 0.15:  # lipstick
      lip = np.array([[170, 30, 50], [140, 40, 70], [200, 90, 100]][rng.integers(3)], float)
    iris = np.array([[70, 45, 25], [110, 75, 40], [60, 95, 140], [85, 110, 70], [120, 120, 125],
                     [40, 28, 20]][rng.choice(6, p=[0.35, 0.15, 0.15, 0.08, 0.07, 0.2])], float)
    style = str(rng.choice(HAIR_STYLES, p=[0.08, 0.4, 0.27, 0.25]))
    cut = {"bald": -0.5, "short": rng.uniform(-0.05, 0.25), "medium": rng.uniform(0.3, 0.6),
           "long": rng.uniform(0.6, 0.9)}[style]
    fringe = str(rng.choice(FRINGES, p=[0.55, 0.2, 0.25])) if style != "bald" else "none"
    beard = str(rng.choice(BEARDS, p=[0.72, 0.12, 0.1, 0.06]))
    glasses = str(rng.choice(GLASSES, p=[0.78, 0.17, 0.05]))
    moles = tuple((float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.6, 1.4)))
                  for _ in range(rng.poisson(1.0)))
    return cls(
        skin=_tup(np.clip(skin, 30, 255)), hair=_tup(hair), brow=_tup(brow),
        lip=_tup(np.clip(lip, 20, 255)), iris=_tup(iris),
        sclera=_tup(np.array([235, 228, 222]) * rng.uniform(0.88, 1.0)),
        clothing=_tup(rng.uniform(20, 235, 3)), hair_style=style,
        hair_volume=float(rng.uniform(1.04, 1.1 if style == "short" else 1.16)),
        hair_cut_y=float(cut), fringe=fringe, fringe_depth=float(rng.uniform(0.25, 0.75)),
        beard=beard, glasses=glasses,
        glasses_color=_tup(rng.uniform(10, 120, 3) if rng.random() < 0.7 else [190, 170, 60]),
        moles=moles, hair_seed=int(rng.integers(2 ** 31)))

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["moles"] = [list(m) for m in self.moles]
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@functools.lru_cache(maxsize=64)
def _palette(app: Appearance) -> dict:
  """Derived drawing colours of an appearance (computed once, not per frame)."""
  skin, hair, lash = app.skin, app.hair, (25.0, 20.0, 20.0)
  pal = {f"skin{int(k * 100)}": _scale_color(skin, k)
         for k in (0.3, 0.55, 0.7, 0.72, 0.8, 0.9, 0.95, 0.97)}
  pal.update(
      skin=skin, hair=hair, hair80=_scale_color(hair, 0.8), hair70=_scale_color(hair, 0.7),
      hair130=_tup(np.minimum(np.asarray(hair) * 1.3 + 25, 255)), clothing=app.clothing,
      clothing60=_scale_color(app.clothing, 0.6), brow=_mix(skin, app.brow, 0.88),
      lash=_mix(skin, lash, 0.85), lower_lid=_mix(skin, lash, 0.3),
      lid_shadow=_mix(app.sclera, skin, 0.5), sclera=app.sclera,
      iris_dark=_scale_color(app.iris, 0.7), iris=app.iris, lip=app.lip,
      lip_seam=_scale_color(app.lip, 0.45), lip_sheen=_scale_color(app.lip, 1.15),
      beard=_mix(skin, hair, 0.85), moustache=_mix(skin, hair, 0.9), pupil=(12.0, 10.0, 10.0),
      catchlight=(245.0, 245.0, 245.0))
  return pal


@dataclasses.dataclass(frozen=True)
class Lighting:
  """Illumination of one frame.

  Attributes:
    gain: overall exposure (1 = normal; ~0.1-0.3 = low light), flicker included.
    color: RGB multipliers (colour temperature).
    direction: unit vector towards the key light, camera coordinates (x right, y down, z away
      from the camera, so a light in front of the face has z < 0).
    ambient: fraction of the light that is directionless (0-1).
    specular: strength of the skin highlight.
  """

  gain: float = 1.0
  color: tuple = (1.0, 1.0, 1.0)
  direction: tuple = (-0.4, -0.5, -0.77)
  ambient: float = 0.45
  specular: float = 0.12


# ----------------------------------------------------------------------------------------------
# Drawing helpers: sub-pixel anti-aliased primitives and smooth curves.


def _fix(pts) -> np.ndarray:
  return np.rint(np.multiply(pts, _SCALE)).astype(np.int32)


def _fill(img, pts, color) -> None:
  cv2.fillPoly(img, [_fix(pts)], color, _AA, _SHIFT)


def _polyline(img, pts, color, width: float, closed: bool = False) -> None:
  cv2.polylines(img, [_fix(pts)], closed, color, max(1, int(round(width))), _AA, _SHIFT)


def _ellipse(img, centre, axes, angle_deg, color, thickness=-1) -> None:
  ax = (max(1, int(round(axes[0] * _SCALE))), max(1, int(round(axes[1] * _SCALE))))
  cv2.ellipse(img, tuple(int(v) for v in _fix(centre)), ax, float(angle_deg), 0, 360, color,
              thickness, _AA, _SHIFT)


def _circle(img, centre, radius, color) -> None:
  cv2.circle(img, tuple(int(v) for v in _fix(centre)), max(1, int(round(radius * _SCALE))),
             color, -1, _AA, _SHIFT)


@functools.lru_cache(maxsize=None)
def _catmull_rom_matrix(k: int, closed: bool, n: int) -> np.ndarray:
  """The linear map from K control points to their Catmull-Rom curve, n samples per segment."""
  eye = np.eye(k)
  if closed:
    p = np.concatenate([eye[-1:], eye, eye[:2]])
  else:
    p = np.concatenate([2 * eye[:1] - eye[1:2], eye, 2 * eye[-1:] - eye[-2:-1]])
  segs = k if closed else k - 1
  t = np.arange(n) / n
  t2, t3 = t * t, t * t * t
  w = np.stack([-t3 + 2 * t2 - t, 3 * t3 - 5 * t2 + 2, -3 * t3 + 4 * t2 + t, t3 - t2], -1) / 2
  idx = np.arange(segs)[:, None] + np.arange(4)[None]
  m = np.einsum("tj,sjk->stk", w, p[idx]).reshape(-1, k)
  return m if closed else np.concatenate([m, eye[-1:]])


def _smooth(pts, closed: bool, n: int = 3) -> np.ndarray:
  """Densifies a polyline (K, 2) along a Catmull-Rom spline through its points."""
  pts = np.asarray(pts, np.float64)
  return _catmull_rom_matrix(len(pts), closed, n) @ pts


# ----------------------------------------------------------------------------------------------
# Background: drawn once per clip with a margin, then shifted per frame.


@dataclasses.dataclass(frozen=True)
class Background:
  """A clip's background, `margin` pixels larger than the frame on every side.

  Light it with `lit` (colour, once per clip) and `frame(..., gain=)` (exposure, per frame).
  """

  image: np.ndarray
  margin: int

  def frame(self, height: int, width: int, dx: float = 0.0, dy: float = 0.0,
            gain: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 view of the background moved by (dx, dy) px (bilinear, sub-pixel) and
    multiplied by `gain` (saturating)."""
    m = self.margin
    sx = float(np.clip(m - dx, 0.0, 2 * m - 1.001))
    sy = float(np.clip(m - dy, 0.0, 2 * m - 1.001))
    ix, iy = int(sx), int(sy)
    a, b = sx - ix, sy - iy
    # A 2x2 correlation is bilinear interpolation at a constant sub-pixel offset; cheaper than
    # warpAffine.
    k = np.array([[(1 - a) * (1 - b), a * (1 - b)], [(1 - a) * b, a * b]], np.float32) * gain
    crop = self.image[iy:iy + height + 1, ix:ix + width + 1]
    out = cv2.filter2D(crop, -1, k, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return out[:height, :width]

  def lit(self, color) -> "Background":
    """The background under light of RGB colour multipliers `color`."""
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * np.asarray(color, np.float32)
                  + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return Background(cv2.LUT(self.image, lut), self.margin)


def _room_color(rng, sat_hi=0.35) -> np.ndarray:
  warm = rng.random() < 0.6
  h = rng.uniform(0.02, 0.16) if warm else rng.uniform(0, 1)
  return _hsv(h, rng.uniform(0.02, sat_hi), rng.uniform(0.3, 0.95))


def make_background(rng: np.random.Generator, height: int, width: int) -> Background:
  """A cluttered scene (room, outdoors or studio backdrop): walls, furniture, windows,
  shelves of books, plants, lines and textures at several scales, out of focus.

  Drawn at half resolution (it is defocused anyway), then upsampled.
  """
  margin = int(math.ceil(0.06 * max(height, width))) + 2
  H, W = height + 2 * margin, width + 2 * margin
  h, w = (H + 1) // 2, (W + 1) // 2
  size = float(max(h, w))
  kind = rng.choice(["room", "outdoor", "studio"], p=[0.7, 0.15, 0.15])
  img = np.empty((h, w, 3), np.uint8)
  yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
  if kind == "outdoor":
    sky = _hsv(rng.uniform(0.53, 0.63), rng.uniform(0.05, 0.5), rng.uniform(0.6, 1.0))
    ground = _hsv(rng.uniform(0.1, 0.35), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6))
    horizon = rng.uniform(0.3, 0.7)
    t = np.clip((yy - horizon) * 8, 0, 1)
    column = np.clip(sky * (1 - t) * (1.1 - 0.3 * yy) + ground * t, 0, 255)
    img[:] = column.astype(np.uint8)     # (h, 1, 3) broadcast along the rows
  else:
    wall = _room_color(rng, 0.2 if kind == "studio" else 0.35)
    top = wall * rng.uniform(0.7, 1.2)
    img[:] = np.clip(top + (wall - top) * yy, 0, 255).astype(np.uint8)   # a vertical gradient

  def rect(cx, cy, rw, rh, col, ang=0.0):
    _fill(img, cv2.boxPoints(((cx, cy), (rw, rh), ang)), _tup(np.clip(col, 0, 255)))

  n_big = {"room": rng.integers(3, 8), "outdoor": rng.integers(2, 6), "studio": 0}[kind]
  for _ in range(n_big):
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rw, rh = size * rng.uniform(0.15, 0.6), size * rng.uniform(0.2, 0.9)
    r = rng.random()
    if kind == "outdoor":
      col = _hsv(rng.uniform(0, 0.15), rng.uniform(0, 0.3), rng.uniform(0.3, 0.8))
      rect(cx, cy + rh / 2, rw, rh * 1.5, col)          # building
      win = col * rng.uniform(0.4, 1.5)
      for j in range(int(rng.integers(2, 6))):
        for i in range(int(rng.integers(2, 5))):
          rect(cx - rw / 2 + rw * (i + 0.5) / 4, cy - rh / 4 + j * rh / 5, rw / 8, rh / 10, win)
    elif r < 0.25:   # window: bright, with frame bars
      col = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.3), rng.uniform(0.8, 1.0))
      rect(cx, cy, rw, rh, col)
      bar = _room_color(rng)
      _polyline(img, [(cx, cy - rh / 2), (cx, cy + rh / 2)], _tup(bar), max(1, size / 80))
      _polyline(img, [(cx - rw / 2, cy), (cx + rw / 2, cy)], _tup(bar), max(1, size / 80))
    elif r < 0.55:   # furniture / door: darker wood or painted
      col = (_hsv(rng.uniform(0.04, 0.1), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.55))
             if rng.random() < 0.6 else _room_color(rng, 0.6))
      rect(cx, cy, rw, rh, col)
      _polyline(img, cv2.boxPoints(((cx, cy), (rw * 0.8, rh * 0.8), 0)), _tup(col * 0.7),
                max(1, size / 120), closed=True)
    elif r < 0.8:    # shelf with books
      col = _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.5))
      rect(cx, cy, rw, rh * 0.5, col)
      for j in range(2):
        y_shelf = cy - rh * 0.25 + j * rh * 0.25
        x = cx - rw / 2 + 2
        while x < cx + rw / 2 - 4:
          bw = size * rng.uniform(0.008, 0.025)
          bh = rh * rng.uniform(0.12, 0.22)
          bc = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9))
          rect(x + bw / 2, y_shelf - bh / 2, bw, bh, bc)
          x += bw + 1
        _polyline(img, [(cx - rw / 2, y_shelf), (cx + rw / 2, y_shelf)], _tup(col * 0.6),
                  max(1, size / 150))
    else:            # poster / picture with a pattern
      col = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.95))
      rw, rh = rw * 0.5, rh * 0.5
      rect(cx, cy, rw, rh, col)
      col2 = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.95))
      k = int(rng.integers(2, 7))
      for i in range(k):
        if rng.random() < 0.5:
          rect(cx - rw / 2 + rw * (i + 0.5) / k, cy, rw / (2 * k), rh, col2)
        else:
          _ellipse(img, (cx + rng.uniform(-.3, .3) * rw, cy + rng.uniform(-.3, .3) * rh),
                   (rw * rng.uniform(0.05, 0.25), rh * rng.uniform(0.05, 0.25)), 0, _tup(col2))
      _polyline(img, cv2.boxPoints(((cx, cy), (rw, rh), 0)), _tup(col * 0.4),
                max(1, size / 100), closed=True)
  # Plants / foliage: clusters of green leaves.
  for _ in range(int(rng.integers(0, 3 if kind != "outdoor" else 6))):
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), size * rng.uniform(0.04, 0.15)
    for _ in range(int(rng.integers(6, 16))):
      col = _hsv(rng.uniform(0.2, 0.38), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.6))
      _ellipse(img, (cx + rng.normal(0, r), cy + rng.normal(0, r)),
               (r * rng.uniform(0.2, 0.5), r * rng.uniform(0.08, 0.2)), rng.uniform(0, 180),
               _tup(col))
  # Small clutter and straight edges at all scales.
  for _ in range(int(rng.integers(3, 15 if kind != "studio" else 5))):
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    s = size * float(np.exp(rng.uniform(np.log(0.02), np.log(0.15))))
    col = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.1, 0.95))
    r = rng.random()
    if r < 0.4:
      rect(cx, cy, s, s * rng.uniform(0.3, 2.0), col, rng.choice([0.0, rng.uniform(0, 90)]))
    elif r < 0.7:
      _ellipse(img, (cx, cy), (s / 2, s / 2 * rng.uniform(0.4, 1.0)), rng.uniform(0, 180),
               _tup(col))
    else:
      ang = rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)])
      d = np.array([math.cos(ang), math.sin(ang)]) * s * 3
      _polyline(img, [(cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])], _tup(col),
                float(rng.uniform(1, 3)))
  # Texture (fabric, wallpaper, foliage grain), defocus, uneven illumination.
  # (cv2 ops on 3-channel images: numpy broadcasting over the channel axis is slow.)
  tex = rng.normal(0, rng.uniform(2, 10), (h // 2 + 1, w // 2 + 1)).astype(np.float32)
  tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
  out = cv2.add(img.astype(np.float32), cv2.merge([tex, tex, tex]))
  out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 2.0)) * size / 180.0)
  g = cv2.resize(1.0 + rng.uniform(-0.3, 0.3, (2, 2)).astype(np.float32), (w, h),
                 interpolation=cv2.INTER_LINEAR)
  out = cv2.convertScaleAbs(cv2.multiply(out, cv2.merge([g, g, g])))     # rounds, saturates
  return Background(cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR), margin)


# ----------------------------------------------------------------------------------------------
# Occluders.


@dataclasses.dataclass(frozen=True)
class Occluder:
  """An object in front of the face: `centers` (T, 2) px and `angles` (T,) deg per frame."""

  kind: str
  color: tuple
  size: float          # px, the object's main length
  centers: tuple
  angles: tuple

  def to_dict(self) -> dict:
    return {"kind": self.kind, "color": list(self.color), "size": self.size,
            "centers": [list(c) for c in self.centers], "angles": list(self.angles)}


def _draw_occluder(canvas, mask, occ: Occluder, k: int, lit) -> None:
  """Draws the occluder into the canvas and cuts it out of the head mask (no face shading);
  `lit` maps an albedo colour to the lit one."""
  c = np.asarray(occ.centers[k], np.float64)
  a = math.radians(occ.angles[k])
  u = np.array([math.cos(a), math.sin(a)])      # main axis
  v = np.array([-u[1], u[0]])
  s = occ.size
  col = lit(occ.color)
  dark = _scale_color(col, 0.6)

  def poly(p, color):
    _fill(canvas, p, color)
    _fill(mask, p, 0)

  def thick(p, color, width):
    _polyline(canvas, p, color, width)
    _polyline(mask, p, 0, width)

  ring = lambda rx, ry, n=20: [c + u * rx * math.cos(t) + v * ry * math.sin(t)
                               for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]
  if occ.kind == "hand":
    poly(ring(0.45 * s, 0.32 * s), col)
    for j, off in enumerate((-0.21, -0.07, 0.07, 0.21)):
      base = c + u * (0.3 * s) + v * (off * s)
      length = s * (0.55, 0.68, 0.64, 0.5)[j]
      bend = math.radians(8 * (j - 1.5))
      d = u * math.cos(bend) + v * math.sin(bend)
      thick([base, base + d * length * 0.55, base + d * length + v * 0.03 * s], col, 0.13 * s)
      knuckle = base + d * length * 0.52
      _polyline(canvas, [knuckle - v * 0.04 * s, knuckle + v * 0.04 * s], dark, 0.01 * s)
    thumb = c - v * (0.3 * s)
    thick([thumb, thumb - v * 0.25 * s + u * 0.25 * s], col, 0.14 * s)
  elif occ.kind == "phone":
    r = [c + u * x * s + v * y * s for x, y in ((-.5, -.26), (.5, -.26), (.5, .26), (-.5, .26))]
    poly(r, col)
    _fill(canvas, [c + (p - c) * 0.86 for p in r], _mix(col, lit((40, 60, 90)), 0.7))
  elif occ.kind == "cup":
    poly([c - v * 0.3 * s - u * 0.4 * s, c + v * 0.3 * s - u * 0.4 * s,
          c + v * 0.24 * s + u * 0.4 * s, c - v * 0.24 * s + u * 0.4 * s], col)
    top = c - u * 0.4 * s
    poly([top + v * 0.3 * s * math.cos(t) + u * 0.08 * s * math.sin(t)
          for t in np.linspace(0, 2 * math.pi, 16, endpoint=False)], dark)
    thick([c + v * (0.3 + 0.15 * math.sin(t)) * s + u * 0.2 * s * math.cos(t)
           for t in np.linspace(-math.pi / 2, math.pi / 2, 8)], col, 0.06 * s)
  elif occ.kind == "mic":
    thick([c, c + u * 1.1 * s], _scale_color(col, 0.5), 0.12 * s)
    poly(ring(0.22 * s, 0.22 * s), lit((70.0, 70.0, 75.0)))
    for t in (-0.1, 0.0, 0.1):
      _polyline(canvas, [c + v * t * s - u * 0.2 * s, c + v * t * s + u * 0.2 * s],
                lit((40.0, 40.0, 45.0)), 1)
  else:   # strand: a few thick curved hair strands
    for j in range(4):
      off = v * (j - 1.5) * 0.05 * s
      pts = [c + off + u * t * s + v * 0.15 * s * math.sin(2.5 * t + j)
             for t in np.linspace(-0.6, 0.6, 9)]
      thick(pts, _scale_color(col, 0.85 + 0.1 * j), max(1.0, 0.035 * s))


# ----------------------------------------------------------------------------------------------
# Per-subject render rig: head-frame geometry that does not change with expression.


@dataclasses.dataclass(frozen=True)
class Rig:
  """Head-frame render geometry of one subject.

  Attributes:
    cap: (N, 3) hair-cap ellipsoid samples (their projected hull is the hair mass).
    skull_sides: (M, 3) skull samples around the ears, for the head outline.
    strands: (S, K, 3) hair strand curves on the cap.
    fringe: (F, 2) frontal (x, y) of the fringe polygon, or None.
    long_hair: (L, 3) hair hanging to the shoulders, or None.
    moles: (Q, 2) frontal (x, y) of moles on the face.
    body: (B, 3) torso polygon and neck_base (2, 3), in the body frame (see `_body_points`).
  """

  cap: np.ndarray
  skull_sides: np.ndarray
  strands: np.ndarray
  fringe: np.ndarray | None
  long_hair: np.ndarray | None
  moles: np.ndarray
  body: np.ndarray
  neck_base: np.ndarray


def make_rig(ident: fm.Identity, app: Appearance) -> Rig:
  """The subject's render geometry; random details come from `app.hair_seed`."""
  rng = np.random.default_rng(app.hair_seed)
  axes = np.array([ident.head_width, ident.head_height, ident.head_depth])
  centre = fm.SKULL_CENTRE
  lat = np.linspace(0.0, math.pi, 13)
  lon = np.linspace(0.0, 2 * math.pi, 20, endpoint=False)
  la, lo = np.meshgrid(lat, lon, indexing="ij")
  dirs = np.stack([np.sin(la) * np.cos(lo), -np.cos(la), np.sin(la) * np.sin(lo)], -1)
  dirs = dirs.reshape(-1, 3)
  # Lumpy volume so hair outlines differ between subjects.
  lump = 1.0 + 0.04 * np.sin(3 * dirs[:, 0] + rng.uniform(0, 6)) * np.cos(2 * dirs[:, 2] + 1)
  cap = centre + dirs * axes * app.hair_volume * lump[:, None]
  cap = cap[cap[:, 1] < app.hair_cut_y]
  sk = centre + dirs * axes
  skull_sides = sk[(sk[:, 1] > -0.5) & (sk[:, 1] < 0.5)]
  # Strands: arcs from the crown towards the sides and back, on the cap surface.
  strands = []
  for _ in range(26):
    lon0 = rng.uniform(0, 2 * math.pi)
    la_s = np.linspace(rng.uniform(0.05, 0.3), rng.uniform(0.8, 1.7), 8)
    lo_s = lon0 + np.linspace(0, rng.uniform(-0.5, 0.5), 8)
    d = np.stack([np.sin(la_s) * np.cos(lo_s), -np.cos(la_s), np.sin(la_s) * np.sin(lo_s)], -1)
    strands.append(centre + d * axes * (app.hair_volume + 0.01))
  strands = np.array(strands)
  fringe = None
  if app.fringe != "none":
    w = ident.face_width * 0.98
    drop = app.fringe_depth * (ident.brow_y - 0.08 - ident.hairline_y)
    xs = np.linspace(-w, w, 15)
    if app.fringe == "straight":
      ys = ident.hairline_y + drop + 0.04 * np.sin(xs * 9 + rng.uniform(0, 6))
    else:
      sgn = rng.choice([-1.0, 1.0])
      ys = ident.hairline_y + drop * (0.3 + 0.7 * (sgn * xs / w + 1) / 2) ** 1.2
    ys += rng.uniform(-0.02, 0.02, len(xs))
    ys = np.minimum(ys, ident.contour_top - 0.1)
    fringe = np.concatenate([np.stack([xs, ys], -1),
                             np.stack([xs[::-1] * 0.85, np.full(len(xs), ident.hairline_y - 0.2)],
                                      -1)])
  long_hair = None
  if app.hair_style == "long":
    hw = ident.head_width * app.hair_volume
    length = rng.uniform(2.0, 3.2)
    long_hair = np.array([[-hw + 0.1, -0.6, -0.1], [-hw - 0.05, 0.4, -0.3],
                          [-hw, 1.3, -0.4], [-hw - 0.3, length, -0.5], [-0.5, length + 0.1, -0.6],
                          [0.5, length + 0.1, -0.6], [hw + 0.3, length, -0.5], [hw, 1.3, -0.4],
                          [hw + 0.05, 0.4, -0.3], [hw - 0.1, -0.6, -0.1]])
  moles = np.asarray(app.moles, np.float64).reshape(-1, 2)
  body = np.array([[-0.8, 2.0, 0.25], [-1.9, 2.4, -0.2], [-2.7, 3.2, -0.3], [-3.2, 9.0, -0.3],
                   [3.2, 9.0, -0.3], [2.7, 3.2, -0.3], [1.9, 2.4, -0.2], [0.8, 2.0, 0.25],
                   [0.0, 2.45, 0.45]])
  neck_base = np.array([[-0.8, 2.15, 0.0], [0.8, 2.15, 0.0]])
  return Rig(cap, skull_sides, strands, fringe, long_hair, moles, body, neck_base)


def _body_points(pf: fm.ProjectedFace, pts3d: np.ndarray) -> np.ndarray:
  """Projects body-frame points: the torso follows the head's position but only part of its
  rotation."""
  pose = pf.pose
  body_pose = fm.Pose(0.3 * pose.yaw, 0.0, 0.4 * pose.roll, pose.translation)
  return fm.project(pts3d, fm.head_to_camera(body_pose), pf.camera)[0]


# ----------------------------------------------------------------------------------------------
# Shading.


def _shading(pf: fm.ProjectedFace, app: Appearance, light: Lighting, roi, smile: float,
             neck: np.ndarray, head: list) -> np.ndarray:
  """(rh, rw, 3) uint8 head shading inside roi = (x0, y0, rw, rh), fixed point: 128 = x1.

  `neck` is the neck's pixel polygon and `head` a list of the head's (the head casts a shadow
  on the neck). Computed on a grid of about 16 cells per head unit, then upsampled
  (shading is smooth).
  """
  x0, y0, rw, rh = roi
  ppu = pf.px_per_unit
  step = float(np.clip(ppu / 16.0, 2.0, 8.0))
  gw, gh = max(2, int(math.ceil(rw / step))), max(2, int(math.ceil(rh / step)))
  sx, sy = rw / gw, rh / gh
  cam = pf.camera
  rx = ((x0 + (np.arange(gw) + 0.5) * sx - 0.5 - cam.cx) / cam.focal_px)[None, :]
  ry = ((y0 + (np.arange(gh) + 0.5) * sy - 0.5 - cam.cy) / cam.focal_px)[:, None]
  mr = pf.head_to_camera[:, :3]
  ident = pf.face3d.identity
  axes = fm.SHADING_AXES * [ident.head_width / 1.08, 1.0, 1.0]
  # Ray-cast the head ellipsoid in head coordinates, scaled to a unit sphere; the ray through
  # pixel (x, y) has camera direction (rx, ry, 1). Rays that miss take the nearest point, which
  # keeps the normals continuous across the silhouette.
  o = (pf.camera_in_head() - fm.SHADING_CENTRE) / axes
  d = [(rx * mr[0, k] + ry * mr[1, k] + mr[2, k]) / axes[k] for k in range(3)]
  a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
  b = d[0] * o[0] + d[1] * o[1] + d[2] * o[2]
  disc = np.maximum(b * b - a * (float(o @ o) - 1.0), 0.0)
  t = (-b - np.sqrt(disc)) / a
  nh = [(o[k] + t * d[k]) / axes[k] for k in range(3)]     # unnormalised head-frame normal
  inv_n = 1.0 / np.sqrt(nh[0] * nh[0] + nh[1] * nh[1] + nh[2] * nh[2])
  lvec = np.asarray(light.direction, np.float64)
  lh = mr.T @ lvec    # light direction in head coordinates (y down)
  ndl = (nh[0] * lh[0] + nh[1] * lh[1] + nh[2] * lh[2]) * inv_n
  wrap = 0.35   # light wraps a little past the terminator, as in skin
  diffuse = np.maximum(0.0, (ndl + wrap) * (1.0 / (1.0 + wrap)))
  # Blinn-Phong highlight: n . normalise(L + V), V = -ray / |ray| (head frame: -d * axes).
  inv_r = 1.0 / np.sqrt(rx * rx + ry * ry + 1.0)
  ndv = -(nh[0] * d[0] * axes[0] + nh[1] * d[1] * axes[1] + nh[2] * d[2] * axes[2]) * inv_n * inv_r
  ldv = -(rx * lvec[0] + ry * lvec[1] + lvec[2]) * inv_r
  ndh = (ndl + ndv) / np.sqrt(np.maximum(2.0 + 2.0 * ldv, 1e-6))
  x = np.maximum(0.0, ndh)
  x2 = x * x
  x8 = (x2 * x2) ** 2
  spec = light.specular * (x8 * x8 * x8)      # ** 24 by multiplication (pow is slow)

  # Soft feature shadows, drawn on the grid and blurred: channel 0 = shading (128 neutral),
  # 1 = cheek blush, 2 = stubble.
  soft = np.zeros((gh, gw, 3), np.uint8)
  soft[..., 0] = 128
  off = np.array([x0 - 0.5 + 0.5 * sx, y0 - 0.5 + 0.5 * sy])
  scale = np.array([1.0 / sx, 1.0 / sy])
  L = (pf.landmarks - off) * scale
  u = ppu / sx     # grid cells per head unit

  def line(pts, val, width):
    _polyline(soft, pts, (float(val), 0, 0), max(1.0, width * u))

  # The head shadows the neck under the jaw (the blur softens the edge).
  _fill(soft, (neck - off) * scale, (128.0 - 25 - 25 * max(0.0, -lh[1]), 0, 0))
  for p in head:    # one call per polygon: fillPoly would XOR overlapping ones
    _fill(soft, (p - off) * scale, (128.0, 0, 0))
  tilt = math.degrees(math.atan2(L[72, 1] - L[60, 1], L[72, 0] - L[60, 0]))
  for eye, brow in ((slice(60, 68), slice(33, 42)), (slice(68, 76), slice(42, 51))):
    _ellipse(soft, 0.55 * L[eye].mean(0) + 0.45 * L[brow].mean(0), (0.2 * u, 0.1 * u), tilt,
             (92.0, 0, 0))
  for side, base in ((-1, 55), (1, 59)):
    lit = side * lh[0]   # > 0: this side of the nose faces the light
    line([L[52] + (L[base] - L[57]) * 0.4, L[base] + (L[base] - L[57]) * 0.3],
         128 - 12 - 45 * max(0.0, -lit), 0.08)
  line([L[52], L[53]], 140, 0.05)
  _circle(soft, L[54], 0.05 * u, (145.0, 0, 0))
  down = (L[57] - L[51]) * (u / max(float(np.hypot(*(L[57] - L[51]))), 1e-6))
  line([L[56] + 0.06 * down, L[58] + 0.06 * down], 128 - 15 - 35 * max(0.0, -lh[1]), 0.06)
  line([L[84] + 0.07 * down, L[86] + 0.07 * down], 110, 0.05)
  for name in ("fold_left", "fold_right"):
    line((pf.points[name] - off) * scale, 128 - 8 - 18 * smile, 0.03)
  for ci, li in ((4, 60), (28, 72)):
    _circle(soft, 0.4 * L[ci] + 0.6 * L[li] + 0.25 * (L[54] - L[51]), 0.14 * u, (128.0, 255, 0))
  if app.beard == "stubble":
    _fill(soft, (pf.points["beard"] - off) * scale, (128.0, 0, 255))
  soft = cv2.GaussianBlur(soft, (0, 0), max(0.7, 0.05 * u))
  occl = soft[..., 0].astype(np.float32) * np.float32(1.0 / 100.0) - np.float32(0.28)
  shade = (light.ambient + (1.0 - light.ambient) * diffuse) * occl + spec
  shade = np.maximum(shade, 0.0).astype(np.float32)
  blush = soft[..., 1].astype(np.float32) * np.float32(1.0 / 255.0)
  out = np.empty((gh, gw, 3), np.float32)
  # Skin scatters red light: warmer shadows (~shade ** 0.9 red, ** 1.08 blue), a little blush
  # on the cheeks.
  dark = 1.0 - shade
  out[..., 0] = shade * (1 + 0.1 * dark + 0.07 * blush)
  out[..., 1] = shade * (1 - 0.04 * blush)
  out[..., 2] = shade * (1 - 0.08 * dark - 0.04 * blush)
  if app.beard == "stubble":
    ratio = np.clip(np.asarray(app.hair) / np.asarray(app.skin), 0.2, 1.2) ** 0.5
    st = soft[..., 2:3].astype(np.float32) * np.float32(1.0 / 255.0)
    out *= 1.0 + st * (ratio.astype(np.float32) - 1.0)
  out = cv2.convertScaleAbs(out, alpha=128.0)
  return cv2.resize(out, (rw, rh), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------
# The frame.


def _eye(canvas, pf, lo, pupil, pal: dict, ppu):
  """Sclera, iris (clipped by the lids), lash line and lower lid of one eye."""
  pts = pf.landmarks[lo:lo + 8]
  outline = _smooth(pts, closed=True, n=4)
  width = float(np.linalg.norm(pts[0] - pts[4]))
  opening = float(np.linalg.norm(pts[2] - pts[6])) / max(width, 1e-6)
  if opening > 0.04:
    _fill(canvas, outline, pal["sclera"])
    ident = pf.face3d.identity
    iris_r = ident.iris_radius * ppu
    # The iris foreshortens with the eye's width (yaw); the lids clip it below.
    squash = float(np.clip(width / (2 * ident.eye_width * ppu), 0.35, 1.0))
    ang = math.degrees(math.atan2(pts[4, 1] - pts[0, 1], pts[4, 0] - pts[0, 0]))
    p = pf.landmarks[pupil]
    _ellipse(canvas, p, (iris_r * squash, iris_r), ang, pal["iris_dark"])
    _ellipse(canvas, p, (iris_r * 0.8 * squash, iris_r * 0.8), ang, pal["iris"])
    _ellipse(canvas, p, (iris_r * 0.4 * squash, iris_r * 0.4), ang, pal["pupil"])
    _circle(canvas, p + [0.3 * iris_r, -0.35 * iris_r], max(0.4, 0.16 * iris_r),
            pal["catchlight"])
    # A skin ring around the almond clips iris and catchlight to the eye opening.
    centre = 0.5 * (pts[0] + pts[4])
    ring = centre + (outline - centre) * [1.5, 3.5]
    cv2.fillPoly(canvas, [_fix(ring), _fix(outline)], pal["skin"], _AA, _SHIFT)
    # Shadow of the upper lid on the eyeball.
    _polyline(canvas, _smooth(pts[[0, 1, 2, 3, 4]], closed=False),
              pal["lid_shadow"], 0.05 * ppu)
  _polyline(canvas, _smooth(pts[[0, 1, 2, 3, 4]], closed=False), pal["lash"],
            0.028 * ppu)
  _polyline(canvas, _smooth(pts[[4, 5, 6, 7, 0]], closed=False), pal["lower_lid"],
            0.012 * ppu)


def render_frame(background: np.ndarray, pf: fm.ProjectedFace, rig: Rig, app: Appearance,
                 light: Lighting, occluder: Occluder | None = None, frame_index: int = 0,
                 noise: np.ndarray | None = None, blur_sigma: float = 0.5,
                 smile: float = 0.0) -> np.ndarray:
  """Draws one frame.

  Args:
    background: (H, W, 3) uint8 RGB background for this frame, already lit (not modified).
    pf: the posed face (landmarks and render points in pixels).
    rig: the subject's head-frame render geometry (`make_rig`).
    app: the subject's appearance.
    light: this frame's lighting.
    occluder: optional occluder, drawn at its `frame_index` state.
    noise: optional sensor noise, DN, added last: a pair of (H, W, 3) uint8 arrays (its
      positive part, its negative part).
    blur_sigma: optical blur, pixels.
    smile: the expression's smile amount (deepens the nasolabial folds).

  Returns:
    (H, W, 3) uint8 RGB frame.
  """
  h, w = background.shape[:2]
  canvas = background.copy()
  mask = np.zeros((h, w), np.uint8)     # where head shading applies
  ppu = pf.px_per_unit
  gain_rgb = [light.gain * c for c in light.color]
  pal = {k: tuple(min(255.0, c * g) for c, g in zip(v, gain_rgb))
         for k, v in _palette(app).items()}
  lit = lambda c: tuple(min(255.0, c_ * g) for c_, g in zip(c, gain_rgb))
  skin = pal["skin"]
  lmk = pf.landmarks
  pts = pf.points

  def both(poly, color):
    _fill(canvas, poly, color)
    _fill(mask, poly, 255)

  # Body: torso, long hair over the shoulders, neck.
  body = _body_points(pf, np.concatenate([rig.body, rig.neck_base]))
  torso, neck_base = body[:-2], body[-2:]
  _fill(canvas, torso, pal["clothing"])
  _polyline(canvas, torso[[0, 8, 7]], pal["clothing60"], 0.04 * ppu)
  if rig.long_hair is not None:
    lh_pts, _ = pf.project(rig.long_hair)
    both(_smooth(lh_pts, closed=True, n=3), pal["hair80"])
  neck_top = pts["neck_top"]
  neck = np.concatenate([neck_top[:1], neck_base, neck_top[3:]])
  both(neck, pal["skin90"])

  # Ears: the one turned away goes behind the head outline.
  yaw = pf.pose.yaw
  far = "right" if yaw < -6 else ("left" if yaw > 6 else None)

  def ear(side):
    both(_smooth(pts[f"ear_{side}"], closed=True, n=3), pal["skin95"])
    _polyline(canvas, _smooth(pts[f"ear_inner_{side}"], closed=False, n=3),
              pal["skin70"], 0.03 * ppu)

  if far is not None and app.hair_style in ("bald", "short"):
    ear(far)

  # Head outline (skin behind the face contour), then the hair cap and its strands.
  proj_rig, depth = pf.project(np.concatenate([rig.skull_sides, rig.cap,
                                               rig.strands.reshape(-1, 3)]))
  n_sides, n_cap = len(rig.skull_sides), len(rig.cap)
  shell = np.concatenate([pts["jaw_shell"], pf.outline, proj_rig[:n_sides]])
  head_base = cv2.convexHull(shell.astype(np.float32))[:, 0]
  both(head_base, pal["skin97"])
  cap = proj_rig[n_sides:n_sides + n_cap]
  if len(cap) >= 3:
    hull = cv2.convexHull(cap.astype(np.float32))[:, 0]
    if app.hair_style == "bald":
      both(hull, pal["skin97"])
    else:
      both(_smooth(hull, closed=True, n=2), pal["hair"])
      strands = proj_rig[n_sides + n_cap:].reshape(rig.strands.shape[0], -1, 2)
      sdepth = depth[n_sides + n_cap:].reshape(rig.strands.shape[0], -1).mean(1)
      near = sdepth < float(pf.head_to_camera[2, 3]) - 0.4   # the far half of the cap is hidden
      width = max(1, int(round(0.02 * ppu)))
      for parity, name in ((0, "hair130"), (1, "hair70")):
        sel = [_fix(strands[j]) for j in np.nonzero(near)[0] if j % 2 == parity]
        if sel:
          cv2.polylines(canvas, sel, False, pal[name], width, _AA, _SHIFT)
  for side in ("left", "right"):
    if side != far and app.hair_style != "long":
      ear(side)

  # Face skin, moles, beard.
  head = _smooth(pf.outline, closed=True, n=2)
  both(head, skin)
  if len(rig.moles):
    mp, _ = pf.project(fm._surface(pf.face3d.tube, rig.moles))
    for p in mp:
      _circle(canvas, p, max(0.5, 0.018 * ppu), pal["skin55"])
  if app.beard == "full":
    _fill(canvas, _smooth(pts["beard"], closed=True, n=2), pal["beard"])

  # Eyes, lid creases, brows (filled, colour mixed with skin for a soft look).
  _eye(canvas, pf, 60, 96, pal, ppu)
  _eye(canvas, pf, 68, 97, pal, ppu)
  for side in ("left", "right"):
    _polyline(canvas, _smooth(pts[f"crease_{side}"], closed=False), pal["skin80"],
              0.014 * ppu)
  for lo in (33, 42):
    _fill(canvas, _smooth(lmk[lo:lo + 9], closed=True), pal["brow"])

  # Nose: nostrils and wing creases (the bridge is shading).
  for a_, b_ in ((55, 56), (59, 58)):
    ctr = 0.45 * lmk[a_] + 0.55 * lmk[b_] + (lmk[54] - lmk[57]) * 0.15
    d = lmk[b_] - lmk[a_]
    _ellipse(canvas, ctr, (0.55 * np.linalg.norm(d) + 0.3, 0.032 * ppu + 0.3),
             math.degrees(math.atan2(d[1], d[0])), pal["skin30"])
  for wing in (55, 59):
    top = lmk[wing] + (lmk[53] - lmk[57]) * 0.3 + (lmk[wing] - lmk[57]) * 0.1
    arc = np.stack([lmk[wing] + (lmk[57] - lmk[wing]) * 0.25,
                    lmk[wing] + (lmk[wing] - lmk[57]) * 0.15, top])
    _polyline(canvas, _smooth(arc, closed=False), pal["skin72"], 0.016 * ppu)

  # The nose's side edge: strongest when the nose is seen against the far cheek.
  side = 1 if (yaw > 0 or (abs(yaw) < 3 and light.direction[0] < 0)) else -1
  wing = 59 if side > 0 else 55
  across = (lmk[59] - lmk[55]) * (0.12 * side)
  edge = np.stack([lmk[52] + 0.5 * across, lmk[53] + across, lmk[54] + 0.9 * across,
                   lmk[wing] + (lmk[54] - lmk[57]) * 0.6])
  strength = float(np.clip(abs(yaw) / 25.0, 0.2, 0.8))
  _polyline(canvas, _smooth(edge, closed=False), _mix(skin, pal["skin55"], strength),
            0.02 * ppu)

  # Mouth: lips, and when open the dark interior with upper teeth.
  _fill(canvas, _smooth(lmk[76:88], closed=True), pal["lip"])
  gap = float(np.linalg.norm(lmk[90] - lmk[94])) / ppu
  if gap > 0.02:
    _fill(canvas, _smooth(lmk[88:96], closed=True), lit((45.0, 18.0, 22.0)))
    up = _smooth(lmk[88:93], closed=False)
    drop = (lmk[94] - lmk[90]) * min(0.45, 0.07 / gap)
    _fill(canvas, np.concatenate([up, (up + drop)[::-1]]), lit((225.0, 220.0, 205.0)))
    lower_lip = np.concatenate([lmk[[82, 83, 84, 85, 86, 87, 76]], lmk[[88, 95, 94, 93, 92]]])
    _fill(canvas, _smooth(lower_lip, closed=True, n=2), pal["lip"])
  else:
    _polyline(canvas, _smooth(lmk[88:93], closed=False), pal["lip_seam"],
              0.018 * ppu)
  _polyline(canvas, _smooth(lmk[[84, 85, 86]], closed=False) - [0, 0.03 * ppu],
            pal["lip_sheen"], 0.03 * ppu)   # lower-lip sheen
  if app.beard in ("moustache", "full"):
    _fill(canvas, _smooth(pts["moustache"], closed=True, n=2), pal["moustache"])

  # Fringe over the forehead (on the face surface, so hidden parts go to the silhouette).
  if rig.fringe is not None:
    fr = pf.face3d.tube.boundary_point(rig.fringe[:, 0], rig.fringe[:, 1], pf.camera_in_head())
    both(pf.project(fr)[0], pal["hair"])

  if app.glasses != "none":
    gc = lit(app.glasses_color)
    for side in ("left", "right"):
      lens = pts[f"lens_{side}"]
      if app.glasses == "sun":
        _fill(canvas, lens, lit((20.0, 22.0, 25.0)))
      _polyline(canvas, lens, gc, 0.03 * ppu, closed=True)
      if side != far:
        _polyline(canvas, pts[f"arm_{side}"], gc, 0.03 * ppu)
    _polyline(canvas, pts["bridge"], gc, 0.03 * ppu)

  if occluder is not None:
    _draw_occluder(canvas, mask, occluder, frame_index, lit)

  # Optics and light: a mild blur, then the head shading (the background and all colours were
  # lit already).
  if blur_sigma > 0:   # a 3x3 kernel holds all of a sigma <= 0.8 Gaussian that matters
    canvas = cv2.GaussianBlur(canvas, (3, 3) if blur_sigma <= 0.8 else (0, 0), blur_sigma)
  x0, y0, rw, rh = cv2.boundingRect(mask)
  if rw > 1 and rh > 1:
    shade = _shading(pf, app, light, (x0, y0, rw, rh), smile, neck,
                     [head_base, head])  # uint8, 128 = 1.0
    roi = canvas[y0:y0 + rh, x0:x0 + rw]
    lit = cv2.multiply(roi, shade, scale=1.0 / 128.0)
    m = mask[y0:y0 + rh, x0:x0 + rw].astype(np.float32) * np.float32(1.0 / 255.0)
    canvas[y0:y0 + rh, x0:x0 + rw] = cv2.blendLinear(lit, roi, m, 1.0 - m)
  if noise is not None:   # (positive, negative) parts: two saturating uint8 ops are cheapest
    canvas = cv2.subtract(cv2.add(canvas, noise[0]), noise[1])
  return canvas
