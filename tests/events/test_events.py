"""The Events container: validation, selection and padding."""

import numpy as np
import pytest

from evalign_jax.events import EventFileError, Events


def test_from_arrays_normalises_and_validates():
  ev = Events.from_arrays([5, 7, 9], [0, 1, 2], [1, 1, 0], [-1, 1, -1], (2, 3), source="s.npz")
  assert ev.t.dtype == np.int64 and ev.x.dtype == np.uint16 and ev.p.dtype == np.uint8
  np.testing.assert_array_equal(ev.p, [0, 1, 0])
  np.testing.assert_array_equal(Events.from_arrays([1, 2], [0, 0], [0, 0], [True, False],
                                                   (1, 1)).p, [1, 0])
  with pytest.raises(EventFileError, match=r"s\.npz: 1 events lie outside the 3x2"):
    Events.from_arrays([1, 2], [0, 3], [0, 0], [0, 1], (2, 3), source="s.npz")
  with pytest.raises(EventFileError, match="polarity"):
    Events.from_arrays([1], [0], [0], [2], (2, 3))
  with pytest.raises(EventFileError, match="NaN"):
    Events.from_arrays(np.array([1.0, np.nan]), [0, 0], [0, 0], [0, 1], (2, 3))
  with pytest.raises(EventFileError, match="decrease at event 2"):
    Events.from_arrays([1, 5, 4], [0, 1, 2], [0, 0, 0], [0, 1, 1], (1, 3))


def test_from_arrays_sort_is_stable():
  ev = Events.from_arrays([3, 1, 3, 2], [0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 0, 0], (1, 4),
                          sort=True)
  np.testing.assert_array_equal(ev.t, [1, 2, 3, 3])
  np.testing.assert_array_equal(ev.x, [1, 3, 0, 2])


def test_selection():
  ev = Events(np.arange(10) * 10, np.arange(10), np.zeros(10), np.arange(10) % 2, (1, 10))
  np.testing.assert_array_equal(ev.time_window(20, 50).t, [20, 30, 40])   # [start, end)
  np.testing.assert_array_equal(ev.time_window(None, 15).t, [0, 10])
  assert len(ev.time_window(55, 20)) == 0
  np.testing.assert_array_equal(ev[2:4].x, [2, 3])
  np.testing.assert_array_equal(ev[-1].t, [90])
  np.testing.assert_array_equal(ev[ev.p == 1].x, [1, 3, 5, 7, 9])
  both = Events.concatenate([ev[:3], ev[3:]])
  np.testing.assert_array_equal(both.t, ev.t)
  assert ev.duration_us == 90 and ev[ev.p > 5].duration_us == 0


def test_pad():
  ev = Events([1_000_000_000_005, 1_000_000_000_009], [3, 4], [1, 2], [1, 0], (5, 6))
  pad = ev.pad(4)
  np.testing.assert_array_equal(pad.t, [0, 4, 0, 0])
  np.testing.assert_array_equal(pad.valid, [True, True, False, False])
  assert pad.t.dtype == np.int32
  np.testing.assert_array_equal(ev.pad(2, t_ref_us=1_000_000_000_000).t, [5, 9])
  with pytest.raises(ValueError, match="capacity"):
    ev.pad(1)
  with pytest.raises(ValueError, match="2147"):
    ev.pad(2, t_ref_us=0)
