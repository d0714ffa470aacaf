"""Host augmentation (augment.py) and on-device photometric ops (device_augment.py)."""

import colorsys

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from data_pipelines import augment
from data_pipelines import device_augment as da
from data_pipelines import geometry
from data_pipelines.landmarks import MIRROR_5, MIRROR_98, MIRRORS

STORED = 64      # stored crop side (px)
CAPACITY = 256   # stored events per window


def stored_example(image=None, landmarks=None, event_xy=(), bbox=(16.0, 16.0, 48.0, 48.0),
                   seed=0):
  """A stored example as tfds returns it: decoded image, float16 event coordinates, bytes."""
  rng = np.random.default_rng(seed)
  if image is None:
    image = rng.integers(0, 256, (STORED, STORED, 3), dtype=np.uint8)
  if landmarks is None:
    landmarks = rng.uniform(20, 44, (5, 2))
  ev = {"x": np.zeros(CAPACITY, np.float16), "y": np.zeros(CAPACITY, np.float16),
        "t": np.zeros(CAPACITY, np.int32), "p": np.zeros(CAPACITY, np.uint8)}
  n = len(event_xy)
  if n:
    xy = np.asarray(event_xy, np.float64)
    ev["x"][:n], ev["y"][:n] = xy[:, 0], xy[:, 1]
    ev["t"][:n] = np.arange(1, n + 1) * 10
    ev["p"][:n] = np.arange(n) % 2
  ev["count"], ev["count_total"] = n, n
  return {"image": image, "landmarks": np.asarray(landmarks, np.float32),
          "bbox": np.asarray(bbox, np.float32), "events": ev, "window_us": 10_000,
          "t_start_us": 5_000_000, "clip_id": b"clip", "subject_id": b"subj",
          "subset": b"train", "frame_index": 3}


def blob_image(point, sigma=1.5):
  """Black image with a bright Gaussian spot centred at `point` (x, y)."""
  yy, xx = np.mgrid[0:STORED, 0:STORED]
  g = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * sigma ** 2))
  return np.repeat(np.round(255 * g).astype(np.uint8)[..., None], 3, axis=-1)


def centroid(image):
  w = image[..., 0].astype(np.float64)
  w = np.where(w > 0.2 * w.max(), w, 0.0)
  yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
  return np.array([np.sum(w * xx), np.sum(w * yy)]) / np.sum(w)


NO_RANDOMNESS = dict(rotation_deg=0.0, scale_std=0.0, shift_std=0.0, flip_prob=0.0,
                     grayscale_prob=0.0, occlusion_prob=0.0)


# --- CMFA geometry -------------------------------------------------------------------------------


def test_landmark_event_and_image_move_together():
  point = (29.25, 34.5)               # exact in float16
  lms = np.array([[10, 10], point, [50, 20], [15, 50], [50, 50]], np.float64)
  ex = stored_example(blob_image(point), lms, [point, (0.0, 0.0)])
  cfg = augment.AlignmentAugment(out_size=48, occlusion_prob=0.0)
  flips = set()
  for seed in range(16):
    out = augment.alignment_example(ex, np.random.default_rng(seed), cfg, train=True)
    found = centroid(out["image"])
    # Landmark 1 (image-left mouth corner) moves to index 2 when the crop is mirrored.
    dist = np.linalg.norm(out["landmarks"][1:3] - found, axis=-1)
    idx = 1 + int(np.argmin(dist))
    flips.add(idx == 2)
    lm = out["landmarks"][idx]
    assert np.linalg.norm(lm - found) < 1.0, (seed, lm, found)
    ev = out["events"]
    assert ev["valid"][0]
    assert np.all(np.abs(np.array([ev["x"][0], ev["y"][0]]) - lm) <= 0.5 + 1e-6)
    assert not ev["valid"][1:].any()            # (0, 0) is outside every crop; rest padding
  assert flips == {True, False}


