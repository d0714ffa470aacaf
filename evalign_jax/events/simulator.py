"""Video-to-events simulator: ESIM's per-crossing algorithm with v2e's pixel non-idealities.

`simulate_events(frames, timestamps_us)` turns gray (or BGR) uint8 frames into an `Events` stream.
Every pixel is simulated independently; all work is vectorised over pixels and events, with a
Python loop only over frame intervals.

Algorithm (per pixel, all log quantities in natural-log units):

1. Log mapping, float64: v2e's lin-log (`x·ln(c)/c` for x <= c DN, `ln(x)` above, c = 20) or
   ESIM's `log(I/255 + log_eps)`.
2. First frame: the reference `ref = L_0`; thresholds `Cp, Cn ~ N(nominal, sigma_thres)`, clipped
   at >= 0.01 and drawn once per pixel per simulation (v2e's fixed-pattern noise; ESIM instead
   redraws every frame); a log-normal leak rate `leak_rate_hz·10^(noise_rate_cov_decades·N(0,1))`.
   No events.
3. Each interval (L0, t0) -> (L1, t1), dt = t1 - t0:
   * Leak (v2e) lowers the reference by `a = dt·leak_rate_px·(1 - jitter·N(0,1))·Cp`. The
     reference drifts linearly, so the signal `D(t) = L(t) - ref(t)` is linear in t from
     `D0 = L0 - ref` to `D1 = L1 - ref + a`.
   * ON crossings when D1 >= Cp: n = floor(D1/Cp), the k-th at level k·Cp and time
     `t0 + (k·Cp - D0)/(D1 - D0)·dt` (ESIM's per-crossing linear interpolation; v2e instead
     spreads events on a shared time grid). OFF is symmetric with -k·Cn.
     Then `ref <- ref - a + n_on·Cp - n_off·Cn`, so |L1 - ref| < C afterwards; this invariant
     keeps D0 in (-Cn, Cp) and the crossing times ordered inside [t0, t1].
   * Refractory period R (ESIM semantics): a crossing is emitted only if it comes >= R after the
     pixel's last emitted event; dropped crossings still advance the reference. One pixel's
     crossings within an interval are equally spaced, so the kept ones are found in closed form.
   * Shot noise (v2e): per pixel, ON with probability
     `(rate/2)·dt·(1 - 0.75·(I1+20)/275)·(pos_thres/Cp)` and OFF likewise, strongest in the dark.
     Noise events get a uniform time in (t0, t1], reset the pixel's reference to L1 (as v2e), and
     neither check nor restart the refractory period.
   * Optional linear upsampling: with `upsample_max_px` set, the 99th percentile of the Farneback
     flow magnitude between the two frames sets n_sub = clip(ceil(p99/upsample_max_px), 1,
     upsample_max_factor) sub-intervals, with frames interpolated linearly in intensity (DN)
     before the log mapping. Step 3 then runs per sub-interval.
4. Times are kept as float64 µs until the end, then rounded to the nearest µs and clipped into
   the interval (t0, t1], so all timestamps lie in (t_0, t_{T-1}].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np

from evalign_jax.events.events import Events

_MIN_THRES = 0.01  # v2e's floor on per-pixel thresholds.
_SHOT_NOISE_INTEN_FACTOR = 0.25  # v2e: shot noise at white is 0.25x that in the dark.
_EPS = 1e-9  # Relative slack so float noise in t_k does not flip refractory decisions.
_LOG_MAPPINGS = ("linlog", "log")


@dataclasses.dataclass(frozen=True)
class SimulatorParams:
  """Every parameter of the simulator.

  Attributes:
    pos_thres: nominal ON contrast threshold, log units (natural log).
    neg_thres: nominal OFF contrast threshold, log units.
    sigma_thres: std of the per-pixel thresholds, log units; drawn once per pixel, clipped >= 0.01.
    log_mapping: "linlog" (v2e: linear below `linlog_threshold` DN, ln above) or "log" (ESIM:
      ln(I/255 + log_eps)).
    linlog_threshold: DN (0-255 gray) where lin-log switches from linear to log.
    log_eps: offset added to I/255 in the "log" mapping, unitless.
    refractory_us: refractory period, µs; 0 disables it.
    leak_rate_hz: mean leak event rate per pixel, Hz (spurious ON events).
    leak_jitter_fraction: relative std of the leak per pixel and interval, unitless.
    noise_rate_cov_decades: std of the per-pixel leak rate, decades (log10 units).
    shot_noise_rate_hz: shot-noise rate per pixel (ON + OFF), Hz, at zero intensity.
    upsample_max_px: if set, the largest motion in px (99th-percentile Farneback flow) allowed
      between simulated frames; frame pairs are linearly interpolated to honour it.
    upsample_max_factor: most sub-intervals per frame interval when upsampling.
  """

  pos_thres: float = 0.2
  neg_thres: float = 0.2
  sigma_thres: float = 0.03
  log_mapping: str = "linlog"
  linlog_threshold: float = 20.0
  log_eps: float = 1e-3
  refractory_us: float = 500.0
  leak_rate_hz: float = 0.01
  leak_jitter_fraction: float = 0.1
  noise_rate_cov_decades: float = 0.1
  shot_noise_rate_hz: float = 0.001
  upsample_max_px: float | None = None
  upsample_max_factor: int = 16

  def __post_init__(self):
    # Coerce to plain Python numbers so `dataclasses.asdict` is JSON-serialisable.
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name == "log_mapping":
        if v not in _LOG_MAPPINGS:
          raise ValueError(f"log_mapping must be one of {_LOG_MAPPINGS}, got {v!r}")
        continue
      if f.name == "upsample_max_px" and v is None:
        continue
      try:
        num = float(v)
      except (TypeError, ValueError):
        raise ValueError(f"{f.name} must be a number, got {v!r}") from None
      if not math.isfinite(num):
        raise ValueError(f"{f.name} must be finite, got {v!r}")
      if f.name == "upsample_max_factor":
        if num != int(num) or num < 1:
          raise ValueError(f"upsample_max_factor must be an integer >= 1, got {v!r}")
        num = int(num)
      object.__setattr__(self, f.name, num)
    for name in ("pos_thres", "neg_thres"):
      if getattr(self, name) < _MIN_THRES:
        raise ValueError(f"{name} must be >= {_MIN_THRES}, got {getattr(self, name)}")
    for name in ("linlog_threshold", "log_eps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
    for name in ("sigma_thres", "refractory_us", "leak_rate_hz", "leak_jitter_fraction",
                 "noise_rate_cov_decades", "shot_noise_rate_hz"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.upsample_max_px is not None and self.upsample_max_px <= 0:
      raise ValueError(f"upsample_max_px must be > 0 or None, got {self.upsample_max_px}")


PRESETS: dict[str, SimulatorParams] = {
    # v2e's command-line defaults (the best guess for the paper's data).
    "v2e_default": SimulatorParams(),
    # v2e's "clean" preset: mild mismatch, no noise, no refractory period.
    "clean": SimulatorParams(sigma_thres=0.02, refractory_us=0.0, leak_rate_hz=0.0,
                             leak_jitter_fraction=0.0, noise_rate_cov_decades=0.0,
                             shot_noise_rate_hz=0.0),
}


def log_intensity(intensity, params: SimulatorParams) -> np.ndarray:
  """Maps gray levels (DN, 0-255, any shape) to float64 log intensity per `params.log_mapping`."""
  x = np.asarray(intensity, dtype=np.float64)
  if params.log_mapping == "log":
    return np.log(x / 255.0 + params.log_eps)
  c = params.linlog_threshold
  # max() keeps log() away from 0 DN; those pixels take the linear branch anyway.
  return np.where(x <= c, x * (math.log(c) / c), np.log(np.maximum(x, c)))


def simulate_events(frames, timestamps_us, *, preset: str = "v2e_default", seed: int = 0,
                    **overrides) -> Events:
  """Simulates an event camera watching a video.

  Args:
    frames: (T, H, W) uint8 gray or (T, H, W, 3) uint8 BGR frames, or a list of such frames.
    timestamps_us: (T,) strictly increasing integer frame times, µs. T >= 2.
    preset: a key of `PRESETS`.
    seed: seeds `np.random.default_rng`; fixes threshold mismatch, leak and shot noise.
    **overrides: `SimulatorParams` fields replacing the preset's values.

  Returns:
    Events on an (H, W) sensor, sorted by t, with t in (t_0, t_{T-1}] µs, and
    `metadata["simulator"]` holding every parameter used, the preset, seed and counts.
  """
  frames, _ = _check_frames(frames)
  ts = _check_timestamps(timestamps_us, len(frames))
  sim = EventSimulator(frames[0], int(ts[0]), preset=preset, seed=seed, **overrides)
  parts = [sim.advance(frame, int(t)) for frame, t in zip(frames[1:], ts[1:])]
  out = Events.concatenate(parts)
  return Events(out.t, out.x, out.y, out.p, out.sensor_size, {"simulator": sim.metadata()})


class EventSimulator:
  """The simulator as a stream: feed frames one at a time, get each interval's events.

  Memory stays at one frame's state however long the video, so builders can simulate long
  videos frame by frame. `simulate_events` is this over a whole array of frames.
  """

  def __init__(self, first_frame: np.ndarray, t0_us: int, *, preset: str = "v2e_default",
               seed: int = 0, **overrides):
    """first_frame: (H, W) uint8 gray or (H, W, 3) uint8 BGR at time t0_us (no events)."""
    self.params = resolve_params(preset, **overrides)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    self.preset, self.seed = preset, int(seed)
    (first,), (self.h, self.w) = _check_frames([first_frame], 1)
    self.lut = log_intensity(np.arange(256), self.params)  # uint8 frames map through a table.
    self.t0 = self.t_prev = int(t0_us)
    self.g0 = _gray(first)
    self.l0 = cv2.LUT(self.g0, self.lut).ravel()  # 10x faster than lut[g0].
    self.pixels = _PixelArray(self.params, self.l0, np.random.default_rng(self.seed))
    self.num_frames, self.num_subintervals = 1, 0

  def advance(self, frame: np.ndarray, t_us: int) -> Events:
    """The events of the interval (t_prev, t_us] ending at `frame`, sorted by t."""
    (frame,), size = _check_frames([frame], 1)
    if size != (self.h, self.w):
      raise ValueError(f"frame size {size} differs from the first frame's {(self.h, self.w)}")
    if int(t_us) <= self.t_prev:
      raise ValueError(f"timestamps must increase: {t_us} µs after {self.t_prev} µs")
    params, pixels = self.params, self.pixels
    # Float µs since t0 keep sub-µs precision inside the interval.
    ta, tb = float(self.t_prev - self.t0), float(int(t_us) - self.t0)
    g0, l0 = self.g0, self.l0
    g1 = _gray(frame)
    l1 = cv2.LUT(g1, self.lut).ravel()
    n_sub = _num_substeps(g0, g1, params)
    parts = []
    if n_sub == 1:
      parts.append(pixels.step(l0, l1, g1.ravel(), ta, tb))
    else:
      i0, i1 = g0.ravel().astype(np.float64), g1.ravel().astype(np.float64)
      l_prev, s_prev = l0, ta
      for j in range(1, n_sub + 1):
        if j < n_sub:
          i_j = i0 + (i1 - i0) * (j / n_sub)
          l_j, s_j = log_intensity(i_j, params), ta + (tb - ta) * (j / n_sub)
        else:
          i_j, l_j, s_j = i1, l1, tb
        parts.append(pixels.step(l_prev, l_j, i_j, s_prev, s_j))
        l_prev, s_prev = l_j, s_j
    t, order = _round_and_sort(np.concatenate([q[0] for q in parts]), ta, tb)
    pix = np.concatenate([q[1] for q in parts])[order]
    p = np.concatenate([q[2] for q in parts])[order]
    self.g0, self.l0, self.t_prev = g1, l1, int(t_us)
    self.num_frames += 1
    self.num_subintervals += n_sub
    return Events(t + self.t0 + int(ta), pix % self.w, pix // self.w, p, (self.h, self.w))

  def metadata(self) -> dict:
    """Every parameter used, the preset, seed and counts so far (JSON-serialisable)."""
    return {"preset": self.preset, "seed": self.seed, **dataclasses.asdict(self.params),
            "num_frames": self.num_frames, "num_subintervals": self.num_subintervals}


def resolve_params(preset: str = "v2e_default", **overrides) -> SimulatorParams:
  """The preset's parameters with `overrides` applied; unknown names raise TypeError."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
  valid = [f.name for f in dataclasses.fields(SimulatorParams)]
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise TypeError(f"unknown simulator parameter(s) {unknown}; valid names: {valid}")
  return dataclasses.replace(PRESETS[preset], **overrides)


