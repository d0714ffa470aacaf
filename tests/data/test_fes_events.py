"""fes_events on small fake FES releases written here in FES's layout.

The layout follows what FES's repository shows (IS2AI/faces-in-event-streams): Prophesee
`.raw` recordings (EVT3, the Gen4 default) on a 1280x720 sensor, annotation times
int(frame x 1e6 / 30) µs, boxes as top-left + size, 5 points in the order right eye, left
eye, nose, right mouth corner, left mouth corner; the preprocessed release's
train/val/test folders of `<name>_bbox.npy` (Prophesee box fields + x0..y4) next to `.h5`
tensor files; the raw release's per-subject folders of sequences and the `bbox_fl_txt` files
FES's scripts write from CVAT. Expected examples are computed here with numpy alone.
"""

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import augment
from data_pipelines import build
from data_pipelines import input_pipeline as ip
from data_pipelines import schema
from data_pipelines import video_examples
from data_pipelines.fes_events import fes_events_dataset_builder as fes
from data_pipelines.video_examples import BadInput
from evalign_jax.events import Events, write_events

H, W = 720, 1280            # Prophesee Gen4
WINDOW = 50_000             # longer than the 33 ms between annotations: windows overlap
SIZE, CAP = 64, 512
TINY = fes.FesConfig(name="tiny", crop=schema.CropSpec(image_size=SIZE, crop_scale=1.5,
                                                       event_capacity=CAP),
                     window_us=WINDOW, frame_stride=2, chunk_events=300)


def fes_time(frame):
  return int(frame * 1_000_000 / 30)          # FES's xml2txt scripts


def face_track(seed, frames, track=0, centre=(600.0, 350.0)):
  """Annotations of one face moving right: t, track, (x, y, w, h), (N, 5, 2) FES-order points."""
  rng = np.random.default_rng(seed)
  frames = np.asarray(frames)
  n = len(frames)
  x = centre[0] + 4.0 * frames + rng.uniform(-2, 2, n)
  y = centre[1] + rng.uniform(-2, 2, n)
  w, h = rng.uniform(150, 170, n), rng.uniform(190, 210, n)
  xywh = np.stack([x - w / 2, y - h / 2, w, h], -1)
  # right eye, left eye (the subject's: image-left, image-right), nose, mouth right, left
  layout = np.array([[-0.2, -0.15], [0.2, -0.15], [0.0, 0.05], [-0.15, 0.25], [0.15, 0.25]])
  pts = np.stack([x, y], -1)[:, None] + layout * np.stack([w, h], -1)[:, None]
  pts += rng.normal(0, 1.0, pts.shape)
  t = np.array([fes_time(f) for f in frames], np.int64)
  return t, np.full(n, track), xywh, pts


def stream(seed, t_last, n=6000, near=(600.0, 350.0), spread=120.0, extent=(W, H)):
  """Events from 0 to past the last annotation, mostly around the face, some anywhere in
  the top-left `extent` (width, height) of the sensor."""
  rng = np.random.default_rng(seed)
  t = np.sort(rng.integers(0, t_last + 30_000, n))
  around = rng.random(n) < 0.8
  x = np.where(around, rng.normal(near[0], spread, n), rng.uniform(0, extent[0], n))
  y = np.where(around, rng.normal(near[1], spread, n), rng.uniform(0, extent[1], n))
  return Events(t, np.clip(x, 0, extent[0] - 1).astype(int),
                np.clip(y, 0, extent[1] - 1).astype(int), rng.integers(0, 2, n), (H, W))


def cut_recording(path, fraction, inside_word):
  """Truncates a .raw file after `fraction` of its data, at an EVT3 word boundary or not."""
  data = path.read_bytes()
  head = 0
  while data.startswith(b"%", head):
    head = data.index(b"\n", head) + 1
  words = int((len(data) - head) * fraction) // 2
  path.write_bytes(data[:head + 2 * words + int(inside_word)])


