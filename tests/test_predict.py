"""Prediction on recordings in the real cameras' formats, with tiny exported models.

References are independent of the code under test: window ends and skips counted from the
synthetic timestamps by hand, and sensor coordinates from a float64 numpy inverse of the crop
(a square of 1.2 x the box side, S pixels) applied to the output of a model whose output is
known (an SLPT whose offset head always answers the window centre, so it returns its mean
shape). What reaches the model is checked with a numpy stand-in for it that answers numbers
computed from each row's own inputs, against the same numbers computed here from each window's
raw events and RGB frame.
"""

import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import pytest

from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import models
from evalign_jax import predict
from evalign_jax.events import Events, EventFileError, images, write_events
from evalign_jax.predict import windows as win

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What training a tiny event-only SLPT would export (configs/cmfa.py:tiny).
TINY_CONFIG = json.loads(config_utils.load_config("configs/cmfa.py:tiny,model=slpt_event")
                         .to_json())
S = TINY_CONFIG["image_size"]   # the crop side
W_US = 10_000     # window length used throughout
# camera -> (sensor (height, width), format, extension)
CAMERAS = {"dvxplorer": ((240, 320), "aedat4", "aedat4"), "davis346": ((260, 346), "aedat4",
                                                                      "aedat4"),
           "gen3": ((480, 640), "evt2", "raw"), "gen4": ((720, 1280), "evt3", "raw")}
OPTS = dict(window_us=W_US, batch_size=4, capacity=1024, min_events=20, overlay="none")


def export_model(path, kind, mean_shape, known_output=False):
  cfg = dict(TINY_CONFIG, model=kind, num_landmarks=len(mean_shape))
  if known_output:
    # The known model's stage windows are 1 cell (1/64) wide, so none is clamped at the crop's
    # edge, where a window's centre would move off its anchor.
    cfg["model_size"] = dict(cfg["model_size"], half_sizes=(1, 1, 1))
  model = models.build_model(cfg, mean_shape)
  if known_output:
    # Offsets of exactly 0.5: every stage answers its window's centre, i.e. the mean shape.
    model.out_layer.kernel[...] = 0.0 * model.out_layer.kernel[...]
    model.out_layer.bias[...] = 0.0 * model.out_layer.bias[...] + 0.5
  export.export(model, cfg, str(path))
  return str(path)


def inner_box_shape(n=98, shift_px=0.0, seed=0):
  """A mean shape whose bounding box is exactly the face box inside the 1.2 x crop (+ shift)."""
  lo = (S - 1) / 2 - S / 2.4          # crop px of the box's edges (square box, 1.2 x side)
  hi = (S - 1) / 2 + S / 2.4
  pts = np.random.default_rng(seed).uniform(lo, hi, (n, 2))
  pts[0], pts[1] = (lo, lo), (hi, hi)
  return ((pts + shift_px) / S).astype(np.float32)



def face_recording(sensor, box, *, seed=0, t0=5_000_123, n_windows=12, per_window=200,
                   empty=(4, 5), outside=(8,)):
  """Events in `box` in each W_US window from t0, none in `empty`, far off the box in `outside`.

  Returns the Events and the windows' expected (end_us, predicted?) by hand.
  """
  rng = np.random.default_rng(seed)
  h, w = sensor
  ts, xs, ys = [np.array([t0])], [np.array([int(box[0])])], [np.array([int(box[1])])]
  for k in range(n_windows):
    if k in empty:
      continue
    t = rng.integers(t0 + k * W_US, t0 + (k + 1) * W_US, per_window)
    if k in outside:
      x, y = rng.integers(0, 4, per_window), rng.integers(0, 4, per_window)
    else:
      x = rng.integers(int(box[0]), int(box[2]) + 1, per_window)
      y = rng.integers(int(box[1]), int(box[3]) + 1, per_window)
    ts.append(t), xs.append(x), ys.append(y)
  t, x, y = (np.concatenate(a) for a in (ts, xs, ys))
  order = np.argsort(t, kind="stable")
  ev = Events(t[order], x[order], y[order], rng.integers(0, 2, len(t)), sensor)
  last = (int(ev.t[-1]) - t0) // W_US                 # index of the window holding it
  expected = [(t0 + (k + 1) * W_US, k not in empty and k not in outside)
              for k in range(last + 1)]
  return ev, expected


