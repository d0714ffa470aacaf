"""The procedural face generator: determinism, the Clip contract, WFLW semantics of the 98
points, pose/expression behaviour, variety across clips, and lighting in the rendered pixels."""

import dataclasses
import json

import cv2
import numpy as np

from data_pipelines import landmarks as lm
from data_pipelines.synthetic_faces import clips
from data_pipelines.synthetic_faces import face_model as fm

SMALL = clips.ClipSpec(height=96, width=128, num_frames=4)


def _frontal(expr=fm.Expression(), yaw=0.0, pitch=0.0, roll=0.0, ident=fm.Identity(),
             size=320):
  """Landmarks of a face centred in a size x size image, box side ~half the image."""
  cam = fm.Camera.for_image(size, size, 40.0)
  t = fm.translation_for_box(((size - 1) / 2, (size - 1) / 2), size / 2, cam)
  return fm.posed_landmarks(ident, expr, fm.Pose(yaw, pitch, roll, t), cam)


def _inside(pt, poly):
  return cv2.pointPolygonTest(poly.astype(np.float32), tuple(float(v) for v in pt), False) > 0


# ----------------------------------------------------------------------------------------------
# Determinism and the Clip contract.


def test_same_seeds_give_identical_clips_and_clip_seed_changes_them():
  a = clips.render_clip(3, 11, SMALL)
  b = clips.render_clip(3, 11, SMALL)
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.landmarks, b.landmarks)
  assert a.params == b.params and a.condition == b.condition
  c = clips.render_clip(4, 11, SMALL)
  assert not np.array_equal(a.frames, c.frames)
  assert np.abs(a.landmarks - c.landmarks).max() > 5.0
  # The subject seed alone fixes the identity; clothing is the one per-clip appearance choice.
  assert a.params["identity"] == c.params["identity"]
  app_a, app_c = dict(a.params["appearance"]), dict(c.params["appearance"])
  app_a.pop("clothing"), app_c.pop("clothing")
  assert app_a == app_c
  d = clips.render_clip(3, 12, SMALL)
  assert a.params["identity"] != d.params["identity"]


def test_clip_contract():
  spec = SMALL
  c = clips.render_clip(0, 5, spec)
  t, h, w = spec.num_frames, spec.height, spec.width
  assert c.frames.shape == (t, h, w, 3) and c.frames.dtype == np.uint8
  assert c.landmarks.shape == (t, 98, 2) and c.landmarks.dtype == np.float32
  assert c.boxes.shape == (t, 4) and c.boxes.dtype == np.float32
  np.testing.assert_array_equal(c.boxes[:, :2], c.landmarks.min(1))
  np.testing.assert_array_equal(c.boxes[:, 2:], c.landmarks.max(1))
  assert c.timestamps_us.dtype == np.int64
  np.testing.assert_array_equal(c.timestamps_us, np.round(np.arange(t) * 1e6 / spec.fps))
  assert c.subject_id == "subject00005"
  assert c.condition in clips.CONDITIONS
  assert json.loads(json.dumps(c.params)) == c.params    # JSON-serialisable, losslessly


def test_landmarks_mostly_inside_the_frame():
  spec = clips.ClipSpec(height=64, width=64, num_frames=6)
  inside = []
  for s in range(12):
    lmk = clips.render_clip(s, 100 + s, spec).landmarks
    inside.append(((lmk >= -0.5) & (lmk <= 63.5)).all(-1).mean())
  assert np.mean(inside) > 0.97 and min(inside) > 0.8


# ----------------------------------------------------------------------------------------------
# WFLW semantics.


