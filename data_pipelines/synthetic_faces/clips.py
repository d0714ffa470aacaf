"""Procedural face video clips with 98 WFLW landmarks: the `synthetic_faces` dataset's source.

`render_clip(clip_seed, subject_seed, spec)` draws a short RGB clip of one synthetic person.
The subject seed alone fixes identity (face shape, colours, hair, beard, glasses), so one
subject appears in many clips; the clip seed (with the subject seed) fixes everything else:
camera, placement and head motion, expression over time (talking, blinks, gaze, smile),
lighting, background clutter, clothing and occluders. Output is a pure function of
(clip_seed, subject_seed, spec).

Lighting conditions (the `Clip.condition` label), chosen once per clip:
  "normal"    exposure gain 0.7-1.25, mild sensor noise;
  "low_light" gain 0.08-0.3 and stronger sensor noise;
  "flicker"   gain 0.6-1.1 modulated by a 40-140 Hz light (mains-like; never a near-multiple
              of the frame rate, which would alias to a constant) sampled at the frame times.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from data_pipelines.synthetic_faces import face_model as fm
from data_pipelines.synthetic_faces import render

CONDITIONS = ("normal", "low_light", "flicker")
_SUBJECT_TAG, _CLIP_TAG = 0x5B1EC7, 0xC11B


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What to render.

  Attributes:
    height, width: frame size, pixels.
    num_frames: frames per clip.
    fps: frame rate; frame k is at round(k * 1e6 / fps) µs.
    low_light_prob, flicker_prob: chance of each lighting condition per clip (else "normal").
    occluder_prob: chance of a moving occluder (hand, phone, cup, microphone, hair strand).
    fast_motion_prob: chance that head motion is ~2.5x faster than usual.
    motion_scale: multiplies all head-motion amplitudes (0 = a still head).
    face_size: range of the landmark box side as a fraction of min(height, width).
    max_yaw, max_pitch, max_roll: pose limits, degrees.
  """

  height: int = 320
  width: int = 320
  num_frames: int = 9
  fps: float = 30.0
  low_light_prob: float = 0.2
  flicker_prob: float = 0.15
  occluder_prob: float = 0.3
  fast_motion_prob: float = 0.15
  motion_scale: float = 1.0
  face_size: tuple[float, float] = (0.25, 0.65)
  max_yaw: float = 40.0
  max_pitch: float = 25.0
  max_roll: float = 30.0


@dataclasses.dataclass
class Clip:
  """One rendered clip.

  Attributes:
    frames: (T, H, W, 3) uint8 RGB.
    landmarks: (T, 98, 2) float32 WFLW points (x, y) in pixels, pixel centres at integers.
    boxes: (T, 4) float32 (x0, y0, x1, y1), the bounding box of each frame's landmarks.
    timestamps_us: (T,) int64 frame times, round(k * 1e6 / fps).
    subject_id: f"subject{subject_seed:05d}".
    condition: lighting condition, one of CONDITIONS.
    params: JSON-serialisable record of every sampled parameter.
  """

  frames: np.ndarray
  landmarks: np.ndarray
  boxes: np.ndarray
  timestamps_us: np.ndarray
  subject_id: str
  condition: str
  params: dict


@functools.lru_cache(maxsize=16)
def _noise_bank(h: int, w: int, std_halves: int) -> tuple[np.ndarray, np.ndarray]:
  """(h, w, 3) Gaussian noise of std std_halves / 2 DN, the same in every process, split into
  uint8 positive and negative parts."""
  bank = np.random.default_rng(0x401).standard_normal((h, w, 3), dtype=np.float32)
  q = np.round(bank * (std_halves / 2.0))
  return np.clip(q, 0, 255).astype(np.uint8), np.clip(-q, 0, 255).astype(np.uint8)


# Subjects recur across clips; their render rigs need not be rebuilt.
_rig = functools.lru_cache(maxsize=64)(render.make_rig)


