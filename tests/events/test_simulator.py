"""Simulator: hand-computed crossings, a sequential ESIM reference loop, noise statistics, I/O."""

import json
import math

import cv2
import numpy as np
import pytest

from evalign_jax.events import simulator as sim
from evalign_jax.events.simulator import PRESETS, SimulatorParams, simulate_events

# Exact, noise-free settings: one threshold C everywhere, ESIM's log mapping.
EXACT = dict(preset="clean", sigma_thres=0.0, log_mapping="log")
C = 0.2


def esim_log(i):
  """ESIM log mapping, written independently of the module."""
  return math.log(i / 255.0 + 1e-3)


def frames_of(values, shape=(4, 4), pixel=(1, 2), background=50):
  """Frames where one pixel takes `values` and all others stay at `background`."""
  out = np.full((len(values),) + shape, background, np.uint8)
  out[:, pixel[0], pixel[1]] = values
  return out


def crossing_times(l0, l1, ref, t0, t1, c, n):
  """The k = 1..n ESIM crossing times at levels ref +- k*c, rounded to µs."""
  sign = 1 if l1 > ref else -1
  return [round(t0 + (ref + sign * k * c - l0) / (l1 - l0) * (t1 - t0)) for k in range(1, n + 1)]


def esim_reference(levels, times, c_pos, c_neg, refractory):
  """A sequential single-pixel ESIM loop: walk one level at a time, drop refractory events."""
  ref, last, out = levels[0], -math.inf, []
  for l0, l1, t0, t1 in zip(levels[:-1], levels[1:], times[:-1], times[1:]):
    while True:
      if l1 - ref >= c_pos:
        level, pol = ref + c_pos, 1
      elif ref - l1 >= c_neg:
        level, pol = ref - c_neg, 0
      else:
        break
      tc = t0 + (level - l0) / (l1 - l0) * (t1 - t0)
      ref = level  # Even if the event is dropped.
      if tc - last >= refractory:
        out.append((round(tc), pol))
        last = tc
  return out


def textured_video(t=8, shape=(32, 40), seed=0):
  """A smoothly translating random texture, uint8."""
  rng = np.random.default_rng(seed)
  h, w = shape
  tex = cv2.GaussianBlur(rng.random((h + 4 * t, w + 4 * t)), (0, 0), 2.0)
  tex = (tex - tex.min()) / np.ptp(tex) * 220 + 10
  return np.stack([tex[2 * k:2 * k + h, 3 * k:3 * k + w] for k in range(t)]).astype(np.uint8)


# --- hand-computed crossings ----------------------------------------------------------------

@pytest.mark.parametrize("i0,i1,pol", [(50, 120, 1), (200, 30, 0)])
def test_single_pixel_step(i0, i1, pol):
  ts = np.array([1_000, 11_000])
  ev = simulate_events(frames_of([i0, i1], background=77), ts, **EXACT)
  l0, l1 = esim_log(i0), esim_log(i1)
  n = math.floor(abs(l1 - l0) / C)
  assert n == (4 if pol else 9)  # step/C = 4.36 and 9.45: far from integers.
  np.testing.assert_array_equal(ev.t, crossing_times(l0, l1, l0, 1_000, 11_000, C, n))
  assert np.all(ev.x == 2) and np.all(ev.y == 1) and np.all(ev.p == pol)
  assert ev.sensor_size == (4, 4)


def test_reference_carries_over_intervals():
  # 100 -> 120 DN: +0.182, below C, no events; the residual counts towards the next step.
  # 120 -> 160: D goes 0.182 -> 0.469, ON at levels 0.2 and 0.4 (ref = L0 + 0.4 after).
  # 160 -> 90: D goes 0.069 -> -0.505, OFF at levels -0.2 and -0.4 relative to the new ref.
  ts = [0, 10_000, 20_000, 30_000]
  ev = simulate_events(frames_of([100, 120, 160, 90]), np.array(ts), **EXACT)
  l0, l1, l2, l3 = (esim_log(i) for i in (100, 120, 160, 90))
  assert 0 < l1 - l0 < C
  want_on = crossing_times(l1, l2, l0, ts[1], ts[2], C, 2)
  want_off = crossing_times(l2, l3, l0 + 2 * C, ts[2], ts[3], C, 2)
  np.testing.assert_array_equal(ev.t, want_on + want_off)
  np.testing.assert_array_equal(ev.p, [1, 1, 0, 0])