def test_frontal_neutral_face_has_wflw_semantics():
  p = _frontal()
  x, y = p[:, 0], p[:, 1]
  assert x[60] < x[64] < x[68] < x[72]                      # image-left eye is 60-67
  assert _inside(p[96], p[60:68]) and _inside(p[97], p[68:76])
  eyes_y = p[60:76, 1].max()
  assert eyes_y < y[54] < p[76:96, 1].min()                 # nose tip between eyes and mouth
  assert x[55] < x[54] < x[59] and y[51] < y[52] < y[53] < y[54]
  assert x[76] < x[79] < x[82] and x[88] < x[92]
  contour = p[0:33]
  assert x[0] == contour[:, 0].min() and x[32] == contour[:, 0].max()
  assert np.argmax(contour[:, 1]) == 16
  assert np.all(np.diff(x[0:17]) > 0) and np.all(np.diff(x[16:33]) > 0)
  assert p[33:42, 1].max() < p[60:68, 1].min() and p[42:51, 1].max() < p[68:76, 1].min()
  assert x[33] < x[37] < x[42] < x[46]                      # brows run outer -> inner -> outer
  # Lips: upper outer above upper inner above lower inner above lower outer.
  assert y[79] < y[90] <= y[94] < y[85]


def test_frontal_neutral_face_is_mirror_symmetric():
  size = 320
  p = _frontal(size=size)
  mirrored = p[lm.MIRROR_98].copy()
  mirrored[:, 0] = (size - 1) - mirrored[:, 0]
  np.testing.assert_allclose(mirrored, p, atol=1e-6)
  # A sampled identity is slightly asymmetric, but still close to its mirror image.
  q = _frontal(ident=fm.Identity.sample(np.random.default_rng(0)), size=size)
  mq = q[lm.MIRROR_98].copy()
  mq[:, 0] = (size - 1) - mq[:, 0]
  err = np.abs(mq - q).max() / lm.inter_ocular(q)
  assert 0.0 < err < 0.1


def test_pose_moves_landmarks_the_documented_way():
  p = _frontal()
  eye_mid = lambda q: 0.5 * (q[60] + q[72])
  # yaw > 0: the nose turns to the image right, the image-right eye foreshortens.
  q = _frontal(yaw=25.0)
  assert q[54, 0] - eye_mid(q)[0] > p[54, 0] - eye_mid(p)[0] + 10
  assert (q[72, 0] - q[68, 0]) < 0.85 * (q[64, 0] - q[60, 0])
  q = _frontal(yaw=-25.0)
  assert (q[64, 0] - q[60, 0]) < 0.85 * (q[72, 0] - q[68, 0])
  # roll > 0: counter-clockwise as displayed, so the image-right eye goes up.
  q = _frontal(roll=20.0)
  angle = np.degrees(np.arctan2(q[72, 1] - q[60, 1], q[72, 0] - q[60, 0]))
  assert -23 < angle < -17
  # pitch > 0: face up, the nose tip rises towards the eyes.
  rel = lambda q: (q[54, 1] - eye_mid(q)[1]) / (q[16, 1] - eye_mid(q)[1])
  assert rel(_frontal(pitch=20.0)) < rel(p) - 0.05 < rel(_frontal(pitch=-20.0)) - 0.1


def test_hidden_contour_moves_to_the_visible_silhouette():
  q = _frontal(yaw=35.0)
  # The far (image-right) contour stays outside the far eye and the mouth corner.
  assert q[32, 0] > q[72, 0] and q[28, 0] > q[82, 0]
  assert np.argmax(q[0:33, 1]) in range(14, 19)


def test_blink_and_mouth_open():
  p = _frontal()
  b = _frontal(fm.Expression(blink_left=1.0))
  lower = {61: 67, 62: 66, 63: 65}
  for up, lo in lower.items():
    assert p[lo, 1] - p[up, 1] > 4.0                 # open eye
    assert abs(b[lo, 1] - b[up, 1]) < 0.3            # closed: upper lid on the lower lid
  np.testing.assert_allclose(b[68:76], p[68:76])      # the other eye stays open
  np.testing.assert_allclose(b[96:98], p[96:98])      # pupils stay at the eye centre
  m = _frontal(fm.Expression(mouth_open=0.6))
  gap = lambda q: np.linalg.norm(q[90] - q[94])
  assert gap(p) < 0.5 and gap(m) > 10.0
  assert m[85, 1] > p[85, 1] and m[16, 1] > p[16, 1]  # the jaw drops