def test_eval_path_is_exact_centre_crop():
  # 1.2 x a 20 px box = a 24 px crop at scale 1, edges on pixel edges: a plain slice.
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (STORED, STORED, 3), dtype=np.uint8)
  bbox = (11.5, 21.5, 31.5, 41.5)           # centre (21.5, 31.5): crop = rows 20..43, cols 10..33
  lms = rng.uniform(15, 40, (5, 2))
  events = [(12.0, 22.0), (33.0, 43.0), (9.0, 30.0), (20.25, 30.75)]
  ex = stored_example(image, lms, events, bbox=bbox)
  cfg = augment.AlignmentAugment(out_size=24)
  out = augment.alignment_example(ex, None, cfg, train=False)
  again = augment.alignment_example(ex, None, cfg, train=False)
  np.testing.assert_array_equal(out["image"], image[20:44, 10:34])
  np.testing.assert_array_equal(out["image"], again["image"])
  np.testing.assert_allclose(out["landmarks"], lms - [10, 20], atol=1e-4)
  ev = out["events"]
  np.testing.assert_array_equal(ev["valid"][:5], [True, True, False, True, False])
  np.testing.assert_array_equal(ev["x"][:4], [2, 23, 0, 10])     # 10.25 -> 10
  np.testing.assert_array_equal(ev["y"][:4], [2, 23, 0, 11])     # 10.75 -> 11
  np.testing.assert_array_equal(ev["t"][:4], [10, 20, 0, 40])
  assert not out["event_grayscale"] and not out["event_occlusion"].any()
  assert out["clip_id"] == b"clip" and out["frame_index"] == 3 and out["window_us"] == 10_000


def test_eval_path_scaled_crop_by_hand():
  lms = np.array([[20.0, 24.0], [32.0, 32.0], [40.0, 45.0], [17.0, 30.0], [44.0, 18.0]])
  ex = stored_example(None, lms, bbox=(16, 20, 48, 44))     # longer side 32 -> crop 38.4 px
  out = augment.alignment_example(ex, None, augment.AlignmentAugment(out_size=256), train=False)
  cx, cy, s = 32.0, 32.0, 256 / 38.4
  expect = np.stack([(lms[:, 0] - cx) * s + 127.5, (lms[:, 1] - cy) * s + 127.5], -1)
  np.testing.assert_allclose(out["landmarks"], expect, atol=1e-3)
  # The box's size sqrt(w h) = sqrt(32 x 24) px, in the crop's pixels (for NME by box size).
  assert out["box_size"] == pytest.approx(np.sqrt(32 * 24) * s, rel=1e-6)


def test_box_size_ignores_rotation_and_flip():
  # A box of 30 x 120 px (sqrt(w h) = 60) under a 1/2 scale rotated by 37 degrees and
  # mirrored: 30 px, whatever the rotation and the flip.
  a = np.deg2rad(37.0)
  m = 0.5 * np.array([[-np.cos(a), np.sin(a), 7.0], [np.sin(a), np.cos(a), -3.0]])
  assert augment.box_size((10, 20, 40, 140), m) == pytest.approx(30.0, rel=1e-12)


def test_mirror_maps():
  for mirror in (MIRROR_98, MIRROR_5):
    np.testing.assert_array_equal(mirror[mirror], np.arange(len(mirror)))
  for a, b in ((60, 72), (96, 97), (33, 46), (76, 82), (64, 68), (0, 32)):
    assert MIRROR_98[a] == b and MIRROR_98[b] == a
  assert MIRROR_98[54] == 54 and MIRROR_98[16] == 16
  np.testing.assert_array_equal(MIRROR_5, [0, 2, 1, 4, 3])


def symmetric_face(centre_x=32.0):
  """98 points mirror-symmetric about x = centre_x, lower index of each pair on the left."""
  rng = np.random.default_rng(3)
  pts = np.zeros((98, 2))
  for i in range(98):
    j = MIRROR_98[i]
    if j < i:
      continue
    d = 0.0 if i == j else rng.uniform(2, 14)
    y = rng.uniform(18, 46)
    pts[i], pts[j] = (centre_x - d, y), (centre_x + d, y)
  return pts