def centred_box(sensor, frac=0.4):
  h, w = sensor
  side = frac * min(h, w)
  return (w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2 - 1, h / 2 + side / 2 - 1)


def read_csv(path):
  rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
  assert open(path).readline().strip() == "window_end_us,point,x,y"
  return rows


def crop_reference(x, y, box):
  """Sensor px -> crop px by hand: pixel centres scale by S / side about the square's centre
  and round to nearest. Returns u, v and which land in the crop."""
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  side = 1.2 * max(box[2] - box[0], box[3] - box[1])
  fu = (x - cx) * S / side + (S - 1) / 2 + 0.5
  fv = (y - cy) * S / side + (S - 1) / 2 + 0.5
  # The code rounds in float32: no event may sit within 1e-4 px of a rounding tie.
  assert np.all(np.abs(fu - np.round(fu)) > 1e-4) and np.all(np.abs(fv - np.round(fv)) > 1e-4)
  u, v = np.floor(fu), np.floor(fv)
  return u, v, (u >= 0) & (u < S) & (v >= 0) & (v < S)


def sensor_reference(crop_pts, box):
  """Crop px -> sensor px by hand: the crop's S pixels tile the square of 1.2 x the box side."""
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  side = 1.2 * max(box[2] - box[0], box[3] - box[1])
  pitch = side / S                     # sensor px per crop px
  return np.stack([cx + (crop_pts[:, 0] - (S - 1) / 2) * pitch,
                   cy + (crop_pts[:, 1] - (S - 1) / 2) * pitch], -1)


@pytest.mark.parametrize("camera", CAMERAS)
def test_windows_skips_and_sensor_pixels(tmp_path, known_model, camera):
  sensor, fmt, ext = CAMERAS[camera]
  box = centred_box(sensor)
  events, expected = face_recording(sensor, box, seed=len(camera))
  path = tmp_path / f"rec.{ext}"
  write_events(path, events, format=fmt)
  summary = predict.run(known_model["known"], path, tmp_path / "out",
                        predict.Options(box=box, **OPTS),
                        predictor=known_model["known_predictor"])
  rows = read_csv(tmp_path / "out" / "landmarks.csv")
  want_ends = [end for end, kept in expected if kept]
  ends = rows[:, 0].astype(np.int64).reshape(-1, 98)
  np.testing.assert_array_equal(ends[:, 0], want_ends)
  assert np.all(ends == ends[:, :1]) and np.all(rows[:, 1].reshape(-1, 98) == np.arange(98))
  assert summary["windows"] == len(expected)
  assert summary["predicted_windows"] == len(want_ends)
  assert summary["skipped"] == {"too_few_events": 3, "no_rgb_frame": 0}
  assert summary["sensor_size"] == list(sensor) and summary["box_source"] == "given"
  # The known model answers its mean shape; with the box fixed by tracking (the shape's box is
  # the face box) every window maps back to the same sensor points.
  want = sensor_reference(known_model["shape"].astype(np.float64) * S, box)
  got = rows[:, 2:].reshape(-1, 98, 2)
  np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=2e-3)
  np.testing.assert_allclose(summary["final_box"], box, atol=1e-3)
  assert summary["windows_per_s"] > 0
  assert sorted(os.listdir(tmp_path / "out")) == ["landmarks.csv", "summary.json"]