def test_linlog_mapping():
  p = PRESETS["clean"]
  slope = math.log(20) / 20
  np.testing.assert_allclose(sim.log_intensity([0, 5, 12, 20, 40, 255], p),
                             [0, 5 * slope, 12 * slope, math.log(20), math.log(40),
                              math.log(255)], rtol=1e-12)
  # Dark pixel 5 -> 12 DN: linear regime, 7 * 0.1498 = 1.049 -> 5 events (log would give 4).
  ts = np.array([0, 1_000])
  ev = simulate_events(frames_of([5, 12]), ts, preset="clean", sigma_thres=0.0)
  assert len(ev) == 5 and np.all(ev.p == 1)
  np.testing.assert_array_equal(ev.t, [round(k * C / (7 * slope) * 1_000) for k in range(1, 6)])
  # 10 -> 40 DN straddles the knee: 10*slope -> ln 40, i.e. 2.191 -> 10 events.
  ev = simulate_events(frames_of([10, 40]), ts, preset="clean", sigma_thres=0.0)
  assert len(ev) == math.floor((math.log(40) - 10 * slope) / C) == 10


# --- noise ----------------------------------------------------------------------------------

def test_static_scene_is_silent_without_noise():
  frames = np.repeat(textured_video(1), 20, axis=0)
  ev = simulate_events(frames, np.arange(20) * 33_333, preset="clean")
  assert len(ev) == 0 and ev.sensor_size == (32, 40)


def test_static_scene_emits_with_v2e_noise_over_long_times():
  frames = np.repeat(textured_video(1, shape=(16, 16)), 3, axis=0)
  ev = simulate_events(frames, np.array([0, 100_000_000, 200_000_000]), preset="v2e_default")
  # 200 s of 0.01 Hz leak is about two ON events per pixel; shot noise adds ~0.1 per pixel.
  assert 300 < len(ev) < 800
  assert np.mean(ev.p) > 0.8


def test_leak_events_at_hand_computed_times():
  # Noise-free leak: ref falls by rate*C per second, so ON events every 1/rate s = 100 ms.
  ts = np.arange(29) * 33_333  # Ends at 933 ms; no crossing falls on a frame time.
  frames = np.full((29, 2, 3), 90, np.uint8)
  ev = simulate_events(frames, ts, preset="clean", sigma_thres=0.0, leak_rate_hz=10.0)
  assert len(ev) == 9 * 6 and np.all(ev.p == 1)
  np.testing.assert_array_equal(ev.t, np.repeat(np.arange(1, 10) * 100_000, 6))


@pytest.mark.parametrize("rate_hz", [5.0, 10.0])  # Candidate sampling and the dense path.
def test_shot_noise_rate_and_darkness(rate_hz):
  t, shape = 31, (48, 48)
  ts = np.round(np.arange(t) * 1e6 / 30).astype(np.int64)  # 1 s.
  counts = {}
  for name, dn in (("dark", 0), ("bright", 255)):
    frames = np.full((t,) + shape, dn, np.uint8)
    ev = simulate_events(frames, ts, preset="clean", sigma_thres=0.0, shot_noise_rate_hz=rate_hz,
                         seed=3)
    counts[name] = len(ev)
    assert abs(np.mean(ev.p) - 0.5) < 0.05  # ON and OFF equally likely.
  n_px = shape[0] * shape[1]
  # v2e: probability per interval (rate/2)*dt*(1 - 0.75*(I+20)/275) for each polarity.
  for name, dn in (("dark", 0), ("bright", 255)):
    expected = n_px * rate_hz * 1.0 * (1 - 0.75 * (dn + 20) / 275)
    assert abs(counts[name] - expected) < 5 * math.sqrt(expected) + 1, (name, counts, expected)
  assert counts["dark"] > 3 * counts["bright"]


def test_shot_noise_resets_reference():
  # A pixel 0.15 above its reference: a second +0.15 would cross, unless noise reset ref to L1.
  ts = np.arange(3) * 1_000_000
  frames = frames_of([100, 118, 137], shape=(1, 1), pixel=(0, 0))
  quiet = simulate_events(frames, ts, **EXACT)
  assert len(quiet) == 1
  noisy = simulate_events(frames, ts, **EXACT, shot_noise_rate_hz=1e4)  # Fires every interval.
  # Only noise remains: one noise event per interval, at most, and no crossing in interval 2.
  assert len(noisy) == 2


# --- refractory period ----------------------------------------------------------------------

