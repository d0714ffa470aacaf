"""The sensor size of Prophesee recordings whose header gives no geometry.

Files are written by faery or by our writer, then given the header lines that real recordings
carry (copied from recordings of Prophesee's own software; see each case). Expected sizes are
the sensors' known sizes, written out here by hand, not looked up in `cameras.py`.
"""

import os
import subprocess
import sys
import tempfile
import warnings

import faery
import numpy as np
import pytest

from evalign_jax.events.events import EventFileError, Events
from evalign_jax.events.io import iter_event_chunks, parse_sensor_size, read_events, write_events

VGA, HD, GENX320, ATIS = (480, 640), (720, 1280), (320, 320), (240, 304)

# A Gen3 camera's EVT2 recording, header as Prophesee's software wrote it in 2020 (no geometry).
GEN3_EVT2 = ["% Date 2020-09-14 09:03:25", "% firmware_version 2.0.2",
             "% integrator_name Prophesee", "% plugin_name hal_plugin_gen3_fx3",
             "% serial_number 30384338", "% system_ID 21", "% evt 2.0"]
# A Gen4 camera's EVT3 recording (OpenEB 2.2's gen4_evt3_hand.raw, as its metavision_raw_info
# test lists it: plugin hal_plugin_gen4_fx3, system ID 26, subsystem ID 537921537).
GEN4_EVT3 = ["% Date 2020-03-30 10:11:12", "% integrator_name Prophesee",
             "% plugin_name hal_plugin_gen4_fx3", "% serial_number 00001495", "% system_ID 26",
             "% subsystem_ID 537921537", "% evt 3.0"]
# An EVK4 (IMX636) recording by Metavision 4: geometry given, nothing to infer.
EVK4_EVT3 = ["% camera_integrator_name Prophesee", "% date 2023-03-29 16:37:46", "% evt 3.0",
             "% format EVT3;height=720;width=1280", "% generation 4.2", "% geometry 1280x720",
             "% integrator_name Prophesee", "% plugin_integrator_name Prophesee",
             "% plugin_name hal_plugin_imx636_evk4", "% sensor_generation 4.2",
             "% serial_number 00ca0009", "% system_ID 49", "% end"]


