"""Representations: hand-computed cases pin each convention; JAX equals the float64 reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalign_jax.events import Events
from evalign_jax.events import representations as ref
from evalign_jax.events import representations_jax as rj


def one_pixel(ts, ps, sensor_size=(3, 4), x=2, y=1):
  n = len(ts)
  return Events(np.array(ts), np.full(n, x), np.full(n, y), np.array(ps), sensor_size)


def assert_close_rel(actual, expected, rtol=1e-5):
  """Element-wise within rtol of the reference, relative to its largest magnitude."""
  expected = np.asarray(expected)
  atol = rtol * max(np.abs(expected).max(), 1e-12)
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


# --- hand-computed cases --------------------------------------------------------------------

# One event in a [0, 1000] µs window, B = 5.
# e2vid: tau = 4 t / 1000; tonic: tau = 5 t / 1000; weights (1 - frac) left, frac right.
HAND_CASES = [
    # t, convention, {bin: weight}
    (300, "e2vid", {1: 0.8, 2: 0.2}),     # tau = 1.2
    (300, "tonic", {1: 0.5, 2: 0.5}),     # tau = 1.5
    (950, "e2vid", {3: 0.2, 4: 0.8}),     # tau = 3.8
    (950, "tonic", {4: 0.25}),            # tau = 4.75: the right 0.75 falls in bin 5, dropped
    (1000, "e2vid", {4: 1.0}),            # window end keeps its mass in the last bin
    (1000, "tonic", {}),                  # tau = 5: dropped entirely
    (0, "e2vid", {0: 1.0}),
    (0, "tonic", {0: 1.0}),
]


@pytest.mark.parametrize("t,convention,expected", HAND_CASES)
@pytest.mark.parametrize("polarity", [0, 1])
def test_voxel_single_event_by_hand(t, convention, expected, polarity):
  ev = one_pixel([t], [polarity])
  sign = 1.0 if polarity else -1.0
  want = np.zeros((5, 3, 4))
  for b, w in expected.items():
    want[b, 1, 2] = sign * w
  got = ref.voxel_grid(ev, 5, convention, t_start_us=0, t_end_us=1000)
  np.testing.assert_allclose(got, want, atol=1e-12)
  got_jax = rj.voxel_grid(ev.pad(8, t_ref_us=0), (3, 4), 5, convention, t_start_us=0,
                          t_end_us=1000)
  np.testing.assert_allclose(got_jax, want, atol=1e-6)


def test_voxel_default_window_is_first_to_last_event():
  # OFF at t=100 (tau 0) and ON at t=600 (the window end) on two pixels.
  ev = Events([100, 600], [0, 1], [0, 0], [0, 1], (1, 2))
  e2vid = ref.voxel_grid(ev, 5, "e2vid")
  assert e2vid[0, 0, 0] == -1.0 and e2vid[4, 0, 1] == 1.0 and np.abs(e2vid).sum() == 2.0
  tonic = ref.voxel_grid(ev, 5, "tonic")
  assert tonic[0, 0, 0] == -1.0 and np.abs(tonic).sum() == 1.0  # the last event is dropped


def test_voxel_equal_timestamps_go_to_bin_zero():
  ev = one_pixel([500, 500, 500], [1, 1, 0])
  for convention in ("e2vid", "tonic"):
    grid = ref.voxel_grid(ev, 5, convention)
    assert grid[0, 1, 2] == 1.0 and np.abs(grid[1:]).sum() == 0.0
    np.testing.assert_allclose(rj.voxel_grid(ev.pad(4), (3, 4), 5, convention), grid)


def test_voxel_mass(random_events):
  ev = random_events(20_000, (16, 16), seed=3)
  pol_sum = np.where(ev.p > 0, 1.0, -1.0).sum()
  np.testing.assert_allclose(ref.voxel_grid(ev, 5, "e2vid").sum(), pol_sum, atol=1e-8)
  # tonic keeps ~ (B - 1/2) / B of the unsigned mass of a uniform stream.
  ev_on = Events(ev.t, ev.x, ev.y, np.ones(len(ev)), ev.sensor_size)
  kept = ref.voxel_grid(ev_on, 5, "tonic").sum() / len(ev)
  assert abs(kept - 0.9) < 0.01


def test_event_frame_by_hand():
  ev = Events([1, 2, 3, 4], [0, 0, 3, 0], [1, 1, 2, 1], [1, 1, 0, 0], (3, 4))
  want = np.zeros((2, 3, 4))
  want[1, 1, 0] = 2
  want[0, 2, 3] = 1
  want[0, 1, 0] = 1
  np.testing.assert_array_equal(ref.event_frame(ev), want)
  np.testing.assert_array_equal(rj.event_frame(ev.pad(6), (3, 4)), want)


def test_time_surface_by_hand():
  # ON at t=0 and t=500 at (x=2, y=1); OFF at t=1000 at (x=0, y=0); ON at t=1500 after t_end.
  ev = Events([0, 500, 1000, 1500], [2, 2, 0, 3], [1, 1, 0, 2], [1, 1, 0, 1], (3, 4))
  want = np.zeros((2, 3, 4))
  want[1, 1, 2] = np.exp(-0.5)   # latest ON at 500, read at 1000 with tau 1000
  want[0, 0, 0] = 1.0
  got = ref.time_surface(ev, tau_us=1000.0, t_end_us=1000)
  np.testing.assert_allclose(got, want, atol=1e-12)
  got_jax = rj.time_surface(ev.pad(8, t_ref_us=0), (3, 4), 1000.0, t_end_us=1000)
  np.testing.assert_allclose(got_jax, want, rtol=1e-6)


# --- JAX against the reference on random streams ----------------------------------------------

SIZES = [((260, 346), 30_000), ((48, 64), 5_000), ((7, 5), 3_000)]


@pytest.mark.parametrize("sensor_size,n", SIZES)
@pytest.mark.parametrize("seed", [0, 1])
def test_jax_matches_reference(random_events, sensor_size, n, seed):
  ev = random_events(n, sensor_size, seed=seed)
  padded = ev.pad(n + 123)
  assert_close_rel(rj.event_frame(padded, sensor_size), ref.event_frame(ev))
  for conv in ("e2vid", "tonic"):
    assert_close_rel(rj.voxel_grid(padded, sensor_size, 5, conv), ref.voxel_grid(ev, 5, conv))
  assert_close_rel(rj.time_surface(padded, sensor_size, 10_000.0),
                   ref.time_surface(ev, tau_us=10_000.0))


def test_jax_jit_vmap_with_traced_windows(random_events):
  sensor_size, cap = (20, 30), 4_000
  streams = [random_events(n, sensor_size, seed=s) for s, n in enumerate([4_000, 1_500, 1])]
  t_ref = streams[0].t[0] - 5_000
  # Explicit windows that extend beyond the events on both sides.
  starts = np.array([int(e.t[0] - t_ref) - 700 for e in streams], np.int32)
  ends = np.array([int(e.t[-1] - t_ref) + 900 for e in streams], np.int32)
  batch = jax.tree.map(lambda *a: np.stack(a), *[e.pad(cap, t_ref_us=t_ref) for e in streams])

  @jax.jit
  def render(batch, starts, ends):
    vox = jax.vmap(functools.partial(rj.voxel_grid, sensor_size=sensor_size, num_bins=4,
                                     convention="tonic"))(batch, t_start_us=starts,
                                                          t_end_us=ends)
    ts = jax.vmap(lambda e, t1: rj.time_surface(e, sensor_size, 2_000.0, t_end_us=t1))(
        batch, ends)
    return vox, ts

  vox, ts = render(batch, starts, ends)
  for i, e in enumerate(streams):
    s, t1 = int(starts[i]) + t_ref, int(ends[i]) + t_ref
    assert_close_rel(vox[i], ref.voxel_grid(e, 4, "tonic", t_start_us=s, t_end_us=t1))
    assert_close_rel(ts[i], ref.time_surface(e, tau_us=2_000.0, t_end_us=t1))


def test_jax_ignores_padding_and_off_sensor_events(random_events):
  ev = random_events(500, (10, 12), seed=7)
  padded = ev.pad(600)
  # Garbage in the padding slots and valid events pushed off the sensor must not count.
  junk = padded._replace(
      t=padded.t.copy(), x=padded.x.copy(), y=padded.y.copy())
  junk.x[500:], junk.y[500:], junk.t[500:] = 3, 4, 10**6
  junk.x[:50] += 12            # off the right edge
  junk.y[50:100] = -1 - junk.y[50:100]   # above the top edge
  kept = ev[100:]
  # Use the kept stream's own bounds so the default window matches.
  for conv in ("e2vid", "tonic"):
    assert_close_rel(rj.voxel_grid(junk, (10, 12), 3, conv), ref.voxel_grid(kept, 3, conv))
  assert_close_rel(rj.event_frame(junk, (10, 12)), ref.event_frame(kept))
  assert_close_rel(rj.time_surface(junk, (10, 12), 5_000.0),
                   ref.time_surface(kept, tau_us=5_000.0))


def test_empty_window_renders_zeros():
  empty = Events.empty((4, 5)).pad(16)
  assert float(jnp.abs(rj.voxel_grid(empty, (4, 5))).sum()) == 0.0
  assert float(jnp.abs(rj.time_surface(empty, (4, 5))).sum()) == 0.0
  assert float(jnp.abs(rj.event_frame(empty, (4, 5))).sum()) == 0.0