def test_flip_keeps_landmark_semantics():
  face = symmetric_face()
  ex = stored_example(None, face)
  base = dict(NO_RANDOMNESS, out_size=64)
  plain = augment.alignment_example(ex, np.random.default_rng(0),
                                    augment.AlignmentAugment(**base), train=True)
  flipped = augment.alignment_example(ex, np.random.default_rng(0),
                                      augment.AlignmentAugment(**dict(base, flip_prob=1.0)),
                                      train=True)
  # A symmetric face centred in the crop looks the same mirrored, point for point.
  np.testing.assert_allclose(flipped["landmarks"], plain["landmarks"], atol=1e-4)
  lm = flipped["landmarks"]
  assert lm[60, 0] < lm[72, 0] and lm[96, 0] < lm[97, 0] and lm[76, 0] < lm[82, 0]
  # The image did flip (random pixels are not symmetric).
  diff = np.abs(flipped["image"].astype(int) - plain["image"][:, ::-1])
  assert diff.max() <= 1 and diff.mean() < 0.05


def test_five_point_flip():
  lms = np.array([[32, 32], [26, 40], [38, 40], [27, 26], [37, 26]], np.float64)
  ex = stored_example(None, lms)
  cfg = augment.AlignmentAugment(**dict(NO_RANDOMNESS, out_size=64, flip_prob=1.0))
  lm = augment.alignment_example(ex, np.random.default_rng(0), cfg, True)["landmarks"]
  assert lm[1, 0] < lm[2, 0] and lm[3, 0] < lm[4, 0]
  assert 5 in MIRRORS and 98 in MIRRORS


def test_grayscale_and_occlusion():
  ex = stored_example()
  plain = augment.alignment_example(ex, None, augment.AlignmentAugment(out_size=48), False)
  gray_cfg = augment.AlignmentAugment(**dict(NO_RANDOMNESS, out_size=48, grayscale_prob=1.0))
  gray = augment.alignment_example(ex, np.random.default_rng(0), gray_cfg, True)
  luma = plain["image"].astype(np.float64) @ [0.299, 0.587, 0.114]
  assert gray["event_grayscale"]
  for c in range(3):
    assert np.abs(gray["image"][..., c] - luma).max() <= 1.0
  occ_cfg = augment.AlignmentAugment(**dict(NO_RANDOMNESS, out_size=48, occlusion_prob=1.0,
                                            occlusion_side_mean=0.3, occlusion_side_std=0.0))
  for seed in range(5):
    occ = augment.alignment_example(ex, np.random.default_rng(seed), occ_cfg, True)
    changed = np.any(occ["image"] != plain["image"], axis=-1)
    rows, cols = np.nonzero(changed)
    box = occ["image"][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # Exactly one solid rectangle of 0.3 x 48 ~ 14 px a side changed (a pixel may keep its
    # value by chance, hence "at most").
    assert np.all(box == box[0, 0]) and box.shape[0] <= 14 and box.shape[1] <= 14
    assert box.shape[0] >= 12 and box.shape[1] >= 12
    x0, y0, x1, y1 = occ["event_occlusion"]
    assert x1 - x0 == 14 and y1 - y0 == 14 and 0 <= x0 and x1 <= 48 and 0 <= y0 and y1 <= 48
    assert np.all((occ["event_occlusion_colour"] >= 0) & (occ["event_occlusion_colour"] <= 1))


def test_train_draws_are_reproducible():
  ex = stored_example(event_xy=[(30.0, 30.0), (20.0, 40.0)])
  cfg = augment.AlignmentAugment(out_size=48)
  a = augment.alignment_example(ex, np.random.default_rng(7), cfg, True)
  b = augment.alignment_example(ex, np.random.default_rng(7), cfg, True)
  c = augment.alignment_example(ex, np.random.default_rng(8), cfg, True)
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
  assert not np.array_equal(a["landmarks"], c["landmarks"])


# --- SSMER views ---------------------------------------------------------------------------------


def test_rect_crop_matrix_matches_cv2_resize():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (STORED, STORED, 3), dtype=np.uint8)
  left, top, w, h = 7, 12, 40, 30
  rect = (left - 0.5, top - 0.5, left + w - 0.5, top + h - 0.5)
  ref = cv2.resize(image[top:top + h, left:left + w], (20, 20), interpolation=cv2.INTER_LINEAR)
  for flip in (False, True):
    m = geometry.rect_crop_matrix(rect, 20, flip=flip)
    out = cv2.warpAffine(image, m, (20, 20), flags=cv2.INTER_LINEAR)
    expect = ref[:, ::-1] if flip else ref
    assert np.abs(out.astype(int) - expect).max() <= 1