BOX_DTYPE = [("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
             ("class_id", "<u4"), ("track_id", "<u4"), ("class_confidence", "<f4")]


def write_npy(path, t, track, xywh, pts, points=True):
  """The preprocessed release's <name>_bbox.npy (box-only without `points`)."""
  dtype = BOX_DTYPE + ([(f, "<f4") for f in fes.POINT_FIELDS] if points else [])
  arr = np.zeros(len(t), dtype)
  arr["t"], arr["track_id"], arr["class_confidence"] = t, track, 1.0
  for i, f in enumerate(("x", "y", "w", "h")):
    arr[f] = xywh[:, i]
  if points:
    for i, f in enumerate(fes.POINT_FIELDS):
      arr[f] = pts.reshape(len(t), 10)[:, i]
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, arr)


def write_txt(path, t, track, xywh, pts):
  """A bbox_fl_txt file as FES's merge script writes it (tab-separated, no header)."""
  lines = []
  for tr in np.unique(track):
    rows = np.flatnonzero(track == tr)
    for j, r in enumerate(rows):
      command = "BB_CREATE" if j == 0 else "BB_DELETE" if j == len(rows) - 1 else \
          "BB_MOVE_AND_RESIZE"
      class_id = "0" if j == 0 else ""
      values = [*xywh[r], *pts[r].ravel()]
      lines.append("\t".join([str(t[r]), str(tr), command, class_id,
                              *(repr(float(v)) for v in values), "1"]))
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")


