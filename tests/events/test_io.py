"""Event file I/O: round trips, files from other writers, windows, streaming and bad input.

References are independent of the reader: the arrays we wrote, files written by faery or h5py
directly, an EVT2.1 encoder written here from Prophesee's public spec, and numpy slicing.
"""

import dataclasses
import os
import tracemalloc
import warnings

import faery
import h5py
import numpy as np
import pytest

from evalign_jax.events.events import EventFileError, Events
from evalign_jax.events.io import (SUPPORTED_FORMATS, detect_format, iter_event_chunks,
                                   read_events, write_events)

SENSORS = {"dvxplorer": (240, 320), "davis346": (260, 346), "gen4": (720, 1280)}
# format -> file extension used when writing it
FORMATS = {"npz": "npz", "hdf5": "h5", "aedat4": "aedat4", "evt2": "raw", "evt3": "raw",
           "dat": "dat"}


def make_events(n, sensor_size=(260, 346), *, seed=0, t0=1_234_567, duration=200_000,
                metadata=None):
  """Sorted random events with repeated timestamps, starting well after 0."""
  rng = np.random.default_rng(seed)
  h, w = sensor_size
  t = np.sort(rng.integers(t0, t0 + duration, n))
  return Events(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n),
                (h, w), metadata or {})


def write(tmp_path, events, fmt, name="rec"):
  path = tmp_path / f"{name}.{FORMATS[fmt]}"
  write_events(path, events, format=fmt)
  return path


def assert_same(got, want):
  assert got.sensor_size == want.sensor_size
  for k, dtype in (("t", np.int64), ("x", np.uint16), ("y", np.uint16), ("p", np.uint8)):
    assert getattr(got, k).dtype == dtype
    np.testing.assert_array_equal(getattr(got, k), getattr(want, k), err_msg=k)


def faery_array(events):
  arr = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
  arr["t"], arr["x"], arr["y"], arr["on"] = events.t, events.x, events.y, events.p == 1
  return arr


def cut_file(src, n_bytes, dst):
  dst.write_bytes(src.read_bytes()[:n_bytes])
  return dst


def expect_error(match_words, fn, *args, **kwargs):
  """Calls fn, expecting EventFileError whose message holds every word (case-insensitive)."""
  with pytest.raises(EventFileError) as info:
    fn(*args, **kwargs)
  msg = str(info.value).lower()
  for word in match_words:
    assert word.lower() in msg, (word, str(info.value))
  return info.value


# ----------------------------------------------------------------------------------------------
# Round trips and files from other writers


@pytest.mark.parametrize("sensor", SENSORS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt, sensor):
  events = make_events(3000, SENSORS[sensor], seed=len(sensor), metadata={"sensor": sensor})
  path = write(tmp_path, events, fmt)
  assert detect_format(path) == fmt
  got = read_events(path)
  assert_same(got, events)
  assert got.metadata == (events.metadata if fmt in ("npz", "hdf5") else {})
  assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temporary files left


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_stream_round_trip(tmp_path, fmt):
  events = Events.empty((240, 320))
  got = read_events(write(tmp_path, events, fmt))
  assert len(got) == 0 and got.sensor_size == (240, 320)


def test_write_overwrites_existing_file(tmp_path):
  path = write(tmp_path, make_events(50), "npz")
  write_events(path, make_events(20, seed=3))
  assert_same(read_events(path), make_events(20, seed=3))


def test_raw_extension_defaults_to_evt3(tmp_path):
  events = make_events(100, SENSORS["gen4"])
  write_events(tmp_path / "rec.raw", events)
  assert detect_format(tmp_path / "rec.raw") == "evt3"
  assert_same(read_events(tmp_path / "rec.raw"), events)


@pytest.mark.parametrize("fmt,version", [("aedat4", None), ("evt2", "evt2"), ("evt3", "evt3"),
                                         ("dat", "dat2")])
def test_reads_files_written_by_faery(tmp_path, fmt, version):
  events = make_events(2000, SENSORS["gen4"], t0=987_654_321)
  path = tmp_path / f"faery.{FORMATS[fmt]}"
  faery.events_stream_from_array(faery_array(events), dimensions=(1280, 720)).to_file(
      path, version=version)
  assert detect_format(path) == fmt
  assert_same(read_events(path), events)