def test_random_resized_crop_rect_ranges():
  rng = np.random.default_rng(0)
  for _ in range(200):
    x0, y0, x1, y1 = augment.random_resized_crop_rect(rng, 60, 80, (0.2, 1.0), (0.75, 4 / 3))
    w, h = x1 - x0, y1 - y0
    assert x0 >= -0.5 and y0 >= -0.5 and x1 <= 79.5 and y1 <= 59.5
    assert 0.2 * 4800 * 0.9 <= w * h <= 4800
    assert 0.75 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_ssmer_views():
  pts = [(32.0, 32.0), (10.0, 50.0), (60.0, 3.0), (0.0, 0.0)]
  ex = stored_example(event_xy=pts)
  cfg = augment.SsmerAugment(out_size=32)
  out = augment.ssmer_example(ex, np.random.default_rng(0), cfg)
  v = out["views"]
  assert v["x"].shape == (3, CAPACITY) and v["x"].dtype == np.int16
  assert not v["valid"][:, 4:].any()
  for k in range(3):
    keep = v["valid"][k]
    np.testing.assert_array_equal(v["t"][k][:4][keep[:4]], ex["events"]["t"][:4][keep[:4]])
    assert np.all((v["x"][k] >= 0) & (v["x"][k] < 32) & (v["y"][k] >= 0) & (v["y"][k] < 32))
  photo = out["photometric"]
  assert set(photo) == set(augment.PHOTOMETRIC_FIELDS)
  assert all(a.shape == (3,) for a in photo.values())
  assert np.all((photo["blur_sigma"] == 0) | ((photo["blur_sigma"] >= 0.1)
                                              & (photo["blur_sigma"] <= 2.0)))
  assert np.all(np.abs(photo["hue"]) <= 0.1)
  # Evaluation views: the whole 64 px crop resized to 32 px, x' = (x + 0.5) / 2 - 0.5.
  ev = augment.ssmer_example(ex, None, cfg, train=False)["views"]
  for k in range(3):
    np.testing.assert_array_equal(ev["x"][k][:4], [16, 5, 30, 0])   # 15.75, 4.75, 29.75, -0.25
    np.testing.assert_array_equal(ev["y"][k][:4], [16, 25, 1, 0])   # 15.75, 24.75, 1.25
    np.testing.assert_array_equal(ev["valid"][k][:4], [True, True, True, True])


# --- device ops ----------------------------------------------------------------------------------


def random_images(n=4, h=12, w=14, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, (n, h, w, 3)).astype(np.float32)