def test_refractory_matches_sequential_reference():
  # Pixels with different steps: crossing spacings both below and above R = 500 µs. Up, then
  # quickly down (for some pixels the first OFF crossings fall within R of the last ON), then
  # slowly up.
  ends = np.array([240, 225, 200, 170, 150, 120, 100, 80, 60, 40, 25], np.uint8)
  low = np.full(len(ends), 10, np.uint8)
  values = [low, ends, low, ends]
  frames = np.stack(values)[:, None, :]
  ts = [0, 3_000, 4_000, 26_000]
  r = 500.0
  ev = simulate_events(frames, np.array(ts), **EXACT, refractory_us=r)
  ev0 = simulate_events(frames, np.array(ts), **EXACT)
  assert len(ev) < len(ev0)
  for x in range(len(ends)):
    levels = [esim_log(int(v[x])) for v in values]
    got = list(zip(ev.t[ev.x == x].tolist(), ev.p[ev.x == x].tolist()))
    assert got == esim_reference(levels, ts, C, C, r), x
    # Dropped crossings still advance the reference: R only removes events.
    assert got == [e for e in zip(ev0.t[ev0.x == x].tolist(), ev0.p[ev0.x == x].tolist())
                   if e in got]
    assert len(ev0.t[ev0.x == x]) == len(esim_reference(levels, ts, C, C, 0.0))


# --- threshold mismatch ---------------------------------------------------------------------

def test_thresholds_fixed_per_pixel():
  # Uniform image 20 -> 200 -> 20 -> 200 DN over 1 s intervals.
  ts = np.arange(4) * 1_000_000
  frames = np.broadcast_to(np.array([20, 200, 20, 200], np.uint8)[:, None, None], (4, 12, 12))
  ev = simulate_events(frames, ts, **dict(EXACT, sigma_thres=0.05))
  step = esim_log(200) - esim_log(20)
  pix = ev.y.astype(int) * 12 + ev.x
  counts = np.zeros((3, 144), int)
  cp, cn = np.zeros(144), np.zeros(144)
  for i in range(3):
    sel = (ev.t > ts[i]) & (ev.t <= ts[i + 1])
    counts[i] = np.bincount(pix[sel], minlength=144)
    if i < 2:  # C from event spacing: t_k = t0 + k*C/step*dt in the first two intervals.
      first = np.array([ev.t[sel][pix[sel] == q].min() for q in range(144)])
      last = np.array([ev.t[sel][pix[sel] == q].max() for q in range(144)])
      c_est = (last - first) / (counts[i] - 1) * step / 1e6
      (cp if i == 0 else cn)[:] = c_est
  assert 0.03 < cp.std() < 0.07 and abs(cp.mean() - C) < 0.015
  assert len(np.unique(counts[0])) > 2  # Thresholds differ between pixels.
  # Interval 3 with the thresholds estimated from intervals 1 and 2 predicts every count.
  for q in range(144):
    ref = esim_log(20) + counts[0, q] * cp[q] - counts[1, q] * cn[q]
    assert counts[2, q] == math.floor((esim_log(200) - ref) / cp[q]), q


def test_thresholds_clipped():
  frames = np.broadcast_to(np.array([20, 200], np.uint8)[:, None, None], (2, 16, 16))
  ev = simulate_events(frames, np.array([0, 1_000_000]), **dict(EXACT, sigma_thres=1.0))
  counts = np.bincount(ev.y.astype(int) * 16 + ev.x, minlength=256)
  most = math.floor((esim_log(200) - esim_log(20)) / 0.01)
  assert counts.max() == most  # C never below 0.01 ...
  assert np.mean(counts == most) > 0.3  # ... and ~42% of N(0.2, 1) draws fall below it.


# --- optional upsampling --------------------------------------------------------------------

def test_upsampling_interpolates_intensity(monkeypatch):
  monkeypatch.setattr(sim, "_num_substeps", lambda g0, g1, params: 4)
  frames = frames_of([50, 130], shape=(1, 1), pixel=(0, 0))
  ev = simulate_events(frames, np.array([0, 8_000]), **EXACT, upsample_max_px=1.0)
  # Intensity is linear in time; log(I(t)/255 + eps) = L0 + k*C solved for t, per sub-step the
  # log is linear between the 4 interpolated frames.
  knots = [esim_log(50 + 80 * j / 4) for j in range(5)]
  want = []
  for k in range(1, math.floor((knots[-1] - knots[0]) / C) + 1):
    level = knots[0] + k * C
    j = next(j for j in range(4) if knots[j + 1] >= level)
    want.append(round(2_000 * j + (level - knots[j]) / (knots[j + 1] - knots[j]) * 2_000))
  np.testing.assert_array_equal(ev.t, want)
  assert ev.metadata["simulator"]["num_subintervals"] == 4


