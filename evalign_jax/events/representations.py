"""Float64 numpy references for the three event representations.

These are written for clarity, not speed: they define what the JAX renderers in
`representations_jax` must compute, and tests hold the two together.

All return float64 (C, H, W) arrays in the sensor frame (H, W = `events.sensor_size`).

Voxel-grid conventions (both bilinear in time, polarity as -1/+1):
- "e2vid" (E2VID, EV-FlowNet; the default): tau = (B - 1) (t - t0) / (t1 - t0). Every event's unit
  mass lands in the grid; an event at t1 puts all of it in bin B - 1.
- "tonic" (tonic's ToVoxelGrid, which the paper's code used): tau = B (t - t0) / (t1 - t0), and any
  weight that would land in bin B is dropped, so an event at t1 vanishes and a uniform stream keeps
  about (B - 0.5) / B of its mass.
t0, t1 default to the first and last event; an explicit window (t_start_us, t_end_us) may be given.
If t1 == t0 the span is taken as 1 µs (E2VID's rule), so all events fall into bin 0.
"""

from __future__ import annotations

import numpy as np

from evalign_jax.events.events import Events

VOXEL_CONVENTIONS = ("e2vid", "tonic")


def event_frame(events: Events) -> np.ndarray:
  """Per-polarity event counts.

  Returns:
    (2, H, W) float64; channel 0 counts OFF events (p = 0), channel 1 ON events (p = 1).
  """
  h, w = events.sensor_size
  out = np.zeros((2, h, w), np.float64)
  np.add.at(out, (events.p.astype(np.intp), events.y.astype(np.intp), events.x.astype(np.intp)),
            1.0)
  return out


def voxel_grid(events: Events, num_bins: int = 5, convention: str = "e2vid", *,
               t_start_us: int | None = None, t_end_us: int | None = None) -> np.ndarray:
  """Bilinear-in-time voxel grid (see the module docstring for the conventions).

  Args:
    events: the window's events.
    num_bins: B, the number of temporal bins.
    convention: "e2vid" or "tonic".
    t_start_us, t_end_us: the time span mapped onto the bins; default first/last event.

  Returns:
    (B, H, W) float64 sums of +-1 polarity weights.
  """
  if convention not in VOXEL_CONVENTIONS:
    raise ValueError(f"convention must be one of {VOXEL_CONVENTIONS}, got {convention!r}")
  if num_bins < 1 or (convention == "e2vid" and num_bins < 2):
    raise ValueError(f"num_bins={num_bins} is too small for convention {convention!r}")
  h, w = events.sensor_size
  out = np.zeros((num_bins, h, w), np.float64)
  if len(events) == 0:
    return out
  t0 = events.t[0] if t_start_us is None else t_start_us
  t1 = events.t[-1] if t_end_us is None else t_end_us
  span = float(t1 - t0) if t1 != t0 else 1.0
  scale = (num_bins - 1) if convention == "e2vid" else num_bins
  tau = scale * (events.t - t0).astype(np.float64) / span
  left = np.floor(tau).astype(np.intp)
  frac = tau - left
  pol = np.where(events.p > 0, 1.0, -1.0)
  y, x = events.y.astype(np.intp), events.x.astype(np.intp)
  for b, weight in ((left, pol * (1.0 - frac)), (left + 1, pol * frac)):
    keep = (b >= 0) & (b < num_bins)
    np.add.at(out, (b[keep], y[keep], x[keep]), weight[keep])
  return out


def time_surface(events: Events, tau_us: float = 30_000.0, *,
                 t_end_us: int | None = None) -> np.ndarray:
  """Exponentially decayed time of the latest event per pixel and polarity.

  Value exp(-(t_end - t_last) / tau) at pixels that saw an event up to t_end, 0 elsewhere.

  Args:
    events: the window's events; events after t_end are ignored.
    tau_us: decay constant in µs.
    t_end_us: the time the surface is read at; default the last event's time.

  Returns:
    (2, H, W) float64 in [0, 1]; channel 0 OFF, channel 1 ON.
  """
  if tau_us <= 0:
    raise ValueError(f"tau_us must be positive, got {tau_us}")
  h, w = events.sensor_size
  out = np.zeros((2, h, w), np.float64)
  if len(events) == 0:
    return out
  t_end = events.t[-1] if t_end_us is None else t_end_us
  e = events[events.t <= t_end]
  # The decay is increasing in t, so the per-pixel maximum is the latest event's value.
  np.maximum.at(out, (e.p.astype(np.intp), e.y.astype(np.intp), e.x.astype(np.intp)),
                np.exp(-(t_end - e.t).astype(np.float64) / tau_us))
  return out
