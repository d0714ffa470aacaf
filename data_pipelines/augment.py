"""Host-side, per-example augmentation: one affine moves the RGB, the landmarks and the events.

Input is one stored example (`schema.py`): a decoded (S_in, S_in, 3) uint8 RGB crop (or, for an
event-only dataset, just its side `crop_size`), landmarks, the face box and up to C events as
float16 coordinates, all in the stored crop's pixel frame.
Output is one training example whose events are still coordinates (int16 output pixels plus a
validity mask); the representations are rendered on device, and their photometric
augmentation (`device_augment.py`) is applied there from the flags/parameters drawn here.

Every random choice comes from the numpy Generator passed in, so an example is a pure function
of (stored example, generator state); grain's `random_map` seeds that generator per index.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_pipelines import geometry
from data_pipelines.landmarks import MIRRORS

METADATA_FIELDS = ("clip_id", "subject_id", "subset")


def _as_bytes(v) -> bytes:
  return v.encode() if isinstance(v, str) else bytes(v)


def transform_events(events: dict, m: np.ndarray, size: int) -> dict[str, np.ndarray]:
  """Moves stored events through the affine `m` (or V affines at once) onto a size x size grid.

  Coordinates are rounded to the nearest pixel centre; events landing outside the grid, and the
  padding after `count`, are invalid and zeroed.

  Args:
    events: the stored `events` dict: x, y (C,) float16 source px; t (C,) int32 µs; p (C,)
      uint8; count (the first `count` entries are events).
    m: (2, 3) source -> output affine, or (V, 2, 3) for V views of the same events.
    size: output side in pixels.

  Returns:
    x, y int16 output px; t int32 µs; p uint8; valid bool; each (C,), or (V, C) for V affines.
  """
  cap = events["x"].shape[0]
  n = int(events["count"])
  # float32 (5x faster than float64 for three views): within 1e-4 px of the float64 landmark
  # transform, so only events that close to a pixel boundary can round the other way.
  m = np.asarray(m, np.float32)
  lead = m.shape[:-2]
  coef = lambda i, j: m[..., i, j, None]                 # (..., 1) against (n,) events
  x = events["x"][:n].astype(np.float32)
  y = events["y"][:n].astype(np.float32)
  px = coef(0, 0) * x
  px += coef(0, 1) * y
  px += coef(0, 2) + np.float32(0.5)
  py = coef(1, 0) * x
  py += coef(1, 1) * y
  py += coef(1, 2) + np.float32(0.5)
  np.floor(px, out=px)
  np.floor(py, out=py)
  inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
  out = {"x": np.zeros(lead + (cap,), np.int16), "y": np.zeros(lead + (cap,), np.int16),
         "t": np.zeros(lead + (cap,), np.int32), "p": np.zeros(lead + (cap,), np.uint8),
         "valid": np.zeros(lead + (cap,), bool)}
  # Multiplying by the mask zeroes what falls outside (cheaper than np.where).
  out["x"][..., :n] = px * inside
  out["y"][..., :n] = py * inside
  out["t"][..., :n] = events["t"][:n] * inside
  out["p"][..., :n] = events["p"][:n] * inside
  out["valid"][..., :n] = inside
  return out


# ---------------------------------------------------------------------------------------------
# CMFA: landmark alignment (RGB + events, one geometric transform)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlignmentAugment:
  """CMFA's augmentation; the defaults follow the official data loaders.

  The crop is a square of `crop_scale` x the face box's longer side, resized to out_size.
  Training draws (the official recipe):
    rotation ~ N(0, rotation_deg) clipped to +-rotation_clip_deg (rotation_dist="normal"), or
      ~ U(-rotation_deg, rotation_deg) (rotation_dist="uniform");
    crop scale ~ N(crop_scale, scale_std) clipped to scale_range (larger = zoomed out);
    shift x, y ~ N(0, shift_std) clipped to +-shift_clip, in fractions of the crop side;
    a left-right flip with flip_prob (landmarks re-indexed by the mirror map);
    grayscale with grayscale_prob, one flag for the RGB and the event image;
    occlusion with occlusion_prob, one flag for both, but the rectangle and its colour drawn
      independently for each (as the official code's two separate calls do). Each side is
      ~ N(occlusion_side_mean, occlusion_side_std) x out_size, clipped to [0, out_size].
  Grayscale comes before occlusion, so the occluder keeps its colour.
  """

  out_size: int = 256
  crop_scale: float = 1.2
  rotation_deg: float = 15.0
  rotation_clip_deg: float = 30.0
  rotation_dist: str = "normal"
  scale_std: float = 0.05
  scale_range: tuple[float, float] = (1.15, 1.25)
  shift_std: float = 0.05
  shift_clip: float = 0.05
  flip_prob: float = 0.5
  grayscale_prob: float = 0.2
  occlusion_prob: float = 0.5
  occlusion_side_mean: float = 0.2
  occlusion_side_std: float = 0.08

  def __post_init__(self):
    if self.rotation_dist not in ("normal", "uniform"):
      raise ValueError(f"rotation_dist must be 'normal' or 'uniform', got {self.rotation_dist!r}")


def _occlusion_box(rng: np.random.Generator, cfg: AlignmentAugment) -> np.ndarray:
  """A random (x0, y0, x1, y1) rectangle of whole output pixels, half-open, inside the crop."""
  size = cfg.out_size
  w, h = np.round(np.clip(rng.normal(cfg.occlusion_side_mean, cfg.occlusion_side_std, 2),
                          0.0, 1.0) * size).astype(int)
  x0 = rng.integers(0, size - w + 1)
  y0 = rng.integers(0, size - h + 1)
  return np.array([x0, y0, x0 + w, y0 + h], np.float32)


def _grayscale_rgb(image: np.ndarray) -> np.ndarray:
  # ITU-R 601 luma (0.299, 0.587, 0.114), the formula device_augment.grayscale uses.
  return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def eval_crop_matrix(example: dict, cfg: AlignmentAugment) -> np.ndarray:
  """(2, 3) stored pixels -> output pixels of the evaluation crop (centred, cfg.crop_scale x the
  box, nothing random)."""
  return geometry.box_crop_matrix(example["bbox"], cfg.crop_scale, cfg.out_size)


def box_size(bbox, m: np.ndarray) -> float:
  """sqrt(w h) of a face box (x0, y0, x1, y1) after the similarity `m` (2, 3): its size times
  the scale of `m`, whatever its rotation or flip."""
  x0, y0, x1, y1 = np.asarray(bbox, np.float64)
  return float(np.sqrt((x1 - x0) * (y1 - y0) * abs(np.linalg.det(np.asarray(m)[:, :2]))))


def alignment_example(example: dict, rng: np.random.Generator | None, cfg: AlignmentAugment,
                      train: bool) -> dict:
  """One stored example -> one CMFA example (crop, landmarks, events, device-side flags).

  Args:
    example: a stored example (`schema.py`) with `image` decoded to (S_in, S_in, 3) uint8 RGB,
      or an event-only one (no `image`).
    rng: the randomness for train=True; unused (may be None) for train=False.
    cfg: the augmentation.
    train: False is the evaluation path: the centred `cfg.crop_scale` crop and nothing random.

  Returns:
    image (S, S, 3) uint8 RGB, S = cfg.out_size (absent for an event-only example);
    landmarks (K, 2) float32 output px;
    events {x, y (C,) int16 output px, t (C,) int32 µs after the window start, p (C,) uint8,
    valid (C,) bool}; window_us int32; event_grayscale bool; event_occlusion (4,) float32
    half-open (x0, y0, x1, y1) output px, all zeros for none; event_occlusion_colour (3,)
    float32 in [0, 1]; box_size float32, the face box's size sqrt(w h) in output px (for
    NME by box size); clip_id, subject_id, subset bytes; frame_index int32.
  """
  size = cfg.out_size
  lms = np.asarray(example["landmarks"])
  flip = gray = occlude = False
  if train:
    if cfg.rotation_dist == "normal":
      rot = np.clip(rng.normal(0.0, cfg.rotation_deg), -cfg.rotation_clip_deg,
                    cfg.rotation_clip_deg)
    else:
      rot = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = np.clip(rng.normal(cfg.crop_scale, cfg.scale_std), *cfg.scale_range)
    shift = np.clip(rng.normal(0.0, cfg.shift_std, 2), -cfg.shift_clip, cfg.shift_clip)
    flip = bool(rng.random() < cfg.flip_prob)
    gray = bool(rng.random() < cfg.grayscale_prob)
    occlude = bool(rng.random() < cfg.occlusion_prob)
    if flip and len(lms) not in MIRRORS:
      raise ValueError(f"no mirror map for {len(lms)} landmarks; known: {sorted(MIRRORS)}")
    m = geometry.box_crop_matrix(example["bbox"], float(scale), size, rotation_deg=float(rot),
                                 shift=(float(shift[0]), float(shift[1])), flip=flip)
  else:
    m = eval_crop_matrix(example, cfg)

  image = None
  if "image" in example:
    image = cv2.warpAffine(np.asarray(example["image"]), m, (size, size),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(0, 0, 0))
  landmarks = geometry.apply_to_points(m, lms).astype(np.float32)
  if flip:
    # After the mirror the image-left eye holds what was the image-right one: re-index.
    landmarks = landmarks[MIRRORS[len(landmarks)]]
  if gray and image is not None:
    image = _grayscale_rgb(image)
  ev_box = np.zeros(4, np.float32)
  ev_colour = np.zeros(3, np.float32)
  if occlude:
    # The RGB occluder is drawn even without an image, so the event occluder of an example
    # comes from the same draws whether or not the dataset has RGB.
    x0, y0, x1, y1 = _occlusion_box(rng, cfg).astype(int)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    if image is not None:
      image[y0:y1, x0:x1] = colour
    ev_box = _occlusion_box(rng, cfg)
    ev_colour = rng.integers(0, 256, 3).astype(np.float32) / 255.0
  return {
      **({} if image is None else {"image": image}),
      "landmarks": landmarks,
      "events": transform_events(example["events"], m, size),
      "window_us": np.int32(example["window_us"]),
      "event_grayscale": np.bool_(gray),
      "event_occlusion": ev_box,
      "event_occlusion_colour": ev_colour,
      "box_size": np.float32(box_size(example["bbox"], m)),
      **{k: _as_bytes(example[k]) for k in METADATA_FIELDS},
      "frame_index": np.int32(example["frame_index"]),
  }


# ---------------------------------------------------------------------------------------------
# SSMER: SimSiam views of one event window
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SsmerAugment:
  """SSMER's per-view augmentation: the MoCo-v2 recipe SimSiam uses, drawn per view.

  Geometric (host, on event coordinates): RandomResizedCrop(out_size, scale=crop_area,
  ratio=crop_ratio) over the whole stored crop, then a flip with flip_prob. Photometric
  (parameters drawn here, applied on device to the rendered view): ColorJitter(brightness,
  contrast, saturation, hue) with jitter_prob; grayscale with grayscale_prob; Gaussian blur
  with blur_prob, sigma ~ U(blur_sigma).
  """

  out_size: int = 224
  num_views: int = 3
  crop_area: tuple[float, float] = (0.2, 1.0)
  crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
  flip_prob: float = 0.5
  jitter_prob: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.1
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)


PHOTOMETRIC_FIELDS = ("jitter_apply", "brightness", "contrast", "saturation", "hue",
                      "grayscale", "blur_sigma")


def random_resized_crop_rect(rng: np.random.Generator, height: int, width: int,
                             area: tuple[float, float],
                             ratio: tuple[float, float]) -> np.ndarray:
  """torchvision's RandomResizedCrop.get_params as (x0, y0, x1, y1) outer pixel edges.

  Up to 10 tries of an area fraction ~ U(area) and a log-uniform aspect ratio w/h in `ratio`;
  if none fits, the largest centred crop whose ratio is clamped into `ratio`.
  """
  total = height * width
  log_ratio = np.log(ratio)
  for _ in range(10):
    target = total * rng.uniform(*area)
    aspect = np.exp(rng.uniform(*log_ratio))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      break
  else:
    in_ratio = width / height
    if in_ratio < min(ratio):
      w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
      w, h = int(round(height * max(ratio))), height
    else:
      w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
  return np.array([left - 0.5, top - 0.5, left + w - 0.5, top + h - 0.5])


def _photometric(rng: np.random.Generator, cfg: SsmerAugment) -> dict[str, np.ndarray]:
  jitter = bool(rng.random() < cfg.jitter_prob)
  factor = lambda s: rng.uniform(max(0.0, 1.0 - s), 1.0 + s)
  b, c, s, h = factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation), \
      rng.uniform(-cfg.hue, cfg.hue)
  if not jitter:
    b, c, s, h = 1.0, 1.0, 1.0, 0.0          # identity, so the flag is informative only
  gray = bool(rng.random() < cfg.grayscale_prob)
  sigma = rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.blur_prob else 0.0
  return {"jitter_apply": np.bool_(jitter), "brightness": np.float32(b),
          "contrast": np.float32(c), "saturation": np.float32(s), "hue": np.float32(h),
          "grayscale": np.bool_(gray), "blur_sigma": np.float32(sigma)}


def identity_photometric() -> dict[str, np.ndarray]:
  """Photometric parameters that change nothing (the evaluation views)."""
  return {"jitter_apply": np.bool_(False), "brightness": np.float32(1.0),
          "contrast": np.float32(1.0), "saturation": np.float32(1.0), "hue": np.float32(0.0),
          "grayscale": np.bool_(False), "blur_sigma": np.float32(0.0)}


def ssmer_example(example: dict, rng: np.random.Generator | None, cfg: SsmerAugment, *,
                  train: bool = True, image_size: tuple[int, int] | None = None) -> dict:
  """One stored example -> `cfg.num_views` independently augmented views of its events.

  Each view gets its own random-resized-crop + flip affine over the stored crop and its own
  photometric parameters; the device renders view v as representation v (frame, voxel, time
  surface) and applies them. train=False gives identical, unaugmented views (the whole stored
  crop resized to out_size).

  Args:
    example: a stored example; `image` may be undecoded (bytes) if image_size is given.
    rng: the randomness for train=True; unused for train=False.
    cfg: the augmentation.
    train: whether to draw random views.
    image_size: (height, width) of the stored crop; default the decoded image's shape, or
      `crop_size` for an event-only example.

  Returns:
    views {x, y (V, C) int16 output px, t (V, C) int32 µs, p (V, C) uint8, valid (V, C) bool};
    window_us int32; photometric {name: (V,) array} for `PHOTOMETRIC_FIELDS` (bools:
    jitter_apply, grayscale; float32: brightness, contrast, saturation, hue, blur_sigma in
    output px, 0 = no blur).
  """
  if image_size is None:
    image_size = (np.shape(example["image"])[:2] if "image" in example
                  else (int(example["crop_size"]),) * 2)
  h, w = image_size
  ms, photo = [], []
  for _ in range(cfg.num_views):
    if train:
      rect = random_resized_crop_rect(rng, h, w, cfg.crop_area, cfg.crop_ratio)
      flip = bool(rng.random() < cfg.flip_prob)
      photo.append(_photometric(rng, cfg))
    else:
      rect, flip = np.array([-0.5, -0.5, w - 0.5, h - 0.5]), False
      photo.append(identity_photometric())
    ms.append(geometry.rect_crop_matrix(rect, cfg.out_size, flip=flip))
  return {"views": transform_events(example["events"], np.stack(ms), cfg.out_size),
          "window_us": np.int32(example["window_us"]),
          "photometric": {k: np.array([p[k] for p in photo]) for k in PHOTOMETRIC_FIELDS}}