@functools.lru_cache(maxsize=256)
def sample_subject(subject_seed: int) -> tuple[fm.Identity, render.Appearance]:
  """The identity and appearance that `subject_seed` stands for."""
  id_seq, app_seq = np.random.SeedSequence([_SUBJECT_TAG, int(subject_seed)]).spawn(2)
  return (fm.Identity.sample(np.random.default_rng(id_seq)),
          render.Appearance.sample(np.random.default_rng(app_seq)))


# ----------------------------------------------------------------------------------------------
# Smooth random signals over a clip.


def _wiggle(rng, t, amp, f_lo, f_hi, n=3):
  """Sum of n random sinusoids with total peak amplitude `amp` (t in seconds)."""
  w = rng.dirichlet(np.ones(n)) * amp
  f = rng.uniform(f_lo, f_hi, n)
  ph = rng.uniform(0, 2 * math.pi, n)
  return (w[:, None] * np.sin(2 * math.pi * f[:, None] * t[None] + ph[:, None])).sum(0)


def _bounded(rng, t, lo, hi, base_sd, amp, f_lo, f_hi, centre=0.0):
  """A base value ~ N(centre, base_sd) plus a wiggle, kept inside [lo, hi]."""
  amp = min(amp, 0.45 * (hi - lo))
  base = float(np.clip(rng.normal(centre, base_sd), lo + amp, hi - amp))
  return base + _wiggle(rng, t, amp, f_lo, f_hi)


def _blinks(rng, t, fps):
  """Blink amount in [0, 1] over time: random blinks (fast close, slower open)."""
  out = np.zeros_like(t)
  dur = t[-1] + 1.0 / fps
  n = rng.poisson(0.45 * dur)
  if rng.random() < 0.35:
    n += 1   # short clips would otherwise rarely show one
  for _ in range(n):
    start = rng.uniform(-0.2, dur)
    close, hold, open_ = rng.uniform(0.06, 0.1), rng.uniform(0.0, 0.06), rng.uniform(0.1, 0.2)
    x = t - start
    prof = np.where(x < 0, 0.0, np.where(x < close, x / close, np.where(
        x < close + hold, 1.0, np.clip(1.0 - (x - close - hold) / open_, 0.0, 1.0))))
    out = np.maximum(out, prof)
  return out


def _expression_track(rng, t, fps) -> dict:
  """Per-frame expression parameters (arrays over frames)."""
  talk = rng.random() < 0.5
  if talk:
    syl = rng.uniform(2.0, 5.0)
    raw = (np.sin(2 * math.pi * syl * t + rng.uniform(0, 6))
           + 0.5 * np.sin(2 * math.pi * syl * 1.7 * t + rng.uniform(0, 6)) + 0.3)
    mouth = rng.uniform(0.12, 0.45) * np.clip(raw, 0, None) / 1.8
  else:
    r = rng.random()
    base = 0.0 if r < 0.7 else (rng.uniform(0, 0.2) if r < 0.9 else rng.uniform(0.4, 1.0))
    mouth = np.clip(base + _wiggle(rng, t, 0.05 * (base > 0), 0.2, 1.0), 0, 1)
  smile = np.clip((rng.uniform(0.2, 1.0) if rng.random() < 0.4 else 0.0)
                  + _wiggle(rng, t, 0.15, 0.1, 0.6), 0, 1)
  blink = _blinks(rng, t, fps)
  r = rng.random()
  left, right = blink.copy(), blink.copy()
  if r < 0.04:       # eyes shut
    left = right = np.full_like(t, 1.0)
  elif r < 0.12:     # squint
    sq = rng.uniform(0.3, 0.6)
    left, right = np.maximum(left, sq), np.maximum(right, sq)
  elif r < 0.16:     # wink
    (left if rng.random() < 0.5 else right)[:] = _blinks(rng, t, fps)
  brow = np.clip(rng.normal(0, 0.35) + _wiggle(rng, t, 0.3, 0.2, 1.0), -1, 1)
  # Gaze: fixations with saccades (jumps) between them.
  n_sacc = rng.poisson(1.5 * (t[-1] + 1.0 / fps)) + 1
  times = np.sort(rng.uniform(0, t[-1] + 1e-6, n_sacc))
  targets = rng.uniform(-0.7, 0.7, (n_sacc + 1, 2)) * [1.0, 0.6]
  k = np.searchsorted(times, t, side="right")
  return {"mouth_open": mouth, "smile": smile, "blink_left": left, "blink_right": right,
          "brow_raise": brow, "gaze_x": targets[k, 0], "gaze_y": targets[k, 1]}