def write_tensor_h5(path):
  """A Metavision precomputed-tensor HDF5 (the preprocessed release's .h5): no events."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as f:
    f.create_dataset("data", data=np.zeros((2, 2, 9, 16), np.uint8))
    f["data"].attrs["delta_t"] = 50_000


def strip_geometry(path):
  """Rewrites a .raw header without its geometry, as Metavision 2.x Gen4 recordings have."""
  data = path.read_bytes()
  header, body = b"", data
  while body.startswith(b"%"):
    line, body = body[:body.index(b"\n") + 1], body[body.index(b"\n") + 1:]
    if not line.startswith((b"% format", b"% geometry")):
      header += line
  path.write_bytes(header + body)


# name -> (split folder, group, subset, annotation tracks); every recording of the release.
GOOD = {
    "20210923_0_0": ("train", "lab", [face_track(1, range(12))]),
    "03_10": ("train", "wild", [face_track(2, range(12)),
                                face_track(3, range(3, 10), track=1, centre=(300.0, 300.0))]),
    "20211002_0_0": ("val", "lab", [face_track(4, range(10))]),
    "20211004_0_0": ("test", "lab", [face_track(5, range(10))]),
}


def _join(tracks):
  return [np.concatenate(v) for v in zip(*tracks)]


def add_recording(root, name, split, subset, tracks, *, points=True, raw_file=True, h5=True,
                  seed=0):
  """Writes one recording into a release in FES's layout at `root`: the preprocessed
  release's annotations and tensor .h5 under preprocessed_dataset/<split>/ (split: train, val
  or test), the .raw recording under raw_dataset/<subset>/. tracks: `face_track`s.
  points: True = box + landmark annotations, False = box-only ones, None = none.
  Returns the recording's truth (events, annotations, split, ...), None without a raw file.
  """
  pre, raw = root / "preprocessed_dataset", root / "raw_dataset"
  t, track, xywh, pts = _join(tracks)
  group, _, seq = name.rpartition("_")
  if points:
    write_npy(pre / split / "annotations" / "bbox_fl" / subset / f"{name}_bbox.npy", t,
              track, xywh, pts)
  if points is not None:
    # The release's box-only annotations share the name (their folder holds no points).
    write_npy(pre / split / "annotations" / "bbox" / subset / f"{name}_bbox.npy", t, track,
              xywh, pts, points=False)
  if h5:
    write_tensor_h5(pre / split / "event_streams" / group / f"{name}.h5")
  ev = stream(seed, int(t.max()))
  if not raw_file:
    return None
  # Lab: one folder per subject of sequences 0..59; wild: <scene>/<scene>_<seq>.raw.
  path = (raw / "lab" / group / f"{seq}.raw" if subset == "lab"
          else raw / "wild" / group / f"{name}.raw")
  path.parent.mkdir(parents=True, exist_ok=True)
  write_events(path, ev)
  return {"events": ev, "path": path, "t": t, "track": track, "xywh": xywh, "pts": pts,
          "split": split, "subset": subset, "group": group}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """The preprocessed release (FES's split) + the raw recordings; returns (root, truth)."""
  root = tmp_path_factory.mktemp("FES")
  truth = {}

  def add(name, *args, **kwargs):
    rec = add_recording(root, name, *args, **kwargs)
    if rec is not None:
      truth[name] = rec
    return rec

  for i, (name, (split, subset, tracks)) in enumerate(GOOD.items()):
    add(name, split, subset, tracks, seed=10 + i)
  # Bad inputs. A landmark off the sensor:
  t, track, xywh, pts = face_track(6, range(8))
  pts[5, 1, 0] = W + 12.0
  add("20210927_1_0", "train", "lab", [(t, track, xywh, pts)], seed=20)
  # A recording cut inside an EVT3 word, and one cut at a word boundary (ends too early):
  rec = add("20210927_1_1", "train", "lab", [face_track(7, range(8))], seed=21)
  cut_recording(rec["path"], 0.5, inside_word=True)
  rec = add("20210927_1_2", "train", "lab", [face_track(8, range(30))], seed=22)
  cut_recording(rec["path"], 0.3, inside_word=False)
  # A recording without an annotation file (only the raw file), NaN points, a recording whose
  # only event file is a preprocessed tensor .h5, and box-only annotations:
  add("20211002_0_1", "val", "lab", [face_track(9, range(8))], points=None, h5=False, seed=23)
  t, track, xywh, pts = face_track(10, range(8))
  pts[3, 2, 1] = np.nan
  add("20211004_0_1", "test", "lab", [(t, track, xywh, pts)], seed=24)
  add("20211004_0_2", "test", "lab", [face_track(11, range(8))], raw_file=False, seed=25)
  add("05_10", "test", "wild", [face_track(12, range(8))], points=False, seed=26)
  for name in ("20210927_1_0", "20210927_1_1", "20210927_1_2", "20211002_0_1",
               "20211004_0_1", "05_10"):
    truth.pop(name)
  return root, truth


BAD = {"20210927_1_0": "outside the 1280x720 sensor", "20210927_1_1": "truncated evt3",
       "20210927_1_2": "truncated?", "20211002_0_1": "no annotation file",
       "20211004_0_1": "NaN", "20211004_0_2": "precomputed tensors",
       "05_10": "only face boxes"}


def _manual(path):
  return tfds.download.DownloadConfig(manual_dir=str(path))


def _build(data_dir, manual_dir, config=TINY, **kwargs):
  b = fes.Builder(data_dir=str(data_dir), config=config, **kwargs)
  b.download_and_prepare(file_format="array_record", download_config=_manual(manual_dir))
  return b


def expected_example(rec, row, window_us=WINDOW, size=SIZE, cap=CAP):
  """The stored example of annotation `row`, computed with numpy alone."""
  x, y, w, h = rec["xywh"][row].astype(np.float32).astype(np.float64) - [0.5, 0.5, 0, 0]
  side = 1.5 * max(w, h)
  s, c = size / side, (size - 1) / 2.0
  to_crop = lambda px, py: ((px - (x + w / 2)) * s + c, (py - (y + h / 2)) * s + c)
  pts = rec["pts"][row].astype(np.float32).astype(np.float64)[[2, 3, 4, 0, 1]] - 0.5
  lx, ly = to_crop(pts[:, 0], pts[:, 1])
  ev, t_end = rec["events"], int(rec["t"][row])
  sel = (ev.t > t_end - window_us) & (ev.t <= t_end)
  ex, ey = to_crop(ev.x[sel].astype(np.float64), ev.y[sel].astype(np.float64))
  inside = (ex >= -0.5) & (ex < size - 0.5) & (ey >= -0.5) & (ey < size - 0.5)
  keep = np.flatnonzero(inside)[-cap:]                    # the newest `cap`
  return {"landmarks": np.stack([lx, ly], -1), "bbox": np.array(to_crop(*np.array(
              [[x, y], [x + w, y + h]]).T)).T.ravel(),
          "count_total": int(inside.sum()), "x": ex[keep], "y": ey[keep],
          "t": ev.t[sel][keep] - (t_end - window_us), "p": ev.p[sel][keep]}


def check_example(ex, rec, row):
  want = expected_example(rec, row)
  np.testing.assert_allclose(ex["landmarks"], want["landmarks"], atol=1e-3)
  np.testing.assert_allclose(ex["bbox"], want["bbox"], atol=1e-3)
  ev = ex["events"]
  n = int(ev["count"])
  assert int(ev["count_total"]) == want["count_total"] and n == min(CAP, want["count_total"])
  np.testing.assert_array_equal(ev["t"][:n], want["t"])
  np.testing.assert_array_equal(ev["p"][:n], want["p"])
  np.testing.assert_allclose(ev["x"][:n].astype(np.float64), want["x"], atol=0.02)
  np.testing.assert_allclose(ev["y"][:n].astype(np.float64), want["y"], atol=0.02)
  assert not np.any(ev["t"][n:]) and not np.any(ev["x"][n:])
  assert int(ex["window_us"]) == WINDOW
  assert int(ex["t_start_us"]) == int(rec["t"][row]) - WINDOW
  assert int(ex["crop_size"]) == SIZE and "image" not in ex


def test_builds_fes_splits_windows_and_landmarks(tmp_path, release):
  root, truth = release
  b = _build(tmp_path, root)
  report = {k[len("build_report_"):]: v for k, v in b.info.metadata.items()}
  assert sorted(report) == ["test", "train", "validation"]
  reasons = [s for r in report.values() for s in r["skipped_inputs"]]
  assert sum(r["skipped"] for r in report.values()) == len(BAD) == len(reasons)
  for name, words in BAD.items():
    group, _, seq = name.rpartition("_")
    # Each reason names the file: the annotation, or the recording (lab: <subject>/<seq>.raw).
    assert any((name in s or f"{group}/{seq}.raw" in s) and words in s for s in reasons), \
        (name, reasons)
  assert "image" not in b.info.features and "crop_size" in b.info.features
  seen = set()
  for split in ("train", "validation", "test"):
    src = b.as_data_source(split=split)
    for i in range(len(src)):
      ex = src[i]
      name, track = ex["clip_id"].decode().split("/")
      rec = truth[name]
      # FES's own split (val -> validation); ids from the names.
      assert {"val": "validation"}.get(rec["split"], rec["split"]) == split
      assert ex["subject_id"].decode() == rec["group"]
      assert ex["subset"].decode() == rec["subset"]
      frame = int(ex["frame_index"])
      row = np.flatnonzero((rec["t"] == fes_time(frame)) & (rec["track"] == int(track)))
      assert len(row) == 1 and frame % 2 == 0
      check_example(ex, rec, row[0])
      seen.add((name, int(track), frame))
  # Every even annotated frame of every good recording whose window starts at or after the
  # first event (frames 0 and 1 do not) became one example.
  want = {(n, int(tr), int(round(t * 30 / 1e6))) for n, r in truth.items()
          for t, tr in zip(r["t"], r["track"])
          if int(round(t * 30 / 1e6)) % 2 == 0 and t - WINDOW >= r["events"].t[0]}
  assert seen == want and not any(frame < 2 for _, _, frame in want)
  # The synthetic faces put the subject's right eye (FES point 0) on the image left.
  assert all(r["image_left_first_fraction"] == 1.0 for r in report.values())


def test_fail_mode_names_the_file_and_leaves_nothing_complete(tmp_path, release):
  root, _ = release
  with pytest.raises(BadInput, match="|".join(BAD)):
    _build(tmp_path, root, config=TINY, on_error="fail")
  b = fes.Builder(data_dir=str(tmp_path), config=TINY)
  assert not (b.data_path / "dataset_info.json").exists()


def raw_release(root, names, *, geometry=True, extent=(W, H)):
  """The raw release after FES's scripts: <subset>/<group>/<seq>.raw + bbox_fl_txt files."""
  truth = {}
  for i, (name, subset, tracks) in enumerate(names):
    t, track, xywh, pts = _join(tracks)
    group, _, seq = name.rpartition("_")
    write_txt(root / subset / "bbox_fl_txt" / group / f"{name}.txt", t, track, xywh, pts)
    centre = np.mean(xywh[:, :2] + xywh[:, 2:] / 2, axis=0)
    ev = stream(30 + i, int(t.max()), near=centre, spread=60.0, extent=extent)
    path = root / subset / group / (f"{seq}.raw" if subset == "lab" else f"{name}.raw")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_events(path, ev)
    if not geometry:
      strip_geometry(path)
    truth[name] = {"events": ev, "t": t, "track": track, "xywh": xywh, "pts": pts,
                   "subset": subset, "group": group}
  return truth


def test_raw_release_text_annotations_split_by_subject(tmp_path):
  names = [("20211110_0_0", "lab", [face_track(1, range(9))]),
           ("20211110_0_1", "lab", [face_track(2, range(9))]),
           ("20211113_1_4", "lab", [face_track(3, range(9))]),
           ("20211118_0_7", "lab", [face_track(4, range(9))]),
           ("07_12", "wild", [face_track(5, range(9)),
                              face_track(6, range(2, 7), track=3, centre=(900.0, 300.0))])]
  truth = raw_release(tmp_path / "RAW", names)
  fractions = {"train": 0.5, "test": 0.5}
  config = fes.FesConfig(name="tiny_txt", crop=TINY.crop, window_us=WINDOW, frame_stride=2,
                         chunk_events=300, split_fractions=fractions)
  b = _build(tmp_path / "data", tmp_path / "RAW", config=config)
  want_split = {n: video_examples.split_of(f"{r['subset']}/{r['group']}", fractions)
                for n, r in truth.items()}
  assert set(want_split.values()) == {"train", "test"}   # both splits are exercised
  count = 0
  for split in ("train", "test"):
    src = b.as_data_source(split=split)
    for i in range(len(src)):
      ex = src[i]
      name, track = ex["clip_id"].decode().split("/")
      assert want_split[name] == split                  # by subject/scene, never by frame
      rec = truth[name]
      row = np.flatnonzero((rec["t"] == fes_time(int(ex["frame_index"]))) &
                           (rec["track"] == int(track)))
      check_example(ex, rec, row[0])
      count += 1
  # The txt keeps each track's last (BB_DELETE) row: frames 2, 4, 6, 8 of each face (frame 0's
  # window starts before the recording), and the second wild face at frames 2, 4, 6.
  assert count == 5 * 4 + 3
  assert b.info.metadata["build_report_train"]["skipped"] == 0


def test_build_command_sensor_size_and_pipeline_without_rgb(tmp_path):
  # Headers without geometry (Metavision 2.x Gen4 recordings), events only in the top-left
  # 640x480 px and a face at x=700: only the given 1280x720 sensor holds its points.
  names = [("20210924_1_3", "lab", [face_track(1, range(7), centre=(700.0, 300.0))]),
           ("20210924_1_4", "lab", [face_track(2, range(7), centre=(700.0, 300.0))])]
  raw_release(tmp_path / "RAW", names, geometry=False, extent=(640, 480))
  data_dir = tmp_path / "data"
  report = build.build("fes_events", str(data_dir), manual_dir=str(tmp_path / "RAW"),
                       sensor_size=(H, W))
  # Default config: every 5th annotation, 33 ms windows: frame 5 of each (frame 0's window
  # starts before the recording).
  assert [(r["examples"], r["skipped"]) for r in report.values()] == [(2, 0)]
  split = next(iter(report))
  # The input pipeline reads the event-only examples for both tasks.
  source = ip.make_source("fes_events", str(data_dir), split, decode_image=False)
  cmfa = ip.make_dataset(source, task="cmfa", train=True, global_batch_size=2, seed=1,
                         augment_config=augment.AlignmentAugment(out_size=64, flip_prob=1.0),
                         process_index=0, process_count=1)
  batch = cmfa[0]
  assert "image" not in batch and batch["landmarks"].shape == (2, 5, 2)
  assert batch["events"]["x"].shape == (2, 16384) and batch["events"]["valid"].any(-1).all()
  # A flip swaps the image-left and image-right points back into place: eyes left to right.
  assert np.all(batch["landmarks"][:, 3, 0] < batch["landmarks"][:, 4, 0])
  ssmer = ip.make_dataset(source, task="ssmer", train=True, global_batch_size=2, seed=1,
                          augment_config=augment.SsmerAugment(out_size=32),
                          process_index=0, process_count=1)
  views = ssmer[0]["views"]
  assert views["x"].shape == (2, 3, 16384) and views["valid"].any()