# ----------------------------------------------------------------------------------------------
# Variety and motion.


def test_position_scale_and_pose_vary_across_clips():
  spec = clips.ClipSpec(height=96, width=96, num_frames=2)
  cs = [clips.render_clip(s, s % 5, spec) for s in range(20)]
  centres = np.array([(c.boxes[0, :2] + c.boxes[0, 2:]) / 2 for c in cs])
  sides = np.array([(c.boxes[0, 2:] - c.boxes[0, :2]).max() for c in cs])
  assert centres.std(0).min() > 0.08 * 96
  assert sides.max() / sides.min() > 1.6
  for key, spread in (("yaw", 30.0), ("pitch", 12.0), ("roll", 15.0)):
    angles = [c.params["motion"][key][0] for c in cs]
    assert max(angles) - min(angles) > spread, key
  assert len({c.condition for c in cs}) >= 2


def test_heads_move_smoothly_within_clips():
  spec = clips.ClipSpec(height=128, width=128, num_frames=9, fast_motion_prob=0.0)
  moved = []
  for s in range(6):
    c = clips.render_clip(s, 7, spec)
    step = np.linalg.norm(np.diff(c.landmarks, axis=0), axis=-1).max(-1)   # px per frame
    side = (c.boxes[:, 2:] - c.boxes[:, :2]).max(-1).mean()
    assert step.max() < 0.12 * side
    moved.append(np.abs(c.landmarks[-1] - c.landmarks[0]).max())
  assert max(moved) > 1.0     # something moves


def test_occluder_crosses_the_face():
  spec = dataclasses.replace(SMALL, occluder_prob=1.0)
  c = clips.render_clip(2, 3, spec)
  occ = c.params["occluder"]
  assert occ is not None and occ["kind"] in clips.render.OCCLUDERS
  centre = np.array(occ["centers"])
  box = c.boxes
  near = (np.abs(centre - (box[:, :2] + box[:, 2:]) / 2) < (box[:, 2:] - box[:, :2]) + occ["size"])
  assert near.all(-1).any()


# ----------------------------------------------------------------------------------------------
# Pixels.


def test_pupil_is_dark_against_the_sclera():
  frame, p = clips.render_still(fm.Identity(), fm.Expression(), height=160, width=160,
                                box_side=0.8)
  for outer, inner, pupil in ((60, 64, 96), (72, 68, 97)):
    sclera = p[outer] + 0.2 * (p[inner] - p[outer])
    at = lambda q: frame[int(round(q[1])), int(round(q[0]))].astype(float)
    assert at(sclera).mean() - at(p[pupil]).mean() > 80


def test_low_light_and_flicker():
  base = dict(height=64, width=64, num_frames=9, occluder_prob=0.0)
  normal = clips.ClipSpec(low_light_prob=0.0, flicker_prob=0.0, **base)
  dark = clips.ClipSpec(low_light_prob=1.0, flicker_prob=0.0, **base)
  flick = clips.ClipSpec(low_light_prob=0.0, flicker_prob=1.0, **base)
  mean_of = lambda spec: np.array([clips.render_clip(s, s, spec).frames.mean((1, 2, 3))
                                   for s in range(5)])
  n, d, f = mean_of(normal), mean_of(dark), mean_of(flick)
  assert {clips.render_clip(0, 0, dark).condition, clips.render_clip(0, 0, flick).condition} == {
      "low_light", "flicker"}
  assert d.mean() < 0.4 * n.mean()
  cv = lambda m: (m.std(1) / m.mean(1)).mean()    # frame-to-frame variation within a clip
  assert cv(f) > 3 * cv(n)