def _lighting_track(rng, t, spec: ClipSpec):
  """Per-frame Lighting list, the condition label and a parameter record."""
  r = rng.random()
  cond = ("low_light" if r < spec.low_light_prob else
          "flicker" if r < spec.low_light_prob + spec.flicker_prob else "normal")
  gain = {"normal": rng.uniform(0.7, 1.25), "low_light": rng.uniform(0.08, 0.3),
          "flicker": rng.uniform(0.6, 1.1)}[cond]
  # Noise std in half-DN steps, so a handful of cached noise banks serve every clip.
  noise = int(rng.integers(2, 6) if cond == "low_light" else rng.integers(1, 5)) / 2.0
  record = {"condition": cond, "gain": float(gain), "noise_std": float(noise)}
  # Slow auto-exposure breathing, then the flicker, if any.
  g = gain * (1.0 + _wiggle(rng, t, 0.03, 0.1, 0.5))
  if cond == "flicker":
    while True:
      freq = rng.uniform(40.0, 140.0)
      ratio = freq / spec.fps
      if abs(ratio - round(ratio)) > 0.15:
        break
    depth, phase = rng.uniform(0.15, 0.45), rng.uniform(0, 2 * math.pi)
    g = g * (1.0 - depth * (0.5 - 0.5 * np.cos(2 * math.pi * freq * t + phase)))
    record.update(flicker_hz=float(freq), flicker_depth=float(depth), flicker_phase=float(phase))
  temp = rng.uniform(-1, 1)
  color = (1.0 + 0.12 * temp, 1.0 + 0.01 * temp, 1.0 - 0.16 * temp)
  if cond == "low_light":   # dim scenes are often lit by cool screens
    color = (color[0] * 0.92, color[1], color[2] * 1.08)
  az, el = math.radians(rng.uniform(-75, 75)), math.radians(rng.uniform(-15, 55))
  direction = (math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el))
  ambient, specular = rng.uniform(0.35, 0.7), rng.uniform(0.03, 0.2)
  record.update(color=list(color), direction=list(direction), ambient=float(ambient),
                specular=float(specular), gain_per_frame=[float(v) for v in g])
  lights = [render.Lighting(float(gk), color, direction, float(ambient), float(specular))
            for gk in g]
  return lights, cond, record


# ----------------------------------------------------------------------------------------------
# The clip.


def _place(ident, expr, angles, centre, side, camera) -> fm.Pose:
  """A pose with `angles` whose landmark box has centre `centre` and longer side `side` (px)."""
  face = fm.build_face(ident, expr)
  centre = np.asarray(centre, np.float64)
  aim_c, aim_s = centre.copy(), float(side)
  for _ in range(2):   # rotation moves and resizes the box; two corrections converge
    pose = fm.Pose(*angles, translation=fm.translation_for_box(tuple(aim_c), aim_s, camera))
    lmk = fm.pose_face(face, pose, camera).landmarks
    lo, hi = lmk.min(0), lmk.max(0)
    aim_c = aim_c + centre - (lo + hi) / 2
    aim_s = aim_s * float(side) / float(max(hi - lo))
  return fm.Pose(*angles, translation=fm.translation_for_box(tuple(aim_c), aim_s, camera))