def test_tracking_follows_the_prediction(tmp_path, known_model):
  # A model whose answer sits 2 crop px right of and 1 below the box: each window moves the box
  # by (2, 1) x the crop's pitch, computed here by hand (tracking ignores batch_size 4).
  shifted = export_model(tmp_path / "shifted", "slpt_event", inner_box_shape(shift_px=(2, 1)),
                         known_output=True)
  sensor = CAMERAS["dvxplorer"][0]
  box = (120.0, 80.0, 169.0, 129.0)
  rng = np.random.default_rng(3)
  n = 4000
  t = np.sort(rng.integers(1_000_000, 1_000_000 + 12 * W_US, n))
  t[0] = 1_000_000
  events = Events(t, rng.integers(0, 320, n), rng.integers(0, 240, n), rng.integers(0, 2, n),
                  sensor)
  path = tmp_path / "rec.aedat4"
  write_events(path, events)
  opts = dict(OPTS, min_events=1)
  # Same architecture and shapes as the known model: its compiled program serves.
  p = predict.load_predictor(shifted)
  p.predict = known_model["known_predictor"].predict
  s = predict.run(shifted, path, tmp_path / "out", predict.Options(box=box, **opts), p)
  rows = read_csv(tmp_path / "out" / "landmarks.csv")[:, 2:].reshape(-1, 98, 2)
  pitch = 1.2 * 49 / S
  for i, pts in enumerate(rows):
    b = np.array(box) + i * np.array([2, 1, 2, 1]) * pitch
    crop = inner_box_shape(shift_px=(2, 1)).astype(np.float64) * S
    np.testing.assert_allclose(pts, sensor_reference(crop, b), atol=2e-3)
  assert len(rows) == 12 and s["options"]["batch_size"] == 1
  np.testing.assert_allclose(s["final_box"], np.array(box) + 12 * np.array([2, 1, 2, 1]) * pitch,
                             atol=2e-3)
  # --notrack keeps the given box.
  s = predict.run(shifted, path, tmp_path / "fixed",
                  predict.Options(box=box, track=False, **opts), p)
  np.testing.assert_allclose(s["final_box"], box)