class _PixelArray:
  """Per-pixel simulator state (flat arrays over the H*W pixels) and the interval step."""

  def __init__(self, params: SimulatorParams, l0: np.ndarray, rng: np.random.Generator):
    self.params, self.rng = params, rng
    n = l0.size
    self.ref = l0.copy()
    self.cp = self._thresholds(params.pos_thres, n)
    self.cn = self._thresholds(params.neg_thres, n)
    self.leak_per_us = None  # Leak in log units per µs, before jitter; None if disabled.
    if params.leak_rate_hz > 0:
      rate = np.full(n, params.leak_rate_hz)
      if params.noise_rate_cov_decades > 0:
        rate *= np.exp(math.log(10) * params.noise_rate_cov_decades * rng.standard_normal(n))
      self.leak_per_us = rate * 1e-6 * self.cp
    self.last_t = np.full(n, -np.inf) if params.refractory_us > 0 else None
    if params.shot_noise_rate_hz > 0:
      self.on_scale = params.pos_thres / self.cp  # v2e: low-threshold pixels are noisier.
      self.off_scale = params.neg_thres / self.cn
      self.max_scale = float(np.max(self.on_scale + self.off_scale))

  def _thresholds(self, nominal: float, n: int) -> np.ndarray:
    if self.params.sigma_thres == 0:
      return np.full(n, nominal)
    c = nominal + self.params.sigma_thres * self.rng.standard_normal(n)
    return np.maximum(c, _MIN_THRES)

  def step(self, l0, l1, i1, ta: float, tb: float):
    """Simulates one (sub-)interval.

    Args:
      l0, l1: (H*W,) float64 log intensity at the start and end.
      i1: (H*W,) gray level at the end, DN (for the shot-noise intensity dependence).
      ta, tb: start and end times, float µs since t_0.

    Returns:
      (t float64 µs since t_0, flat pixel index int64, polarity uint8), unsorted.
    """
    p, ref, dt = self.params, self.ref, tb - ta
    if self.leak_per_us is not None:
      a = self.leak_per_us * dt
      if p.leak_jitter_fraction > 0:
        # float32 normals: ~20% cheaper, and the jitter needs no more precision.
        a *= 1.0 - p.leak_jitter_fraction * self.rng.standard_normal(a.size, np.float32)
      ref -= a  # ref now holds ref(t1); D1 = L1 - ref(t1).
    d1 = l1 - ref
    idx = np.flatnonzero((d1 >= self.cp) | (d1 <= -self.cn))
    d1 = d1[idx]
    d0 = l0[idx] - ref[idx]  # D0 = L0 - ref(t0) = L0 - ref(t1) - a.
    if self.leak_per_us is not None:
      d0 -= a[idx]
    on = d1 > 0
    sc = np.where(on, self.cp[idx], -self.cn[idx])  # Signed threshold: the level step.
    n = np.floor(d1 / sc).astype(np.int64)  # >= 1 for every selected pixel.
    slope = dt / (d1 - d0)  # µs per log unit; D1 != D0 since |D0| < C <= |D1|.
    ref[idx] += n * sc  # All crossings move the reference, emitted or not (ESIM).

    if self.last_t is None:
      k0, m, keep = np.ones_like(n), np.ones_like(n), n
    else:
      # Crossings are equally spaced by s; keep the first at >= last + R, then every m-th.
      r = p.refractory_us
      s = np.abs(sc * slope)
      t_first = ta + (sc - d0) * slope
      with np.errstate(invalid="ignore"):
        skip = np.ceil((self.last_t[idx] + r - t_first) / s - _EPS)
      k0 = 1 + np.maximum(skip, 0).astype(np.int64)  # -inf (never fired) -> 0 skipped.
      m = np.maximum(np.ceil(r / s - _EPS), 1).astype(np.int64)
      keep = np.where(k0 <= n, (n - k0) // m + 1, 0)
      fired = keep > 0
      k_last = (k0 + m * (keep - 1))[fired]
      self.last_t[idx[fired]] = np.clip(ta + (k_last * sc[fired] - d0[fired]) * slope[fired],
                                        ta, tb)

    rep = np.repeat(np.arange(idx.size), keep)
    j = np.arange(rep.size) - np.repeat(np.cumsum(keep) - keep, keep)
    k = k0[rep] + m[rep] * j
    t = np.clip(ta + (k * sc[rep] - d0[rep]) * slope[rep], ta, tb)
    out = (t, idx[rep], on[rep].astype(np.uint8))
    if p.shot_noise_rate_hz > 0:
      out = tuple(np.concatenate(z) for z in zip(out, self._shot_noise(l1, i1, ta, tb)))
    return out

  def _shot_noise(self, l1, i1, ta, tb):
    """v2e shot noise: exact per-pixel Bernoulli draws without touching every pixel."""
    rng, n_px = self.rng, self.ref.size
    base = 0.5 * self.params.shot_noise_rate_hz * (tb - ta) * 1e-6
    q = base * self.max_scale  # Upper bound of p_on + p_off over pixels.
    if q >= 0.25:  # Dense: one uniform per pixel is cheaper than sampling candidates.
      cand, q = np.arange(n_px), 1.0
    else:  # Candidates are Bernoulli(q); thinning by p_i/q below makes them Bernoulli(p_i).
      cand = rng.choice(n_px, rng.binomial(n_px, q), replace=False)
    inten01 = (i1[cand].astype(np.float64) + 20.0) / 275.0
    f = base * ((_SHOT_NOISE_INTEN_FACTOR - 1.0) * inten01 + 1.0)
    p_on, p_off = f * self.on_scale[cand], f * self.off_scale[cand]
    total = p_on + p_off
    if q == 1.0 and np.any(total > 1):  # Absurd rates: saturate, keeping the ON/OFF ratio.
      scale = np.minimum(1.0, 1.0 / np.maximum(total, 1e-300))
      p_on, total = p_on * scale, total * scale
    u = rng.random(cand.size) * q
    hit = u < total
    px, pol = cand[hit], (u[hit] < p_on[hit]).astype(np.uint8)
    t = ta + (1.0 - rng.random(px.size)) * (tb - ta)  # Uniform in (ta, tb].
    self.ref[px] = l1[px]  # v2e resets a noisy pixel's reference to its current value.
    return t, px, pol


def _round_and_sort(t: np.ndarray, ta: float, tb: float) -> tuple[np.ndarray, np.ndarray]:
  """Rounds float µs times to whole µs in (ta, tb] and sorts them.

  Returns:
    (sorted int64 µs after ta, the permutation that sorts). Ties keep their input order.
  """
  dt = int(tb - ta)  # ta, tb are whole µs stored as float.
  r = np.clip(np.rint(t - ta).astype(np.int64), 1, dt)
  n = r.size
  if dt * max(n, 1) < 2**62:
    # Unique keys make the fast (unstable) argsort give exactly the stable order.
    order = np.argsort(r * n + np.arange(n))
  else:
    order = np.argsort(r, kind="stable")
  return r[order], order


def _num_substeps(g0: np.ndarray, g1: np.ndarray, params: SimulatorParams) -> int:
  """Sub-intervals for one frame pair: 1, or enough that motion is <= upsample_max_px each."""
  if params.upsample_max_px is None:
    return 1
  flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 15, 3, 5, 1.2, 0)
  p99 = float(np.percentile(np.hypot(flow[..., 0], flow[..., 1]), 99))
  return int(np.clip(math.ceil(p99 / params.upsample_max_px), 1, params.upsample_max_factor))