def write_dsec(path, events, *, t_offset, polarity, attrs=True):
  with h5py.File(path, "w") as f:
    f.create_dataset("events/t", data=(events.t - t_offset).astype(np.uint32))
    f.create_dataset("events/x", data=events.x)
    f.create_dataset("events/y", data=events.y)
    f.create_dataset("events/p", data=polarity)
    f.create_dataset("t_offset", data=np.int64(t_offset))
    f.create_dataset("ms_to_idx", data=np.zeros(3, np.uint64))   # present in DSEC, ignored
    if attrs:
      f["events"].attrs["height"], f["events"].attrs["width"] = events.sensor_size


@pytest.mark.parametrize("kind", ["bool", "pm1"])
def test_reads_dsec_layout_written_by_h5py(tmp_path, kind):
  events = make_events(1500, (480, 640), t0=50_000_000)
  pol = events.p.astype(bool) if kind == "bool" else np.where(events.p == 1, 1, -1).astype(np.int8)
  path = tmp_path / "dsec.h5"
  write_dsec(path, events, t_offset=49_000_000, polarity=pol)
  assert detect_format(path) == "hdf5"
  assert_same(read_events(path), events)


def test_hdf5_without_sensor_size_infers_it_with_warning(tmp_path):
  events = make_events(1000, (480, 640))
  path = tmp_path / "dsec.hdf5"
  write_dsec(path, events, t_offset=0, polarity=events.p, attrs=False)
  with pytest.warns(UserWarning, match="sensor_size"):
    got = read_events(path)
  assert got.sensor_size == (int(events.y.max()) + 1, int(events.x.max()) + 1)
  np.testing.assert_array_equal(got.t, events.t)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert_same(read_events(path, sensor_size=(480, 640)), events)


def test_reads_flat_hdf5_layout(tmp_path):
  events = make_events(800, SENSORS["dvxplorer"])
  path = tmp_path / "flat.h5"
  with h5py.File(path, "w") as f:
    for k in "txyp":
      f.create_dataset(k, data=getattr(events, k).astype(np.int64))
    f.attrs["height"], f.attrs["width"] = 240, 320
  assert_same(read_events(path), events)


def test_reads_compressed_npz_from_numpy(tmp_path):
  events = make_events(1200, SENSORS["davis346"])
  path = tmp_path / "np.npz"
  np.savez_compressed(path, t=events.t.astype(np.float64), x=events.x.astype(np.int32),
                      y=events.y.astype(np.int32), p=np.where(events.p == 1, 1, -1),
                      sensor_size=np.array([260, 346]))
  assert_same(read_events(path), events)
  assert_same(Events.concatenate(list(iter_event_chunks(path, chunk_events=100))), events)


def test_npz_without_sensor_size_infers_it_with_warning(tmp_path):
  events = make_events(500, (100, 200))
  path = tmp_path / "nosize.npz"
  np.savez(path, t=events.t, x=events.x, y=events.y, p=events.p.astype(bool))
  with pytest.warns(UserWarning, match="inferred"):
    got = read_events(path)
  assert got.sensor_size == (int(events.y.max()) + 1, int(events.x.max()) + 1)
  assert_same(read_events(path, sensor_size=(100, 200)), events)


# ----------------------------------------------------------------------------------------------
# EVT2.1: faery 0.7.1 cannot write it (and panics reading it), so files are encoded here.


def encode_evt21(events, *, legacy=False, extra_words=()):
  """EVT2.1 words per Prophesee's spec; runs of increasing x in one 32-pixel group share a word."""
  t, x, y, p = (getattr(events, k).astype(np.int64).tolist() for k in "txyp")
  words, high, i = list(extra_words), None, 0
  while i < len(t):
    if t[i] >> 6 != high:
      high = t[i] >> 6
      words.append((0x8 << 60) | ((high & 0xFFFFFFF) << 32))
    base = x[i] & ~31
    mask, j = 1 << (x[i] - base), i + 1
    while (j < len(t) and (t[j], y[j], p[j], x[j] & ~31) == (t[i], y[i], p[i], base)
           and x[j] > x[j - 1]):
      mask |= 1 << (x[j] - base)
      j += 1
    words.append((p[i] << 60) | ((t[i] & 63) << 54) | (base << 43) | (y[i] << 32) | mask)
    i = j
  w = np.array(words, dtype=np.uint64)
  if legacy:   # IMX636 order: the 32-bit half holding the type comes first
    w = (w << np.uint64(32)) | (w >> np.uint64(32))
  return w.astype("<u8").tobytes(), len(words)