def test_device_grayscale_and_normalize():
  x = random_images()
  flags = np.array([True, False, True, False])
  out = np.asarray(da.grayscale(jnp.asarray(x), flags))
  luma = x.astype(np.float64) @ [0.299, 0.587, 0.114]
  for i in range(4):
    expect = np.repeat(luma[i][..., None], 3, -1) if flags[i] else x[i]
    np.testing.assert_allclose(out[i], expect, atol=1e-6)
  norm = np.asarray(da.imagenet_normalize(jnp.asarray(x)))
  np.testing.assert_allclose(norm, (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                             atol=1e-5)


def jitter_params(n, b=1.0, c=1.0, s=1.0, h=0.0):
  return {k: jnp.full(n, v, jnp.float32) for k, v in
          (("brightness", b), ("contrast", c), ("saturation", s), ("hue", h))}


def test_color_jitter_identity_and_brightness():
  x = random_images()
  np.testing.assert_allclose(np.asarray(da.color_jitter(jnp.asarray(x), jitter_params(4))), x,
                             atol=1e-6)
  out = np.asarray(da.color_jitter(jnp.asarray(x), jitter_params(4, b=1.3)))
  np.testing.assert_allclose(out, np.minimum(x * 1.3, 1.0), atol=1e-6)


def test_color_jitter_contrast_saturation_hue_against_references():
  x = random_images(2, 5, 6).astype(np.float64)
  luma = x @ [0.299, 0.587, 0.114]
  out = np.asarray(da.color_jitter(jnp.asarray(x, jnp.float32), jitter_params(2, c=0.6)))
  mean = luma.mean(axis=(1, 2))[:, None, None, None]
  np.testing.assert_allclose(out, np.clip(0.6 * x + 0.4 * mean, 0, 1), atol=1e-5)
  out = np.asarray(da.color_jitter(jnp.asarray(x, jnp.float32), jitter_params(2, s=0.0)))
  np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, -1), atol=1e-5)
  out = np.asarray(da.color_jitter(jnp.asarray(x, jnp.float32), jitter_params(2, h=0.07)))
  for idx in np.ndindex(x.shape[:3]):
    hh, ss, vv = colorsys.rgb_to_hsv(*x[idx])
    np.testing.assert_allclose(out[idx], colorsys.hsv_to_rgb((hh + 0.07) % 1.0, ss, vv),
                               atol=1e-5)


def test_gaussian_blur():
  x = random_images(3, 16, 18)
  tiny = np.asarray(da.gaussian_blur(jnp.asarray(x), jnp.array([1e-3, 0.0, 1e-2])))
  np.testing.assert_allclose(tiny, x, atol=1e-6)
  const = np.full((2, 16, 18, 3), 0.37, np.float32)
  blurred = np.asarray(da.gaussian_blur(jnp.asarray(const), jnp.array([1.5, 2.0])))
  np.testing.assert_allclose(blurred, const, atol=1e-6)
  # scipy's "mirror" mode is jnp.pad's "reflect"; truncate so its radius is 11 like ours.
  sigma = 1.7
  out = np.asarray(da.gaussian_blur(jnp.asarray(x[:1]), jnp.array([sigma])))
  ref = ndimage.gaussian_filter(x[0].astype(np.float64), (sigma, sigma, 0), mode="mirror",
                                truncate=11 / sigma)
  np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_paint_occlusion_exact_box():
  x = random_images(3, 10, 12)
  boxes = np.array([[2, 3, 5, 9], [0, 0, 0, 0], [10, 8, 12, 10]], np.float32)
  colours = np.array([[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.4]], np.float32)
  out = np.asarray(da.paint_occlusion(jnp.asarray(x), boxes, colours))
  expect = x.copy()
  expect[0, 3:9, 2:5] = colours[0]
  expect[2, 8:10, 10:12] = colours[2]
  np.testing.assert_array_equal(out, expect)


def test_moco_photometric_with_view_axis():
  x = random_images(6, 12, 12).reshape(2, 3, 12, 12, 3)
  ident = augment.identity_photometric()
  params = {k: np.full((2, 3), v) for k, v in ident.items()}
  np.testing.assert_allclose(np.asarray(da.moco_photometric(jnp.asarray(x), params)), x,
                             atol=1e-6)
  params["grayscale"][1, 2] = True
  params["jitter_apply"][0, 1] = True
  params["brightness"][0, 1] = 0.5
  out = np.asarray(da.moco_photometric(jnp.asarray(x), params))
  np.testing.assert_allclose(out[0, 1], 0.5 * x[0, 1], atol=1e-6)
  np.testing.assert_allclose(out[1, 2, ..., 0], x[1, 2] @ [0.299, 0.587, 0.114], atol=1e-5)
  np.testing.assert_allclose(out[1, 0], x[1, 0], atol=1e-6)