def _check_frames(frames, min_frames: int = 2) -> tuple[Sequence[np.ndarray], tuple[int, int]]:
  """Validates frames (array or list); returns an indexable sequence and (H, W)."""
  if isinstance(frames, np.ndarray):
    if frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
      raise ValueError(f"frames must be (T, H, W) gray or (T, H, W, 3) BGR, got {frames.shape}")
    seq, shape = frames, frames.shape[1:]
  else:
    try:
      seq = [np.asarray(f) for f in frames]
    except TypeError:
      raise ValueError(f"frames must be an array or a list of arrays, got {type(frames)}") from None
    shape = seq[0].shape if seq else None
    for i, f in enumerate(seq):
      if f.dtype != np.uint8:
        raise ValueError(f"frame {i} must be uint8, got dtype {f.dtype}")
      if f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[-1] != 3):
        raise ValueError(f"frame {i} must be (H, W) gray or (H, W, 3) BGR, got {f.shape}")
      if f.shape != shape:
        raise ValueError(f"frame {i} has shape {f.shape}, frame 0 has {shape}")
  if len(seq) < min_frames:
    raise ValueError(f"need at least {min_frames} frames, got {len(seq)}")
  h, w = shape[:2]
  if h == 0 or w == 0:
    raise ValueError(f"frames must be non-empty, got (H, W) = {(h, w)}")
  return seq, (h, w)