def test_upsampling_from_flow():
  video = textured_video(5, shape=(48, 48))  # 3 px/frame horizontally, 2 vertically.
  ts = np.arange(5) * 33_333
  ev = simulate_events(video, ts, preset="clean", upsample_max_px=1.0)
  n_sub = ev.metadata["simulator"]["num_subintervals"]
  assert 4 * 2 <= n_sub <= 4 * 6
  assert np.all(np.diff(ev.t) >= 0) and ev.t.min() > 0 and ev.t.max() <= ts[-1]


# --- determinism, output contract, input handling -------------------------------------------

def test_determinism_and_output_contract():
  video = textured_video(10)
  ts = 5_000_000 + np.arange(10) * 33_333
  a = simulate_events(video, ts, seed=7)
  b = simulate_events(video, ts, seed=7)
  c = simulate_events(video, ts, seed=8)
  assert len(a) > 1000
  for f in ("t", "x", "y", "p"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert len(a) != len(c) or not np.array_equal(a.t, c.t)
  assert np.all(np.diff(a.t) >= 0)
  assert a.t.min() > ts[0] and a.t.max() <= ts[-1]
  assert a.x.max() < 40 and a.y.max() < 32 and set(np.unique(a.p)) == {0, 1}
  meta = json.loads(json.dumps(a.metadata))["simulator"]
  assert meta["preset"] == "v2e_default" and meta["seed"] == 7
  for name, value in vars(PRESETS["v2e_default"]).items():
    assert meta[name] == value, name
  over = simulate_events(video, ts, refractory_us=0, pos_thres=0.3).metadata["simulator"]
  assert over["refractory_us"] == 0 and over["pos_thres"] == 0.3


def test_bgr_and_list_inputs():
  bgr = np.stack([textured_video(6, (24, 24), seed=s) for s in range(3)], axis=-1)
  gray = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in bgr])
  ts = np.arange(6) * 10_000
  a = simulate_events(bgr, ts)
  b = simulate_events(gray, ts)
  c = simulate_events(list(gray), ts.tolist())
  assert len(a) > 0
  for e in (b, c):
    np.testing.assert_array_equal(a.t, e.t)
    np.testing.assert_array_equal(a.x, e.x)
    np.testing.assert_array_equal(a.p, e.p)


GOOD = np.zeros((3, 4, 5), np.uint8)
TS = np.array([0, 10, 20])


@pytest.mark.parametrize("frames,ts,match", [
    (GOOD.astype(np.float32), TS, "uint8"),
    (np.zeros((3, 4, 5, 4), np.uint8), TS, "BGR"),
    (np.zeros((3, 20), np.uint8), TS, "gray"),
    (GOOD[:1], TS[:1], "at least 2"),
    (GOOD, np.array([0, 10, 10]), "strictly increasing"),
    (GOOD, np.array([0, 20, 10]), "strictly increasing"),
    (GOOD, np.array([0.0, np.nan, 20.0]), "NaN"),
    (GOOD, np.array([0.0, 10.5, 20.0]), "whole"),
    (GOOD, TS[:2], "shape"),
    ([GOOD[0], GOOD[1], np.zeros((4, 6), np.uint8)], TS, "frame 2"),
])
def test_bad_input(frames, ts, match):
  with pytest.raises(ValueError, match=match):
    simulate_events(frames, ts)


def test_bad_parameters():
  with pytest.raises(TypeError, match="valid names.*pos_thres"):
    simulate_events(GOOD, TS, pos_threshold=0.3)
  with pytest.raises(ValueError, match="clean"):
    simulate_events(GOOD, TS, preset="noisy")
  with pytest.raises(ValueError, match="pos_thres"):
    simulate_events(GOOD, TS, pos_thres=-0.1)
  with pytest.raises(ValueError, match="log_mapping"):
    SimulatorParams(log_mapping="ln")
  with pytest.raises(ValueError, match="seed"):
    simulate_events(GOOD, TS, seed=-1)


def test_streaming_simulator_equals_batch():
  from evalign_jax.events import scenes
  from evalign_jax.events.simulator import EventSimulator
  frames, ts = scenes.moving_texture_video(24, 32, 6, seed=3)
  whole = simulate_events(frames, ts, preset="v2e_default", seed=5)
  sim = EventSimulator(frames[0], int(ts[0]), preset="v2e_default", seed=5)
  parts = [sim.advance(f, int(t)) for f, t in zip(frames[1:], ts[1:])]
  for field in "txyp":
    np.testing.assert_array_equal(np.concatenate([getattr(e, field) for e in parts]),
                                  getattr(whole, field))
  assert sim.metadata() == whole.metadata["simulator"]
  with pytest.raises(ValueError, match="increase"):
    sim.advance(frames[0], int(ts[-1]))