def render_clip(clip_seed: int, subject_seed: int, spec: ClipSpec = ClipSpec()) -> Clip:
  """Renders one clip; see the module docstring."""
  ident, app = sample_subject(subject_seed)
  rng = np.random.default_rng(np.random.SeedSequence([_CLIP_TAG, int(clip_seed),
                                                      int(subject_seed)]))
  h, w, n = spec.height, spec.width, spec.num_frames
  ts_us = np.round(np.arange(n) * 1e6 / spec.fps).astype(np.int64)
  t = np.arange(n) / spec.fps
  short = min(h, w)

  # Scene: camera, background, clothing.
  hfov = float(rng.uniform(30.0, 55.0))
  camera = fm.Camera.for_image(h, w, hfov)
  bg = render.make_background(rng, h, w)
  rig = _rig(ident, app)      # before the clothing changes, so the cache hits across clips
  app = dataclasses.replace(app, clothing=render._tup(rng.uniform(20, 235, 3)))

  # Head motion: smooth random sinusoids; some clips move fast.
  fast = rng.random() < spec.fast_motion_prob
  ms = spec.motion_scale * (2.5 if fast else 1.0)
  lo_s, hi_s = spec.face_size
  side0 = short * float(np.exp(rng.uniform(np.log(lo_s), np.log(hi_s))))
  log_side = np.log(side0) + _wiggle(rng, t, 0.06 * ms, 0.1, 0.8)
  side = np.exp(log_side)
  # Keep most of the face in frame: the box centre stays >= 0.4 box sides from each edge.
  amp_xy = min(0.06 * short * ms, 0.25 * short)
  cx = _bounded(rng, t, 0.4 * side0, w - 0.4 * side0, 0.25 * w, amp_xy, 0.1, 1.0, w / 2)
  cy = _bounded(rng, t, 0.4 * side0, h - 0.4 * side0, 0.25 * h, amp_xy, 0.1, 1.0, h / 2)
  cx = np.clip(cx, 0.35 * side, w - 0.35 * side)
  cy = np.clip(cy, 0.35 * side, h - 0.35 * side)
  yaw = _bounded(rng, t, -spec.max_yaw, spec.max_yaw, 18.0, 12.0 * ms, 0.15, 1.0)
  pitch = _bounded(rng, t, -spec.max_pitch, spec.max_pitch, 9.0, 7.0 * ms, 0.15, 1.0)
  roll = _bounded(rng, t, -spec.max_roll, spec.max_roll, 10.0, 7.0 * ms, 0.15, 1.0)
  yaw, pitch, roll = (np.clip(a, -m, m) for a, m in ((yaw, spec.max_yaw),
                                                      (pitch, spec.max_pitch),
                                                      (roll, spec.max_roll)))

  expr_track = _expression_track(rng, t, spec.fps)
  lights, condition, light_rec = _lighting_track(rng, t, spec)
  bg = bg.lit(lights[0].color)     # colour is fixed per clip; the gain varies per frame
  bg_dx = _wiggle(rng, t, 0.02 * short * ms, 0.05, 0.5)
  bg_dy = _wiggle(rng, t, 0.02 * short * ms, 0.05, 0.5)

  occluder = None
  if rng.random() < spec.occluder_prob:
    kind = str(rng.choice(render.OCCLUDERS, p=[0.35, 0.2, 0.15, 0.1, 0.2]))
    colour = {"hand": render._tup(np.asarray(app.skin) * rng.uniform(0.85, 1.1, 3)),
              "phone": render._tup(rng.uniform(10, 80, 3)),
              "cup": render._tup(rng.uniform(30, 240, 3)),
              "mic": (35.0, 35.0, 38.0), "strand": app.hair}[kind]
    size = side0 * rng.uniform(0.35, 0.9)
    mid = np.array([cx[n // 2], cy[n // 2]]) + rng.uniform(-0.45, 0.45, 2) * side0
    speed = rng.uniform(0.3, 5.0) * short / 320.0 * ms
    heading = rng.uniform(0, 2 * math.pi)
    k = np.arange(n) - n // 2
    path = mid + k[:, None] * speed * np.array([math.cos(heading), math.sin(heading)])
    ang = rng.uniform(0, 360) + k * rng.uniform(-3, 3)
    occluder = render.Occluder(kind, colour, float(size),
                               tuple(tuple(float(v) for v in p) for p in path),
                               tuple(float(a) for a in ang))

  # Sensor noise: crops of a fixed unit-normal bank at random offsets, scaled per clip.
  pad = 16
  noise = _noise_bank(h + pad, w + pad, int(round(2 * light_rec["noise_std"])))
  offsets = rng.integers(0, pad, (n, 2))

  # Place the face once (box centre and size at frame 0), then follow the trajectory.
  expr0 = fm.Expression(**{k_: float(v[0]) for k_, v in expr_track.items()})
  pose0 = _place(ident, expr0, (yaw[0], pitch[0], roll[0]), (cx[0], cy[0]), side[0], camera)
  t0 = np.asarray(pose0.translation)
  t_ref = np.asarray(fm.translation_for_box((cx[0], cy[0]), side[0], camera))

  frames = np.empty((n, h, w, 3), np.uint8)
  lmks = np.empty((n, fm.NUM_POINTS, 2), np.float32)
  for k in range(n):
    expr = fm.Expression(**{k_: float(v[k]) for k_, v in expr_track.items()})
    tr = t0 - t_ref + np.asarray(fm.translation_for_box((cx[k], cy[k]), side[k], camera))
    pose = fm.Pose(float(yaw[k]), float(pitch[k]), float(roll[k]), tuple(tr))
    pf = fm.pose_face(fm.build_face(ident, expr), pose, camera)
    bgk = bg.frame(h, w, float(bg_dx[k]), float(bg_dy[k]), lights[k].gain)
    oy, ox = offsets[k]
    crop = (noise[0][oy:oy + h, ox:ox + w], noise[1][oy:oy + h, ox:ox + w])
    frames[k] = render.render_frame(bgk, pf, rig, app, lights[k], occluder, k, crop,
                                    0.5 * short / 320.0, expr.smile)
    lmks[k] = pf.landmarks
  boxes = np.concatenate([lmks.min(1), lmks.max(1)], -1).astype(np.float32)

  f = lambda a: [float(v) for v in a]
  params = {
      "clip_seed": int(clip_seed), "subject_seed": int(subject_seed),
      "spec": {k_: (list(v) if isinstance(v, tuple) else v)
               for k_, v in dataclasses.asdict(spec).items()},
      "identity": ident.to_dict(), "appearance": app.to_dict(),
      "camera": {"hfov_deg": hfov, "focal_px": camera.focal_px},
      "motion": {"fast": bool(fast), "box_side_px": f(side), "box_centre_x": f(cx),
                 "box_centre_y": f(cy), "yaw": f(yaw), "pitch": f(pitch), "roll": f(roll)},
      "expression": {k_: f(v) for k_, v in expr_track.items()},
      "lighting": light_rec,
      "background": {"dx": f(bg_dx), "dy": f(bg_dy)},
      "occluder": occluder.to_dict() if occluder is not None else None,
  }
  return Clip(frames, lmks, boxes, ts_us, f"subject{int(subject_seed):05d}", condition, params)


def render_still(identity: fm.Identity = fm.Identity(),
                 expression: fm.Expression = fm.Expression(), yaw: float = 0.0,
                 pitch: float = 0.0, roll: float = 0.0, *, height: int = 320, width: int = 320,
                 box_side: float = 0.55, centre: tuple[float, float] | None = None,
                 appearance: render.Appearance = render.Appearance(),
                 lighting: render.Lighting = render.Lighting(),
                 background: tuple = (120.0, 130.0, 140.0), hfov_deg: float = 40.0):
  """One frame with a chosen face, pose and expression on a plain background (for tests and
  previews). Returns ((H, W, 3) uint8 RGB, (98, 2) float64 landmarks in pixels)."""
  camera = fm.Camera.for_image(height, width, hfov_deg)
  centre = ((width - 1) / 2.0, (height - 1) / 2.0) if centre is None else centre
  pose = _place(identity, expression, (yaw, pitch, roll), centre,
                box_side * min(height, width), camera)
  pf = fm.pose_face(fm.build_face(identity, expression), pose, camera)
  bg = np.empty((height, width, 3), np.uint8)
  bg[:] = np.clip(np.asarray(background) * lighting.color * lighting.gain, 0, 255).astype(np.uint8)
  rig = render.make_rig(identity, appearance)
  frame = render.render_frame(bg, pf, rig, appearance, lighting, smile=expression.smile)
  return frame, pf.landmarks