def test_event_count_windows_and_strides(tmp_path, known_model):
  sensor, fmt, ext = CAMERAS["gen4"]
  box = centred_box(sensor)
  events, _ = face_recording(sensor, box, empty=(), outside=())
  path = tmp_path / f"rec.{ext}"
  write_events(path, events, format=fmt)
  s = predict.run(known_model["known"], path, tmp_path / "count",
                  predict.Options(**dict(OPTS, window_us=None, window_events=500, box=box)),
                  predictor=known_model["known_predictor"])
  ends = read_csv(tmp_path / "count" / "landmarks.csv")[::98, 0].astype(np.int64)
  want = [int(events.t[min(i + 500, len(events)) - 1]) + 1 for i in range(0, len(events), 500)]
  np.testing.assert_array_equal(ends, want)
  assert s["windows"] == len(want) == -(-len(events) // 500)
  # 2 x 5 ms strides per 10 ms window: one window every 5 ms, the first ending at t0 + 10 ms.
  s = predict.run(known_model["known"], path, tmp_path / "stride",
                  predict.Options(**dict(OPTS, stride_us=W_US // 2, box=box, min_events=1)),
                  predictor=known_model["known_predictor"])
  ends = read_csv(tmp_path / "stride" / "landmarks.csv")[::98, 0].astype(np.int64)
  t0, t1 = int(events.t[0]), int(events.t[-1])
  n_chunks = (t1 - t0) // (W_US // 2) + 1
  np.testing.assert_array_equal(ends, t0 + W_US + (W_US // 2) * np.arange(n_chunks - 1))


def test_crop_events_match_a_float64_reference():
  sensor = (260, 346)
  rng = np.random.default_rng(5)
  n = 3000
  ev = Events(np.sort(rng.integers(0, W_US, n)) + 7_000, rng.integers(0, 346, n),
              rng.integers(0, 260, n), rng.integers(0, 2, n), sensor)
  window = win.Window(0, 7_000 + W_US, W_US, ev)
  box = (100.3, 70.2, 179.9, 160.3)   # no event lands within 1e-4 px of a rounding tie
  crop, n_in = win.crop_events(window, win.crop_matrix(box, S), S, capacity=64)
  u, v, inside = crop_reference(ev.x, ev.y, box)
  assert n_in == inside.sum() > 64
  keep = np.flatnonzero(inside)[-64:]          # the latest 64 of them
  np.testing.assert_array_equal(crop["x"], u[keep])
  np.testing.assert_array_equal(crop["y"], v[keep])
  np.testing.assert_array_equal(crop["t"], ev.t[keep] - 7_000 + 1)   # in (0, window]
  assert crop["valid"].all() and crop["t"].min() >= 1 and crop["t"].max() <= W_US


BOX = (100.3, 70.2, 179.9, 160.3)   # davis346; its 1.2 x square lies inside the sensor


def fake_model(kind, render=images.RenderConfig()):
  """A Predictor whose `predict` is numpy: per row, points computed from that row's inputs.

  0: the valid events' mean crop (x, y); 1: their mean t and the window length, x S / W_US;
  2: their mean polarity x S and the RGB crop's mean / 10; tiled over 98 points.
  """

  def predict_fn(state, batch):
    ev, n = batch["events"], len(batch["window_us"])
    if kind == "rgb_slpt":
      assert ev["x"].shape == (n, 0)   # it reads no events, so none are cropped or sent
    out = np.zeros((n, 3, 2))
    for b, valid in enumerate(ev["valid"]):
      if valid.any():
        out[b, 0] = ev["x"][b][valid].mean(), ev["y"][b][valid].mean()
        out[b, 1, 0] = ev["t"][b][valid].mean() * S / W_US
        out[b, 2, 0] = ev["p"][b][valid].mean() * S
      out[b, 1, 1] = batch["window_us"][b] * S / W_US
      if "image" in batch:
        out[b, 2, 1] = batch["image"][b].mean() / 10
    return np.tile(out, (1, 33, 1))[:, :98]

  return predict.Predictor(kind, S, render, predict_fn, None, 98)


def fake_reference(events, start, capacity, rgb_value=0.0):
  """`fake_model`'s crop-px answer for the window [start, start + W_US) of raw `events`, by
  hand, and how many of its events land in the crop."""
  sel = (events.t >= start) & (events.t < start + W_US)
  x, y, t, p = events.x[sel], events.y[sel], events.t[sel], events.p[sel]
  u, v, inside = crop_reference(x, y, BOX)
  keep = np.flatnonzero(inside)[-capacity:] if capacity else []
  pts = np.zeros((3, 2))
  if len(keep):
    pts[0] = u[keep].mean(), v[keep].mean()
    pts[1, 0] = (t[keep] - start + 1).mean() * S / W_US   # t in (0, W_US]
    pts[2, 0] = p[keep].mean() * S
  pts[1, 1] = S
  pts[2, 1] = rgb_value
  return np.tile(pts, (33, 1))[:98], int(inside.sum())


def landmarks_by_window(path):
  rows = read_csv(path)
  return {int(r[0, 0]): r[:, 2:] for r in rows.reshape(-1, 98, 4)}


def test_each_window_reaches_the_model_as_its_own_row(tmp_path):
  sensor = CAMERAS["davis346"][0]
  events, _ = face_recording(sensor, BOX, seed=7, per_window=300)
  path = tmp_path / "rec.npz"
  write_events(path, events)
  render = images.RenderConfig(kind="time_surface")   # the overlay depends on t too
  opts = dict(OPTS, box=BOX, capacity=128, track=False, overlay="png", overlay_capacity=256)
  s = predict.run("fake", path, tmp_path / "out", predict.Options(**opts),
                  fake_model("slpt_event", render))
  got = landmarks_by_window(tmp_path / "out" / "landmarks.csv")
  t0, t1 = int(events.t[0]), int(events.t[-1])
  want = {}
  for k in range((t1 - t0) // W_US + 1):
    crop_pts, n_in = fake_reference(events, t0 + k * W_US, 128)
    if n_in >= OPTS["min_events"]:
      want[t0 + (k + 1) * W_US] = sensor_reference(crop_pts, BOX)
  assert list(got) == list(want) and s["windows_over_capacity"] == len(want)
  for end in want:
    np.testing.assert_allclose(got[end], want[end], atol=2e-3, err_msg=f"window ending {end}")
  # Overlay i is window i's events (the latest 256) rendered alone, outside the drawn box/dots.
  pitch = 1.2 * 90.1 / S
  for end, pts in got.items():
    ev = events.time_window(end - W_US, end)
    alone = images.render_image(ev[-256:].pad(256, t_ref_us=end - W_US - 1), sensor, render,
                                t_start_us=0, t_end_us=W_US)
    want_img = (np.clip(np.asarray(alone), 0, 1) * 255).astype(np.uint8)
    img = cv2.imread(str(tmp_path / "out" / "overlay" / f"{end:012d}.png"))[..., ::-1]
    yy, xx = np.mgrid[:sensor[0], :sensor[1]]
    drawn = np.zeros(sensor, bool)
    for x, y in pts:
      drawn |= np.hypot(xx - x, yy - y) < 4   # anti-aliased dots spread
    cx, cy, half = 140.1, 115.25, pitch * S / 2
    drawn |= (np.abs(np.abs(xx - cx) - half) < 2) & (np.abs(yy - cy) < half + 2)
    drawn |= (np.abs(np.abs(yy - cy) - half) < 2) & (np.abs(xx - cx) < half + 2)
    np.testing.assert_array_equal(img[~drawn], want_img[~drawn], err_msg=f"overlay {end}")


@pytest.mark.parametrize("kind", ["cmfa", "rgb_slpt"])
def test_each_window_gets_its_own_rgb_frame(tmp_path, kind):
  sensor = CAMERAS["davis346"][0]
  events, _ = face_recording(sensor, BOX, seed=8, n_windows=8)
  path = tmp_path / "rec.npz"
  write_events(path, events)
  t0, t1 = int(events.t[0]), int(events.t[-1])
  n = (t1 - t0) // W_US + 1
  frames = tmp_path / "frames"
  frames.mkdir()
  for i in range(n):
    if i != 2:   # no frame: skipped
      cv2.imwrite(str(frames / f"{t0 + (i + 1) * W_US - 1}.png"),
                  np.full(sensor + (3,), 10 * i, np.uint8))
  opts = dict(OPTS, box=BOX, track=False, rgb=str(frames), rgb_max_gap_us=W_US // 4)
  s = predict.run("fake", path, tmp_path / "out", predict.Options(**opts), fake_model(kind))
  got = landmarks_by_window(tmp_path / "out" / "landmarks.csv")
  capacity = OPTS["capacity"] if kind == "cmfa" else 0
  want, sparse = {}, 0
  for i in range(n):
    crop_pts, n_in = fake_reference(events, t0 + i * W_US, capacity, rgb_value=i)
    # rgb_slpt predicts even the windows without events in the crop.
    sparse += kind == "cmfa" and n_in < OPTS["min_events"]
    if i != 2 and (kind == "rgb_slpt" or n_in >= OPTS["min_events"]):
      want[t0 + (i + 1) * W_US] = sensor_reference(crop_pts, BOX)
  assert list(got) == list(want) and s["skipped"]["no_rgb_frame"] == 1
  assert s["skipped"]["too_few_events"] == sparse == (2 if kind == "cmfa" else 0)
  for end in want:
    np.testing.assert_allclose(got[end], want[end], atol=2e-3, err_msg=f"window ending {end}")


def test_face_box_from_event_density(tmp_path, known_model):
  sensor = CAMERAS["dvxplorer"][0]
  rng = np.random.default_rng(1)
  face = (180, 60, 259, 139)
  n_face, n_noise = 30_000, 3_000
  x = np.r_[rng.integers(face[0], face[2] + 1, n_face), rng.integers(0, 320, n_noise)]
  y = np.r_[rng.integers(face[1], face[3] + 1, n_face), rng.integers(0, 240, n_noise)]
  x[:50], y[:50] = 5, 5                        # a hot pixel
  t = rng.integers(2_000_000, 2_000_000 + 6 * W_US, len(x))
  t[0] = 2_000_000
  order = np.argsort(t, kind="stable")
  events = Events(t[order], x[order], y[order], rng.integers(0, 2, len(x)), sensor)
  path = tmp_path / "rec.aedat4"
  write_events(path, events)
  s = predict.run(known_model["known"], path, tmp_path / "out",
                  predict.Options(**dict(OPTS, overlay="mp4")),
                  predictor=known_model["known_predictor"])
  assert s["box_source"] == "event density"
  # A face's events reach past its landmark box (hair, neck): the box found is the events'
  # 5-95% span, here of a uniform square, through the documented map to the landmark box.
  lo, hi = np.add(face[:2], 0.05 * 80), np.subtract(face[2:], 0.05 * 80)
  sx, sy, shift = win.LANDMARK_BOX_MAP
  c = (lo + hi) / 2 + [0, shift * (hi - lo)[1]]
  half = (hi - lo) * [sx, sy] / 2
  np.testing.assert_allclose(s["initial_box"], np.r_[c - half, c + half], atol=3)
  video = cv2.VideoCapture(str(tmp_path / "out" / "overlay.mp4"))
  frames = 0
  while video.read()[0]:
    frames += 1
  assert frames == s["predicted_windows"] == 6
  assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320


def test_face_box_covers_the_face_not_its_densest_features():
  # Eyes, nose and mouth make dense small blobs of events, the head's outline a sparser ring
  # around them: the box must span the face, not just its features.
  rng = np.random.default_rng(3)
  cx, cy, ax, ay = 150, 110, 45, 60
  a, r = rng.uniform(0, 2 * np.pi, 12_000), rng.uniform(0.95, 1.05, 12_000)
  features = [(cx - 18, cy - 15), (cx + 18, cy - 15), (cx, cy + 5), (cx, cy + 25)]
  x = np.r_[cx + ax * r * np.cos(a), *(rng.normal(u, 4, 3000) for u, _ in features),
            rng.integers(0, 320, 2000)]
  y = np.r_[cy + ay * r * np.sin(a), *(rng.normal(v, 2, 3000) for _, v in features),
            rng.integers(0, 240, 2000)]
  x, y = np.round(x).astype(int), np.round(y).astype(int)
  x[:50], y[:50] = 5, 5                        # a hot pixel
  box = win.face_box_from_events(Events(np.arange(len(x)), x, y, np.zeros(len(x), int),
                                        (240, 320)))
  assert box[2] - box[0] >= 0.8 * 2 * ax                              # the face's width
  # It holds every feature (eyes to mouth, with their spread).
  assert box[0] <= cx - 25 and box[1] <= cy - 20 and box[2] >= cx + 25 and box[3] >= cy + 30
  assert box[0] >= cx - ax - 3 and box[1] >= cy - ay - 3                # inside the outline
  assert box[2] <= cx + ax + 3 and box[3] <= cy + ay + 3


def test_cmfa_needs_rgb_and_pairs_frames_by_time(tmp_path, known_model):
  cmfa = export_model(tmp_path / "cmfa", "cmfa", known_model["shape"])
  p = predict.load_predictor(cmfa)
  sensor = CAMERAS["davis346"][0]
  box = centred_box(sensor)
  events, expected = face_recording(sensor, box, empty=(), outside=(), n_windows=6)
  path = tmp_path / "rec.aedat4"
  write_events(path, events)
  with pytest.raises(ValueError, match="slpt_event"):
    predict.run(cmfa, path, tmp_path / "out", predict.Options(**OPTS), p)
  frames = tmp_path / "frames"
  frames.mkdir()
  ends = [end for end, _ in expected]
  rng = np.random.default_rng(0)
  for i, end in enumerate(ends):
    if i != 2:   # window 2 has no frame near its end: skipped and counted
      image = rng.integers(0, 256, sensor + (3,), dtype=np.uint8)
      cv2.imwrite(str(frames / f"{end - 1}.png"), image)
  opts = dict(OPTS, box=box, track=False, rgb=str(frames), rgb_max_gap_us=W_US // 4,
              overlay="png")
  s = predict.run(cmfa, path, tmp_path / "out", predict.Options(**opts), p)
  assert s["model"] == "cmfa" and s["skipped"]["no_rgb_frame"] == 1
  got = read_csv(tmp_path / "out" / "landmarks.csv")[::98, 0].astype(np.int64)
  np.testing.assert_array_equal(got, [e for i, e in enumerate(ends) if i != 2])
  pngs = sorted(os.listdir(tmp_path / "out" / "overlay"))
  assert pngs == [f"{e:012d}.png" for e in got]
  # A video + timestamps file pairs the same way; a count mismatch is named.
  video_path = tmp_path / "rgb.mp4"
  writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                           (sensor[1], sensor[0]))
  for _ in ends:
    writer.write(rng.integers(0, 256, sensor + (3,), dtype=np.uint8))
  writer.release()
  (tmp_path / "rgb.mp4.times.txt").write_text("\n".join(str(e - 1) for e in ends))
  s = predict.run(cmfa, path, tmp_path / "video", predict.Options(
      **dict(opts, rgb=str(video_path), overlay="none")), p)
  assert s["predicted_windows"] == len(ends) and s["skipped"]["no_rgb_frame"] == 0
  (tmp_path / "rgb.mp4.times.txt").write_text("\n".join(str(e - 1) for e in ends[:-1]))
  with pytest.raises(ValueError, match=r"rgb\.mp4.*frames"):
    predict.run(cmfa, path, tmp_path / "video2", predict.Options(
        **dict(opts, rgb=str(video_path), overlay="none")), p)
  assert not (tmp_path / "video2" / "landmarks.csv").exists()


def test_failure_midway_publishes_nothing_and_keeps_old_outputs(tmp_path, known_model):
  sensor = CAMERAS["dvxplorer"][0]
  box = centred_box(sensor)
  # More events than one read block (32768), so the decrease is met after windows were written.
  events, _ = face_recording(sensor, box, empty=(), outside=(), per_window=4000)
  out = tmp_path / "out"
  good = tmp_path / "good.npz"
  write_events(good, events)
  predict.run(known_model["known"], good, out, predict.Options(box=box, **OPTS),
              predictor=known_model["known_predictor"])
  before = {p: (out / p).read_bytes() for p in os.listdir(out)}
  # Time runs backwards after ~8 windows: the stream fails after batches were written.
  t = events.t.copy()
  t[-20:] = t[-21] - 50_000
  bad = tmp_path / "bad.npz"
  np.savez(bad, t=t, x=events.x, y=events.y, p=events.p, sensor_size=np.array(sensor))
  with pytest.raises(EventFileError, match="bad.npz.*decrease"):
    predict.run(known_model["known"], bad, out,
                predict.Options(box=box, **dict(OPTS, overlay="mp4")),
                predictor=known_model["known_predictor"])
  assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before   # no temp files either


@pytest.mark.slow
def test_command_line(tmp_path, known_model):
  sensor, fmt, ext = CAMERAS["gen3"]
  box = centred_box(sensor)
  events, expected = face_recording(sensor, box)
  path = tmp_path / f"rec.{ext}"
  write_events(path, events, format=fmt)
  env = dict(os.environ, EVALIGN_JAX_CACHE=os.path.join(
      tempfile.gettempdir(), f"evalign_jax_test_cache_{os.getuid()}"))
  cmd = [sys.executable, "-m", "evalign_jax.predict", f"--checkpoint={known_model['known']}",
         f"--events={path}", f"--out={tmp_path / 'out'}", f"--window_us={W_US}",
         "--batch_size=4", "--capacity=1024", "--min_events=20", "--overlay=png",
         "--box=" + ",".join(str(v) for v in box)]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "windows/s" in out.stdout
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["predicted_windows"] == sum(kept for _, kept in expected)
  assert len(os.listdir(tmp_path / "out" / "overlay")) == summary["predicted_windows"]