def grouped_events(n_groups, sensor_size, t0, seed=0):
  """Events in bursts of 1..6 pixels sharing t, y, p and a 32-pixel group (vectorised words)."""
  rng = np.random.default_rng(seed)
  h, w = sensor_size
  t, x, y, p = [], [], [], []
  now = t0
  for _ in range(n_groups):
    now += int(rng.integers(0, 200))
    base = int(rng.integers(0, w // 32)) * 32
    xs = np.sort(rng.choice(32, size=int(rng.integers(1, 7)), replace=False)) + base
    row, pol = int(rng.integers(0, h)), int(rng.integers(0, 2))
    t += [now] * len(xs)
    x += xs.tolist()
    y += [row] * len(xs)
    p += [pol] * len(xs)
  return Events(t, x, y, p, sensor_size)


@pytest.mark.parametrize("legacy", [False, True])
def test_reads_evt21(tmp_path, legacy):
  # Crosses the 28-bit TIME_HIGH wrap at 2^34 µs, and starts with a trigger word to be ignored.
  events = grouped_events(400, (720, 1280), t0=2**34 - 30_000)
  assert events.t[-1] > 2**34
  trigger = (0xA << 60) | (5 << 40) | (1 << 32)
  data, n_words = encode_evt21(events, legacy=legacy, extra_words=[trigger])
  assert n_words < len(events)   # some words do carry several pixels
  fmt_line = "EVT21;height=720;width=1280" + (";endianness=legacy" if legacy else "")
  path = tmp_path / "evt21.raw"
  path.write_bytes(f"% evt 2.1\n% format {fmt_line}\n% end\n".encode() + data)
  assert detect_format(path) == "evt2.1"
  assert_same(read_events(path), events)
  chunks = list(iter_event_chunks(path, chunk_events=97))
  assert_same(Events.concatenate(chunks), events)
  lo, hi = int(events.t[100]), int(events.t[900])
  assert_same(read_events(path, t_start_us=lo, t_end_us=hi), events.time_window(lo, hi))
  expect_error(["truncated", "evt21_cut.raw"], read_events,
               cut_file(path, path.stat().st_size - 3, tmp_path / "evt21_cut.raw"))


# ----------------------------------------------------------------------------------------------
# Windows and streaming


@pytest.mark.parametrize("fmt", FORMATS)
def test_time_windows_match_full_read(tmp_path, fmt):
  events = make_events(4000, SENSORS["dvxplorer"], t0=3_000_000, duration=100_000)
  path = write(tmp_path, events, fmt)
  full = read_events(path)
  a, b = int(full.t[1000]), int(full.t[2500])   # bounds on real timestamps test half-openness
  for lo, hi in [(a, b), (a, None), (None, b), (a, a), (b, a), (0, 10), (10**12, None),
                 (full.t[0], full.t[-1] + 1)]:
    got = read_events(path, t_start_us=lo, t_end_us=hi)
    assert_same(got, full.time_window(lo, hi))
    mask = np.ones(len(events), bool)
    if lo is not None:
      mask &= events.t >= lo
    if hi is not None:
      mask &= events.t < hi
    assert_same(got, events[mask])


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunk_events_are_consecutive_slices(tmp_path, fmt):
  events = make_events(2345, SENSORS["gen4"])
  path = write(tmp_path, events, fmt)
  chunks = list(iter_event_chunks(path, chunk_events=500))
  assert [len(c) for c in chunks] == [500, 500, 500, 500, 345]
  for k, chunk in enumerate(chunks):
    assert_same(chunk, events[k * 500:(k + 1) * 500])
  assert_same(list(iter_event_chunks(path))[0], events)   # default: one chunk of <= 1M events


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunk_us_windows_include_empty_ones(tmp_path, fmt):
  a = make_events(700, SENSORS["davis346"], t0=10_000_000, duration=3_000, seed=1)
  b = make_events(300, SENSORS["davis346"], t0=10_009_500, duration=1_200, seed=2)
  events = Events.concatenate([a, b])   # 10.0-10.003 s, a gap, then 10.0095-10.0107 s
  path = write(tmp_path, events, fmt)
  width = 1_000
  chunks = list(iter_event_chunks(path, chunk_us=width))
  t0 = int(events.t[0])
  assert len(chunks) == (int(events.t[-1]) - t0) // width + 1
  assert any(len(c) == 0 for c in chunks)
  for k, chunk in enumerate(chunks):
    assert_same(chunk, events.time_window(t0 + k * width, t0 + (k + 1) * width))
    assert chunk.sensor_size == events.sensor_size
  assert_same(Events.concatenate(chunks), events)


def test_hdf5_window_seeks_instead_of_scanning(tmp_path):
  # An off-sensor event after the window: a full read trips on it, a window read never sees it.
  events = make_events(5000, (100, 120))
  x = events.x.copy()
  x[4000] = 500
  path = tmp_path / "seek.h5"
  with h5py.File(path, "w") as f:
    for k, v in (("t", events.t), ("x", x), ("y", events.y), ("p", events.p)):
      f.create_dataset(f"events/{k}", data=v, chunks=(256,))
    f.attrs["height"], f.attrs["width"] = 100, 120
  expect_error(["seek.h5", "outside"], read_events, path)
  lo, hi = int(events.t[1000]), int(events.t[2000])
  assert_same(read_events(path, t_start_us=lo, t_end_us=hi), events.time_window(lo, hi))


def test_chunk_arguments_are_checked(tmp_path):
  path = write(tmp_path, make_events(10), "npz")
  with pytest.raises(ValueError, match="not both"):
    iter_event_chunks(path, chunk_us=10, chunk_events=10)
  with pytest.raises(ValueError, match="positive"):
    iter_event_chunks(path, chunk_events=0)


@pytest.fixture(scope="module")
def big_events():
  return make_events(2_000_000, SENSORS["gen4"], duration=60_000_000, seed=7)


@pytest.mark.parametrize("fmt", ["npz", "npz_compressed", "hdf5", "aedat4"])
def test_streaming_memory_is_bounded(tmp_path, big_events, fmt):
  events = big_events
  if fmt == "npz_compressed":
    path = tmp_path / "big.npz"
    np.savez_compressed(path, t=events.t, x=events.x, y=events.y, p=events.p,
                        sensor_size=np.array(events.sensor_size))
  else:
    path = write(tmp_path, events, fmt, name="big")
  full_bytes = sum(getattr(events, k).nbytes for k in "txyp")   # 26 MB
  tracemalloc.start()
  try:
    count, last_t = 0, None
    for chunk in iter_event_chunks(path, chunk_events=100_000):
      if last_t is None:
        np.testing.assert_array_equal(chunk.t, events.t[:100_000])
      count, last_t = count + len(chunk), int(chunk.t[-1])
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert count == len(events) and last_t == events.t[-1]
  assert peak < full_bytes / 4, (peak, full_bytes)


# ----------------------------------------------------------------------------------------------
# Bad input


def test_unknown_format(tmp_path):
  path = tmp_path / "junk.xyz"
  path.write_bytes(os.urandom(100).replace(b"%", b"x").replace(b"P", b"Q"))
  err = expect_error(["junk.xyz", "unknown"], read_events, path)
  assert all(f in str(err) for f in SUPPORTED_FORMATS)
  expect_error(["junk.xyz", "unknown"], detect_format, path)
  expect_error(["junk.xyz", "unknown format"], read_events, path, format="mp4")


def test_missing_and_empty_files(tmp_path):
  expect_error(["nope.npz", "not found"], read_events, tmp_path / "nope.npz")
  expect_error(["nope.raw", "not found"], iter_event_chunks, tmp_path / "nope.raw")
  for ext in ("npz", "h5", "aedat4", "raw", "dat"):
    path = tmp_path / f"zero.{ext}"
    path.touch()
    expect_error([path.name, "empty"], read_events, path)
    expect_error([path.name, "empty"], read_events, path, format="evt3")


def test_detection_uses_magic_before_extension(tmp_path):
  events = make_events(100)
  path = write(tmp_path, events, "npz")
  renamed = path.rename(tmp_path / "really_npz.h5")
  assert detect_format(renamed) == "npz"
  assert_same(read_events(renamed), events)
  raw = tmp_path / "noversion.raw"
  raw.write_bytes(b"% geometry 640x480\n" + bytes(8))
  expect_error(["noversion.raw", "format="], read_events, raw)


@pytest.mark.parametrize("fmt", ["aedat4", "evt2", "evt3", "dat"])
def test_truncated_files(tmp_path, fmt):
  path = write(tmp_path, make_events(3000, SENSORS["gen4"]), fmt)
  data = path.read_bytes()
  header_end = data.index(b"\n", 30) if fmt != "aedat4" else 40
  cuts = {"mid_data": len(data) // 2 + 1, "mid_header": header_end - 3}
  if fmt != "aedat4":
    cuts["last_byte"] = len(data) - 1
  for what, n in cuts.items():
    cut = cut_file(path, n, tmp_path / f"cut_{what}.{FORMATS[fmt]}")
    expect_error([cut.name, "truncated"], read_events, cut, format=fmt)
    with pytest.raises(EventFileError, match="truncated"):
      for _ in iter_event_chunks(cut, format=fmt, chunk_events=100):
        pass


def test_truncated_npz_and_hdf5(tmp_path):
  events = make_events(3000)
  for fmt in ("npz", "hdf5"):
    path = write(tmp_path, events, fmt)
    cut = cut_file(path, path.stat().st_size // 2, tmp_path / f"cut.{FORMATS[fmt]}")
    err = str(expect_error([cut.name], read_events, cut)).lower()
    assert "truncated" in err or "corrupt" in err


@pytest.mark.parametrize("fmt", ["aedat4", "evt2", "evt3", "dat"])
def test_corrupted_bytes(tmp_path, fmt):
  path = write(tmp_path, make_events(3000, SENSORS["davis346"]), fmt)
  data = bytearray(path.read_bytes())
  start = 1200 if fmt == "aedat4" else 200   # past the header (AEDAT4: inside the LZ4 packets)
  for i in range(start, len(data) - 100, 5):
    data[i] ^= 0xA5
  bad = tmp_path / f"bad.{FORMATS[fmt]}"
  bad.write_bytes(bytes(data))
  expect_error(["bad.", "corrupt"], read_events, bad, format=fmt)


def test_corrupted_aedat4_header_panic_is_wrapped(tmp_path):
  path = write(tmp_path, make_events(100), "aedat4")
  data = bytearray(path.read_bytes())
  for i in range(100, 300, 7):    # inside the XML description: faery's Rust code panics
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))
  err = expect_error(["rec.aedat4", "corrupt"], read_events, path)
  assert err.__cause__ is not None


def test_coordinates_outside_sensor(tmp_path):
  events = make_events(300, (100, 120))
  x = events.x.copy()
  x[17] = 120
  npz = tmp_path / "wide.npz"
  np.savez(npz, t=events.t, x=x, y=events.y, p=events.p, sensor_size=np.array([100, 120]))
  expect_error(["wide.npz", "outside", "index 17"], read_events, npz)
  h5 = tmp_path / "wide.h5"
  with h5py.File(h5, "w") as f:
    for k, v in (("t", events.t), ("x", x), ("y", events.y), ("p", events.p)):
      f.create_dataset(f"events/{k}", data=v)
    f.attrs["height"], f.attrs["width"] = 100, 120
  expect_error(["wide.h5", "outside"], read_events, h5)
  ok = write(tmp_path, events, "npz")
  expect_error(["rec.npz", "outside"], read_events, ok, sensor_size=(50, 60))
  evt = write(tmp_path, events, "evt3")
  expect_error(["rec.raw", "outside"], read_events, evt, sensor_size=(50, 60))


def unsorted_npz(tmp_path, n=300, swap_at=(100,)):
  events = make_events(n, (100, 120), duration=50_000)
  t = events.t.copy()
  for i in swap_at:
    t[i] = t[i - 1] - 7       # strictly earlier than its predecessor
  path = tmp_path / "unsorted.npz"
  np.savez(path, t=t, x=events.x, y=events.y, p=events.p, sensor_size=np.array([100, 120]))
  return path, t, events


def test_decreasing_timestamps(tmp_path):
  path, t, events = unsorted_npz(tmp_path)
  expect_error(["unsorted.npz", "decrease", "event 100", "sort=true"], read_events, path)
  with pytest.raises(EventFileError, match="read_events"):
    list(iter_event_chunks(path, chunk_events=50))
  with pytest.warns(UserWarning, match="unsorted.npz"):
    got = read_events(path, sort=True)
  order = np.argsort(t, kind="stable")
  np.testing.assert_array_equal(got.t, t[order])
  for k in "xyp":
    np.testing.assert_array_equal(getattr(got, k), getattr(events, k)[order])
  with pytest.warns(UserWarning):
    window = read_events(path, sort=True, t_start_us=int(t[50]), t_end_us=int(t[250]))
  assert_same(window, got.time_window(int(t[50]), int(t[250])))


def test_decrease_across_read_blocks_is_caught(tmp_path):
  # io reads 65536 events at a time; put the decrease exactly on a block boundary.
  path, t, _ = unsorted_npz(tmp_path, n=70_000, swap_at=(65_536,))
  expect_error(["decrease", "event 65536"], read_events, path)
  with pytest.raises(EventFileError, match="65536"):
    list(iter_event_chunks(path, chunk_events=100_000))
  with pytest.warns(UserWarning):
    np.testing.assert_array_equal(read_events(path, sort=True).t, np.sort(t, kind="stable"))


def test_bad_values(tmp_path):
  events = make_events(50, (10, 10))
  p = events.p.astype(np.int64)
  p[3] = 2
  path = tmp_path / "pol.npz"
  np.savez(path, t=events.t, x=events.x, y=events.y, p=p, sensor_size=np.array([10, 10]))
  expect_error(["pol.npz", "polarity"], read_events, path)
  t = events.t.astype(np.float64)
  t[5] = np.nan
  path = tmp_path / "nan.npz"
  np.savez(path, t=t, x=events.x, y=events.y, p=events.p, sensor_size=np.array([10, 10]))
  expect_error(["nan.npz", "nan"], read_events, path)
  path = tmp_path / "short.npz"
  np.savez(path, t=events.t, x=events.x[:-1], y=events.y, p=events.p)
  expect_error(["short.npz", "length"], read_events, path)
  path = tmp_path / "two_d.npz"
  np.savez(path, t=events.t.reshape(5, 10), x=events.x, y=events.y, p=events.p)
  expect_error(["two_d.npz", "1-d"], read_events, path)


def test_evt_header_without_geometry_is_inferred(tmp_path):
  # More header variants (cameras named, contradictions) in test_sensor_size.py.
  events = make_events(200, (480, 640))
  events.x[7], events.y[9] = 639, 479      # the extent: a 640x480 sensor
  path = write(tmp_path, events, "evt2")
  lines = path.read_bytes().split(b"\n")
  kept = [l for l in lines[:4] if b"format" not in l and b"geometry" not in l]
  nogeo = tmp_path / "nogeo.raw"
  nogeo.write_bytes(b"\n".join(kept + lines[4:]))
  with pytest.warns(UserWarning, match="nogeo.raw.*inferred.*480, 640.*extent"):
    got = read_events(nogeo)
  assert_same(got, events)
  assert got.metadata["sensor_size_inferred"]["sensor_size"] == [480, 640]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert_same(read_events(nogeo, sensor_size=(480, 640)), events)
  expect_error(["nogeo.raw", "says evt2"], read_events, nogeo, format="evt3",
               sensor_size=(480, 640))


# ----------------------------------------------------------------------------------------------
# Writer failures leave nothing behind


def test_write_rejections_leave_no_file(tmp_path):
  events = make_events(100)
  cases = [
      (dataclasses.replace(events, metadata={"f": object()}), "rec.npz", None, "json"),
      (dataclasses.replace(events, metadata={"f": {1, 2}}), "rec.h5", None, "json"),
      (events, "missing_dir/rec.npz", None, "does not exist"),
      (events[::-1], "rec.aedat4", None, "decrease"),
      (Events(events.t - 2_000_000, events.x, events.y, events.p, events.sensor_size),
       "rec.dat", None, "negative"),
      (events, "rec.raw", "evt2.1", "cannot write"),
      (events, "rec.txt", None, "format="),
  ]
  for ev, name, fmt, word in cases:
    expect_error([word], write_events, tmp_path / name, ev, format=fmt)
  assert list(tmp_path.iterdir()) == []
  bad_x = Events(events.t, np.full(100, 400), events.y, events.p, events.sensor_size)
  expect_error(["outside"], write_events, tmp_path / "rec.npz", bad_x)
  assert list(tmp_path.iterdir()) == []


def test_write_failing_midway_keeps_old_file(tmp_path, monkeypatch):
  old = make_events(30, seed=1)
  path = write(tmp_path, old, "npz")
  before = path.read_bytes()

  def broken_savez(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", broken_savez)
  expect_error(["rec.npz", "disk full"], write_events, path, make_events(500))
  assert path.read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ["rec.npz"]


def test_faery_write_failing_midway_leaves_no_file(tmp_path, monkeypatch):
  def broken_to_file(self, path, **kwargs):
    for p in (path, f"{path}.write"):
      with open(p, "wb") as f:
        f.write(b"#!AER-DAT4.0\r\npartial")
    raise RuntimeError("simulated encoder failure")

  monkeypatch.setattr(faery.FiniteEventsStream, "to_file", broken_to_file)
  expect_error(["rec.aedat4", "simulated"], write_events, tmp_path / "rec.aedat4",
               make_events(100))
  assert list(tmp_path.iterdir()) == []