def events_in(width, height, n=3000, seed=0, t0=5_000_000):
  """Random events reaching x = width - 1 and y = height - 1 (so their extent is known)."""
  rng = np.random.default_rng(seed)
  x, y = rng.integers(0, width, n), rng.integers(0, height, n)
  x[n // 3], y[n // 2] = width - 1, height - 1
  return Events(np.sort(rng.integers(t0, t0 + 300_000, n)), x, y, rng.integers(0, 2, n),
                (height, width))


def faery_file(path, events, fmt):
  arr = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
  arr["t"], arr["x"], arr["y"], arr["on"] = events.t, events.x, events.y, events.p == 1
  version = {"evt2": "evt2", "evt3": "evt3", "dat": "dat2"}[fmt]
  faery.events_stream_from_array(arr, dimensions=events.sensor_size[::-1]).to_file(
      path, version=version)
  return path


def with_header(path, lines, name=None):
  """The file with its '%' header replaced by `lines` (its binary data kept byte for byte)."""
  data = path.read_bytes()
  start = 0
  while data[start:start + 1] == b"%":
    start = data.index(b"\n", start) + 1
  out = path.with_name(name or path.name)
  out.write_bytes("".join(line + "\n" for line in lines).encode() + data[start:])
  return out


def t0_line(events):
  # faery writes timestamps relative to a "% t0" line; keep it when replacing the header.
  return f"% t0 {int(events.t[0])}"


def read_warning(path, **kwargs):
  """read_events, and the one warning it gave (None if none)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    events = read_events(path, **kwargs)
  assert len(caught) <= 1, [str(w.message) for w in caught]
  return events, (str(caught[0].message) if caught else None)


def assert_events(got, want, size):
  assert got.sensor_size == size
  for k in "txyp":
    np.testing.assert_array_equal(getattr(got, k), getattr(want, k), err_msg=k)


def assert_inferred(got, warning, path, size, *words):
  assert warning is not None and path.name in warning and str(size) in warning, warning
  info = got.metadata["sensor_size_inferred"]
  assert tuple(info["sensor_size"]) == size
  for word in words:
    assert word in warning and word in info["from"], (word, warning)


# ----------------------------------------------------------------------------------------------
# Recordings as the vendor's software wrote them


@pytest.mark.parametrize("lines,fmt,size,named", [
    (GEN3_EVT2, "evt2", VGA, "system_ID 21"),
    (GEN4_EVT3, "evt3", HD, "system_ID 26"),
])
def test_vendor_recordings_without_geometry(tmp_path, lines, fmt, size, named):
  # Events only in the top-left 300x200 pixels: the camera, not the extent, gives the size.
  events = events_in(300, 200)
  path = with_header(faery_file(tmp_path / "rec.raw", events, fmt),
                     lines + [t0_line(events)])
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, named)
  chunks = []
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    chunks = list(iter_event_chunks(path, chunk_events=700))
  assert [str(w.message) for w in caught] == [warning]          # once, the same words
  assert all(c.sensor_size == size and c.metadata == got.metadata for c in chunks)
  assert_events(Events.concatenate(chunks), events, size)


def test_vendor_recording_with_geometry_reads_silently(tmp_path):
  events = events_in(1280, 720)
  path = with_header(faery_file(tmp_path / "rec.raw", events, "evt3"),
                     EVK4_EVT3[:-1] + [t0_line(events), "% end"])
  got, warning = read_warning(path)
  assert warning is None and "sensor_size_inferred" not in got.metadata
  assert_events(got, events, HD)


# ----------------------------------------------------------------------------------------------
# The camera named by plugin_name or system_ID only


@pytest.mark.parametrize("plugin,fmt,size", [
    ("hal_plugin_gen3_fx3", "evt2", VGA),
    ("hal_plugin_gen31_evk3_raw", "evt3", VGA),     # OpenEB 2.x strips the "_raw"
    ("hal_plugin_gen4_evk2", "evt2", HD),
    ("hal_plugin_gen41_evk3", "evt3", HD),
    ("hal_plugin_imx636_evk4", "evt3", HD),
])
def test_plugin_name_only(tmp_path, plugin, fmt, size):
  events = events_in(300, 300)
  path = with_header(faery_file(tmp_path / "rec.raw", events, fmt),
                     [f"% evt {fmt[3:]}.0", f"% plugin_name {plugin}", t0_line(events)])
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, f"plugin_name {plugin}")


@pytest.mark.parametrize("system_id,size", [
    (21, VGA), (28, VGA), (35, VGA), (40, VGA), (41, VGA),     # Gen3.0 / Gen3.1 boards
    (26, HD), (31, HD), (39, HD), (48, HD),                    # Gen4.0 / Gen4.1
    (49, HD), (50, HD), (53, HD),                              # IMX636, IMX646
    (64, GENX320),
])
def test_system_id_only(tmp_path, system_id, size):
  events = events_in(300, 300)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt3"),
                     ["% evt 3.0", f"% system_ID {system_id}", t0_line(events)])
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, f"system_ID {system_id}")


def write_events_to(path, events, fmt):
  write_events(path, events, format=fmt)
  return path


def test_system_id_wins_over_plugin_name(tmp_path):
  # As OpenEB since 3.0, which no longer looks at the plugin name.
  events = events_in(300, 300)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt2"),
                     ["% evt 2.0", "% plugin_name hal_plugin_gen3_fx3", "% system_ID 48",
                      t0_line(events)])
  got, warning = read_warning(path)
  assert_inferred(got, warning, path, HD, "system_ID 48")


# ----------------------------------------------------------------------------------------------
# No camera known: the events' extent picks among the format's known sensors


@pytest.mark.parametrize("camera", [
    [],                                                           # no camera lines at all
    ["% plugin_name hal_plugin_prophesee", "% system_ID 999"],    # a camera OpenEB does not know
    ["% system_ID 0x15"],                                         # not decimal (OpenEB: stol)
    ["% integrator_name Acme", "% system_ID 21"],                 # another maker's camera id
])
@pytest.mark.parametrize("extent,size", [((300, 250), GENX320), ((640, 400), VGA),
                                         ((700, 100), HD), ((1280, 720), HD)])
def test_unknown_camera_uses_the_events_extent(tmp_path, camera, extent, size):
  events = events_in(*extent, seed=extent[0])
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt2"),
                     ["% evt 2.0"] + camera + [t0_line(events)])
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, "extent")


@pytest.mark.parametrize("extent,size", [((304, 240), ATIS), ((320, 240), GENX320),
                                         ((600, 480), VGA)])
def test_dat_without_size(tmp_path, extent, size):
  events = events_in(*extent)
  path = with_header(faery_file(tmp_path / "rec.dat", events, "dat"),
                     ["% Date 2019-01-01 00:00:00", "% Version 2", f"% T0 {int(events.t[0])}"])
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, "extent")


def evt21_words(events, legacy=False):
  """One EVT2.1 word per event (Prophesee's spec): TIME_HIGH 0x8 then EVT_NEG/POS 0x0/0x1.

  legacy: the two 32-bit halves of every word swapped, as Prophesee's older boards wrote them.
  """
  words, high = [], None
  for t, x, y, p in zip(*(getattr(events, k).astype(np.int64).tolist() for k in "txyp")):
    if t >> 6 != high:
      high = t >> 6
      words.append((0x8 << 60) | (high << 32))
    base = x & ~31
    words.append((p << 60) | ((t & 63) << 54) | (base << 43) | (y << 32) | (1 << (x - base)))
  w = np.array(words, dtype=np.uint64)
  if legacy:
    w = (w << np.uint64(32)) | (w >> np.uint64(32))
  return w.astype("<u8").tobytes()


@pytest.mark.parametrize("camera,legacy,size,named", [
    ([], False, VGA, "extent"),
    # OpenEB: boards before 0x37 wrote EVT2.1 swapped unless the header says otherwise.
    (["% system_ID 49"], True, HD, "system_ID 49"),
    (["% system_ID 49", "% endianness little"], False, HD, "system_ID 49"),
])
def test_evt21_without_geometry(tmp_path, camera, legacy, size, named):
  events = events_in(500, 400)
  path = tmp_path / "rec.raw"
  path.write_bytes("".join(l + "\n" for l in ["% evt 2.1", "% format EVT21"] + camera).encode()
                   + evt21_words(events, legacy))
  got, warning = read_warning(path)
  assert_events(got, events, size)
  assert_inferred(got, warning, path, size, named)


# ----------------------------------------------------------------------------------------------
# An explicit sensor_size always wins; what cannot be inferred is an error


def test_explicit_sensor_size_wins_silently(tmp_path):
  events = events_in(300, 300)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt2"),
                     GEN3_EVT2 + [t0_line(events)])
  got, warning = read_warning(path, sensor_size=(700, 1000))
  assert warning is None and "sensor_size_inferred" not in got.metadata
  assert_events(got, events, (700, 1000))
  with pytest.raises(EventFileError, match="rec.raw.*outside the 200x200"):
    read_events(path, sensor_size=(200, 200))


def test_events_beyond_every_known_sensor(tmp_path):
  events = events_in(1600, 1000)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt2"),
                     ["% evt 2.0", t0_line(events)])
  for read in (read_events, iter_event_chunks):
    with pytest.raises(EventFileError, match=r"rec.raw: .*no known camera.*x up to 1599, y up to "
                                             r"999.*sensor_size=\(height, width\)"):
      read(path)
  got, warning = read_warning(path, sensor_size=(1000, 1600))
  assert warning is None
  assert_events(got, events, (1000, 1600))


@pytest.mark.parametrize("ext,fmt", [("raw", "evt3"), ("dat", "dat")])
def test_header_only_file_without_size(tmp_path, ext, fmt):
  path = tmp_path / f"empty.{ext}"
  path.write_bytes(b"% evt 3.0\n" if fmt == "evt3" else b"% Version 2\n")
  with pytest.raises(EventFileError, match="empty.*no events to infer it from.*sensor_size"):
    read_events(path, format=fmt)
  path.write_bytes(path.read_bytes() + b"% system_ID 48\n")
  got, warning = read_warning(path, format=fmt)
  assert len(got) == 0 and got.sensor_size == HD and "system_ID 48" in warning


def test_camera_contradicted_by_the_events(tmp_path):
  # The header names a Gen3 camera (640x480) but the events come from a 1280x720 sensor.
  events = events_in(1280, 720)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt3"),
                     ["% evt 3.0", "% system_ID 21", t0_line(events)])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for read in (read_events, lambda p: list(iter_event_chunks(p))):
      with pytest.raises(EventFileError, match="rec.raw: .*outside the 640x480.*system_ID 21"):
        read(path)
  assert_events(read_events(path, sensor_size=HD), events, HD)


@pytest.mark.parametrize("fmt,lines", [
    ("evt2", ["% evt 2.0", "% geometry 320x240"]),
    ("evt3", ["% evt 3.0", "% format EVT3;height=240;width=320"]),
    ("dat", ["% Version 2", "% Width 320", "% Height 240"]),
])
def test_geometry_line_contradicted_by_the_events(tmp_path, monkeypatch, fmt, lines):
  events = events_in(640, 480)
  ext = "dat" if fmt == "dat" else "raw"
  path = with_header(write_events_to(tmp_path / f"rec.{ext}", events, fmt),
                     lines + [t0_line(events)])
  with pytest.raises(EventFileError, match=f"rec.{ext}: .*outside the sensor.*320x240.*header"):
    read_events(path)
  # A larger explicit size reads it: decoded from a copy without the header's size, removed
  # once read (also when streaming stops early).
  spare = tmp_path / "tmp"
  spare.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", os.fspath(spare))
  got, warning = read_warning(path, sensor_size=VGA)
  assert warning is None
  assert_events(got, events, VGA)
  first = next(iter_event_chunks(path, sensor_size=VGA, chunk_events=10))
  assert_events(first, events[:10], VGA)
  del first
  assert list(spare.iterdir()) == []


def test_header_lines_that_disagree(tmp_path):
  events = events_in(640, 480)
  path = with_header(write_events_to(tmp_path / "rec.raw", events, "evt2"),
                     ["% evt 2.0", "% format EVT2;width=640;height=480", "% geometry 1280x720",
                      t0_line(events)])
  with pytest.raises(EventFileError, match="rec.raw: the header contradicts itself.*640x480.*"
                                           "1280x720"):
    read_events(path)
  assert_events(read_events(path, sensor_size=VGA), events, VGA)


# ----------------------------------------------------------------------------------------------
# The command-line form


def test_parse_sensor_size():
  assert parse_sensor_size("480x640") == (480, 640)
  assert parse_sensor_size(" 720X1280 ") == (720, 1280)
  for bad in ("480,640", "480x", "x640", "0x640", "480x640x2", "-480x640", "4.8x640", "",
              "480x70000"):
    with pytest.raises(ValueError, match="HxW") as info:
      parse_sensor_size(bad)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# Paths that read event files: predict's flag and the E-SIE builder


@pytest.mark.slow
def test_predict_rejects_a_malformed_sensor_size(tmp_path):
  # One process (importing predict takes seconds); the forms are checked in
  # test_parse_sensor_size. "480,640" was the old form of the flag.
  events = events_in(64, 48)
  path = write_events_to(tmp_path / "rec.raw", events, "evt3")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for bad in ("480,640",):
    out = subprocess.run([sys.executable, "-m", "evalign_jax.predict", "--checkpoint=none",
                          f"--events={path}", f"--out={tmp_path / 'out'}",
                          f"--sensor_size={bad}"],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: sensor size must be HxW (height x width, each 1..65535), e.g. 480x640; "
        f"got {bad!r}")
    assert not (tmp_path / "out").exists()


def test_esie_builder_takes_sensor_size(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  cv2 = pytest.importorskip("cv2")
  from data_pipelines import schema
  from data_pipelines.esie import esie_dataset_builder as esie
  from data_pipelines.video_examples import BadInput

  # One session: three 100x120 RGB frames and a geometry-less EVT3 recording of that grid.
  root, (h, w) = tmp_path / "ESIE", (100, 120)
  times = 1_000_000 + 40_000 * np.arange(3)
  for d in ("label/u1/s1", "rgb/u1/s1", "timestamps/u1", "events/u1"):
    (root / d).mkdir(parents=True)
  for i, t in enumerate(times):
    (root / f"label/u1/s1/{i:04d}.txt").write_text("40 40 60 40 50 60 45 70 55 70 20 20 90 80\n")
    cv2.imwrite(str(root / f"rgb/u1/s1/{i:04d}.png"), np.full((h, w, 3), 128, np.uint8))
  (root / "timestamps/u1/s1.txt").write_text("".join(f"{i:04d} {t}\n"
                                                      for i, t in enumerate(times)))
  events = events_in(w, h, n=2000, t0=int(times[0]) - 40_000)
  with_header(write_events_to(tmp_path / "s1.raw", events, "evt3"),
              ["% evt 3.0", t0_line(events)], name="s1.raw").rename(root / "events/u1/s1.raw")

  def build(name, **kwargs):
    config = esie.EsieConfig(name=name, num_landmarks=5, crop=schema.CropSpec(
        image_size=48, crop_scale=1.5, event_capacity=512, jpeg_quality=95), **kwargs)
    b = esie.Builder(data_dir=str(tmp_path / name), config=config, on_error="fail")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      b.download_and_prepare(file_format="array_record", download_config=(
          tfds.download.DownloadConfig(manual_dir=str(root))))
    return b

  # Inferred from the extent, the 320x320 guess does not match the frames: a bad input, named.
  with pytest.raises(BadInput, match=r"s1.raw: the \(320, 320\) sensor does not match"):
    build("inferred")
  src = build("given", sensor_size=(h, w)).as_data_source(split="test")
  assert len(src) == 3 and sum(int(src[i]["events"]["count_total"]) for i in range(3)) > 0