def _check_timestamps(timestamps_us, n_frames: int) -> np.ndarray:
  """Validates frame times: (T,) strictly increasing whole µs; returns int64."""
  ts = np.asarray(timestamps_us)
  if ts.shape != (n_frames,):
    raise ValueError(f"timestamps_us must have shape ({n_frames},), got {ts.shape}")
  if np.issubdtype(ts.dtype, np.floating):
    if not np.all(np.isfinite(ts)):
      raise ValueError("timestamps_us contains NaN or Inf")
    if np.any(ts != np.round(ts)):
      raise ValueError("timestamps_us must be whole microseconds")
  elif not np.issubdtype(ts.dtype, np.integer):
    raise ValueError(f"timestamps_us must be integers (µs), got dtype {ts.dtype}")
  ts = ts.astype(np.int64)
  bad = np.flatnonzero(np.diff(ts) <= 0)
  if bad.size:
    i = int(bad[0]) + 1
    raise ValueError(f"timestamps_us must be strictly increasing; frame {i} is at {ts[i]} µs, "
                     f"frame {i - 1} at {ts[i - 1]} µs")
  return ts


def _gray(frame: np.ndarray) -> np.ndarray:
  """(H, W) uint8 gray; BGR converts as v2e does (cv2 BGR2GRAY)."""
  if frame.ndim == 3:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
  return np.ascontiguousarray(frame)
