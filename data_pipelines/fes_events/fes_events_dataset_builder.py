"""fes_events: FES (Faces in Event Streams, Sensors 2024) — real Prophesee recordings of faces
with boxes and 5 landmarks. Events only: there is no RGB.

Manual download (Hugging Face `issai/Faces_in_Event_Streams`; unpack its zips), in
`--manual_dir`, any folder depth:
  annotations, one file per recording <name>, either
    <split>/.../<name>_bbox.npy   the preprocessed release (<split> = train, val or test: FES's
                                  own split). A structured array in Prophesee's box format plus
                                  the points: t (µs), x, y, w, h (face box: top-left corner and
                                  size, sensor px), track_id, x0, y0, ..., x4, y4 (points, sensor
                                  px). Box-only files of the same name (no x0..y4) are ignored.
    .../bbox_fl_txt/<group>/<name>.txt   what FES's preprocessing scripts write from the raw
                                  release's CVAT XML: tab-separated rows t (µs), object_id,
                                  command, class_id (empty after a track's first row), x, y, w,
                                  h, x0, y0, ..., x4, y4, confidence.
  recordings: .../<name>.<ext>, or .../<group>/<seq>.<ext> for <name> = <group>_<seq> (the raw
    release's folder of sequences 0..59 per subject), ext in EVENT_EXTENSIONS; for several
    files of one name the first extension in that order is read (the preprocessed .h5 files
    hold precomputed tensors, not events, so a raw recording goes first).
Names: lab recordings are <subject>_<seq> with subject YYYYMMDD_k; wild ones <scene>_<seq>.
`subset` is "lab" or "wild" (a "lab"/"wild" folder on the path, else the name's pattern).

FES's points are, in order, right eye, left eye, nose, right mouth corner, left mouth corner
(the subject's right, so the image-left one for a frontal face); they are stored in this
project's 5-point layout (landmarks.py: nose, mouth corners image-left/right, eyes
image-left/right) by `FesConfig.landmark_order`. The build report's
`image_left_first_fraction` (eyes and mouth corners ordered left to right in x) checks that
reading on the data: near 1 when it holds.

One example per annotated face and time t whose frame (t x 30 Hz) is a multiple of
`frame_stride` and whose window starts within the recording (not before its first event):
the events with t - window_us < t_ev <= t, the box and the 5 points, cropped
as in every other dataset (`schema.py`, event-only: `crop_size`, no `image`). Annotation
coordinates are CVAT's (pixel centres at +0.5), moved by `label_offset_px` into the events'
pixel grid (centres at integers). ids: clip_id "<name>/<track>", subject_id the subject (lab)
or scene (wild), frame_index the 30 Hz frame.

Splits: FES's own (train, val -> validation, test) for annotations under such a folder; else
by a stable hash of the subject or scene, never by frame. A recording is used whole or not at
all: no annotation, no recording, an unreadable or truncated recording, one that ends before
its annotations, annotations without points, NaN, an empty box, a point off the sensor or a
face annotated twice at one time are named and counted (or fail the build, on_error="fail").
Recordings are streamed in chunks, so memory stays bounded whatever their length.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import builder_base
from data_pipelines import schema
from data_pipelines import video_examples
from data_pipelines.video_examples import BadInput
from evalign_jax.events import EventFileError, Events, iter_event_chunks

# Preference order when a recording exists in several formats.
EVENT_EXTENSIONS = (".raw", ".dat", ".aedat4", ".npz", ".hdf5", ".h5")
# Folder name -> split name (the other datasets call it "validation").
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation",
                 "test": "test"}
SPLITS = ("train", "validation", "test")
POINT_FIELDS = tuple(f"{axis}{k}" for k in range(5) for axis in "xy")    # x0, y0, ..., y4
BOX_FIELDS = ("x", "y", "w", "h")
# FES point k -> this project's 5-point layout: nose, mouth image-left (FES's right mouth
# corner), mouth image-right, eye image-left (FES's right eye), eye image-right.
FES_TO_5POINT = (2, 3, 4, 0, 1)
_NPY_SUFFIX = "_bbox.npy"
_TXT_FOLDER = "bbox_fl_txt"
_TXT_COLUMNS = 19


@dataclasses.dataclass(eq=False)
class FesConfig(builder_base.EventFaceConfig):
  """Attributes:
    window_us: length of the event window that ends at each annotation time, µs.
    annotation_rate_hz: the rate the annotated video was rendered at (FES: t = frame x 1e6/30).
    label_offset_px: added to annotated x and y (CVAT puts pixel centres at +0.5, the events
      at integers).
    landmark_order: stored point i is FES point landmark_order[i].
    end_tolerance_us: a recording whose last event is more than this before its last
      annotation is reported as truncated.
    split_fractions: split -> fraction of subjects, for annotations outside a split folder.
    chunk_events: events read from a recording at a time (bounds memory).
  """

  num_landmarks: int = 5
  window_us: int = 33_333
  annotation_rate_hz: float = 30.0
  label_offset_px: float = -0.5
  landmark_order: tuple = FES_TO_5POINT
  end_tolerance_us: int = 100_000
  split_fractions: dict = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
  chunk_events: int = 1 << 20
  # Every 5th annotation (6 Hz): consecutive 30 Hz annotations of a face are near duplicates.
  frame_stride: int = 5
  # A Gen4 face crop can fire tens of thousands of events in 33 ms when the head moves.
  crop: schema.CropSpec = schema.CropSpec(image_size=320, event_capacity=16384)


@dataclasses.dataclass(frozen=True)
class Recording:
  """One recording as found in the release (paths None when missing).

  `problem` is a bad input found while indexing, reported when the recording's turn comes.
  """

  name: str
  group: str
  subset: str
  split: str
  annotation: str | None
  events: str | None
  problem: str | None = None


@dataclasses.dataclass(frozen=True)
class Annotations:
  """A recording's annotations in FES's own terms (N rows, sorted by time then track).

  Attributes:
    t: (N,) int64 µs, in the recording's time base.
    track: (N,) int64 face track id.
    boxes: (N, 4) float64 (x0, y0, x1, y1) sensor px, CVAT convention.
    points: (N, 5, 2) float64 sensor px in FES's order, CVAT convention.
    source: the file, for messages.
  """

  t: np.ndarray
  track: np.ndarray
  boxes: np.ndarray
  points: np.ndarray
  source: str


class Builder(builder_base.EventFaceBuilder):
  """DatasetBuilder for fes_events."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [
      FesConfig(name="default",
                description="33 ms windows (one annotation period), every 5th annotation."),
      FesConfig(name="window50ms", window_us=50_000,
                description="50 ms windows, every 5th annotation."),
      FesConfig(name="window100ms", window_us=100_000,
                description="100 ms windows, every 5th annotation."),
  ]

  def __init__(self, *, sensor_size=None, **kwargs):
    """sensor_size: (height, width) of the recordings, overriding theirs (a header without
    geometry otherwise gives the camera it names, else an inferred size, with a warning)."""
    self.sensor_size = None if sensor_size is None else tuple(int(s) for s in sensor_size)
    self._indexes = {}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=schema.features(c.num_landmarks, c.crop.image_size, c.crop.event_capacity,
                                 rgb=False),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/IS2AI/faces-in-event-streams",
    )

  def _recordings(self, manual_dir: str) -> list[Recording]:
    # Indexed once: _split_names and every split's _clips need it.
    if manual_dir not in self._indexes:
      self._indexes[manual_dir] = index_release(manual_dir, self.builder_config.split_fractions)
    return self._indexes[manual_dir]

  def _split_names(self, dl_manager):
    found = {r.split for r in self._recordings(os.fspath(dl_manager.manual_dir))}
    return [s for s in SPLITS if s in found]

  def _clips(self, split, dl_manager):
    for rec in self._recordings(os.fspath(dl_manager.manual_dir)):
      if rec.split == split:
        yield functools.partial(load_recording, rec)

  def _clip_examples(self):
    c = self.builder_config
    return functools.partial(recording_examples, config=c, sensor_size=self.sensor_size)

  # Recordings per split from which decoding them in parallel repays starting the processes
  # (~2 s each); the release has thousands.
  PARALLEL_FROM = 16

  def _generate_examples(self, split, dl_manager):
    stats = _FesStats()
    n = sum(r.split == split for r in self._recordings(os.fspath(dl_manager.manual_dir)))
    workers = min(os.cpu_count() or 1, 8) if n >= self.PARALLEL_FROM else 0
    yield from video_examples.guarded(self._clips(split, dl_manager), self._clip_examples(),
                                      self.on_error, stats, workers=workers)
    self.info.metadata[f"build_report_{split}"] = stats.as_dict()


@dataclasses.dataclass
class _FesStats(video_examples.BuildStats):
  """The build report plus a check of the left/right reading of FES's point names."""

  image_left_first: int = 0

  def add(self, example: dict) -> None:
    super().add(example)
    x = example["landmarks"][:, 0]
    self.image_left_first += int(x[3] < x[4] and x[1] < x[2])

  def as_dict(self) -> dict:
    return {**super().as_dict(),
            "image_left_first_fraction": self.image_left_first / max(self.examples, 1)}


# ---------------------------------------------------------------------------------------------
# The release on disk -> recordings


def index_release(manual_dir: str, split_fractions: dict) -> list[Recording]:
  """Pairs every annotation file with its recording (and reports either one alone)."""
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"{manual_dir}: no such folder; see {__name__} for the layout")
  annotations = collections.defaultdict(list)       # name -> landmark annotation files
  box_only = set()                                  # names with only face-box annotations
  events = collections.defaultdict(list)            # name -> (preference, path)
  for folder, dirs, files in os.walk(manual_dir):
    dirs.sort()
    parts = os.path.relpath(folder, manual_dir).split(os.sep)
    for f in sorted(files):
      path = os.path.join(folder, f)
      stem, ext = os.path.splitext(f)
      if f.endswith(_NPY_SUFFIX):
        name = f[:-len(_NPY_SUFFIX)]
        fields = _npy_fields(path)
        if fields is not None and not set(POINT_FIELDS) <= set(fields):
          box_only.add(name)
        else:                                       # unreadable headers are reported later
          annotations[name].append(path)
      elif ext == ".txt" and _TXT_FOLDER in parts:
        annotations[stem].append(path)
      elif ext.lower() in EVENT_EXTENSIONS:
        # A bare sequence number is named by its folder: raw/lab/<subject>/<seq>.raw.
        name = f"{parts[-1]}_{stem}" if stem.isdigit() and parts[-1] != "." else stem
        events[name].append((EVENT_EXTENSIONS.index(ext.lower()), path))
  recordings = []
  for name in sorted(set(annotations) | set(events)):
    anns = annotations.get(name, [])
    evs = sorted(events.get(name, []))
    problem = None
    if len(anns) > 1:
      problem = f"{anns[0]}: recording {name} is annotated by several files {anns}"
    elif len(evs) > 1 and evs[0][0] == evs[1][0]:
      problem = f"{evs[0][1]}: several recordings are named {name}: {[p for _, p in evs]}"
    elif not anns:
      what = ("only face boxes are annotated (no landmarks)" if name in box_only else
              f"no annotation file ({name}{_NPY_SUFFIX} or {_TXT_FOLDER}/.../{name}.txt)")
      problem = f"{evs[0][1]}: {what}"
    elif not evs:
      problem = (f"{anns[0]}: no recording of {name} (looked for {name}.<ext> and "
                 f"<group>/<seq>.<ext>, ext in {EVENT_EXTENSIONS})")
    group, subset = _group(name), _subset(name, anns + [p for _, p in evs], manual_dir)
    split = _folder_split(anns[0] if anns else evs[0][1], manual_dir)
    if split is None:
      split = video_examples.split_of(f"{subset}/{group}", split_fractions)
    recordings.append(Recording(name=name, group=group, subset=subset, split=split,
                                annotation=anns[0] if anns else None,
                                events=evs[0][1] if evs else None, problem=problem))
  if not recordings:
    raise FileNotFoundError(f"{manual_dir}: no FES annotations or recordings found; see "
                            f"{__name__} for the layout")
  return recordings


def _npy_fields(path: str) -> tuple[str, ...] | None:
  """The field names of a .npy file from its header alone (None if unreadable)."""
  fmt = np.lib.format
  try:
    with open(path, "rb") as f:
      version = fmt.read_magic(f)
      reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
      _, _, dtype = reader(f)
  except (OSError, ValueError):
    return None
  return dtype.names or ()


def _group(name: str) -> str:
  """The subject (lab, YYYYMMDD_k) or scene (wild) of a recording <group>_<seq>."""
  group, _, seq = name.rpartition("_")
  return group if group and seq.isdigit() else name


def _subset(name: str, paths: list[str], manual_dir: str) -> str:
  for path in paths:
    parts = os.path.relpath(path, manual_dir).lower().split(os.sep)
    for subset in ("lab", "wild"):
      if subset in parts:
        return subset
  return "lab" if re.fullmatch(r"\d{8}_\d+", _group(name)) else "wild"


def _folder_split(path: str, manual_dir: str) -> str | None:
  """The split of the nearest train/val/test folder above `path`, if any."""
  for part in reversed(os.path.relpath(path, manual_dir).split(os.sep)[:-1]):
    if part.lower() in SPLIT_FOLDERS:
      return SPLIT_FOLDERS[part.lower()]
  return None


# ---------------------------------------------------------------------------------------------
# Annotation files


def load_recording(rec: Recording) -> tuple[Recording, Annotations]:
  """A recording's annotations, checked (BadInput naming the file for anything unusable)."""
  if rec.problem is not None:
    raise BadInput(rec.problem)
  if rec.annotation.endswith(".npy"):
    ann = read_npy_annotations(rec.annotation)
  else:
    ann = read_txt_annotations(rec.annotation)
  return rec, ann


def read_npy_annotations(path: str) -> Annotations:
  """A preprocessed-release `<name>_bbox.npy` (see the module docstring)."""
  try:
    arr = np.load(path, allow_pickle=False)
  except Exception as e:  # numpy raises several types for corrupt files
    raise BadInput(f"{path}: unreadable annotation file ({type(e).__name__}: {e})") from e
  names = arr.dtype.names or ()
  missing = [f for f in ("t", *BOX_FIELDS, *POINT_FIELDS) if f not in names]
  if missing:
    raise BadInput(f"{path}: annotation fields {missing} missing (has {list(names)})")
  arr = arr.reshape(-1)
  track = arr["track_id"] if "track_id" in names else np.zeros(len(arr))
  box = np.stack([arr[f].astype(np.float64) for f in BOX_FIELDS], -1)
  points = np.stack([arr[f].astype(np.float64) for f in POINT_FIELDS], -1).reshape(-1, 5, 2)
  return _checked(path, arr["t"], track, box, points)


def read_txt_annotations(path: str) -> Annotations:
  """A `bbox_fl_txt` file from FES's preprocessing scripts (see the module docstring)."""
  rows = []
  try:
    with open(path) as f:
      for i, line in enumerate(f):
        if not line.strip():
          continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) != _TXT_COLUMNS:
          cols = line.split()
          if len(cols) == _TXT_COLUMNS - 1:        # whitespace lost the empty class_id
            cols.insert(3, "")
        if len(cols) != _TXT_COLUMNS:
          raise BadInput(f"{path}: line {i + 1} has {len(cols)} columns, expected "
                         f"{_TXT_COLUMNS} (t, object_id, command, class_id, x, y, w, h, "
                         f"x0, y0, ..., x4, y4, confidence)")
        rows.append([cols[0], cols[1], *cols[4:18]])
    table = np.array(rows, dtype=np.float64).reshape(-1, 16)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise BadInput(f"{path}: unreadable annotation file ({type(e).__name__}: {e})") from e
  return _checked(path, table[:, 0], table[:, 1], table[:, 2:6], table[:, 6:].reshape(-1, 5, 2))


def _checked(path, t, track, xywh, points) -> Annotations:
  """Validated Annotations from raw columns (box as top-left + size), sorted by time, track."""
  t, track = np.asarray(t), np.asarray(track)
  if len(t) == 0:
    raise BadInput(f"{path}: no annotations")
  for what, v in (("timestamps", t), ("track ids", track)):
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
      raise BadInput(f"{path}: {what} must be whole numbers")
  bad = ~(np.isfinite(xywh).all(-1) & np.isfinite(points).all((-1, -2)))
  if bad.any():
    i = int(np.argmax(bad))
    raise BadInput(f"{path}: NaN/Inf in {int(bad.sum())} annotations (first at t={int(t[i])} "
                   "µs)")
  empty = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
  if empty.any():
    raise BadInput(f"{path}: empty face box (w or h <= 0) at t={int(t[np.argmax(empty)])} µs")
  t, track = t.astype(np.int64), track.astype(np.int64)
  order = np.lexsort((track, t))
  t, track, xywh, points = t[order], track[order], xywh[order], points[order]
  dup = (np.diff(t) == 0) & (np.diff(track) == 0)
  if dup.any():
    raise BadInput(f"{path}: face {track[np.argmax(dup)]} is annotated twice at "
                   f"t={t[np.argmax(dup)]} µs")
  boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=-1)
  return Annotations(t=t, track=track, boxes=boxes, points=points, source=path)


# ---------------------------------------------------------------------------------------------
# A recording -> examples


def recording_examples(clip: tuple[Recording, Annotations], *, config: FesConfig,
                       sensor_size=None):
  """Yields (key, example) per kept annotation, streaming the recording once.

  Raises BadInput (naming the file) for an unreadable or truncated recording, one that ends
  before its annotations, and points off the sensor.
  """
  rec, ann = clip
  try:
    chunks = iter_event_chunks(rec.events, chunk_events=config.chunk_events,
                               sensor_size=sensor_size)
  except EventFileError as e:
    raise BadInput(_event_file_problem(e, rec.events)) from e
  with contextlib.closing(chunks):
    yield from _windows(rec, ann, chunks, config)


def _windows(rec: Recording, ann: Annotations, chunks, c: FesConfig):
  buffer = _next_chunk(chunks, rec)
  if buffer is None:
    raise BadInput(f"{rec.events}: the recording holds no events")
  points = ann.points[:, list(c.landmark_order)] + c.label_offset_px
  boxes = ann.boxes + c.label_offset_px
  _check_on_sensor(points, ann, buffer.sensor_size)
  frames = np.rint(ann.t * c.annotation_rate_hz / 1e6).astype(np.int64)
  w = int(c.window_us)
  # A window that starts before the recording's first event would be partly empty.
  keep = np.flatnonzero((frames % c.frame_stride == 0) & (ann.t - w >= buffer.t[0]))
  i, done = 0, False
  while True:
    # The window of annotation k is complete once an event later than t_k has been read.
    while i < len(keep) and (done or ann.t[keep[i]] < buffer.t[-1]):
      k = keep[i]
      t_end = int(ann.t[k])
      window = buffer.time_window(t_end - w + 1, t_end + 1)
      example = schema.crop_example(
          None, points[k], boxes[k], window, t_end - w, t_end, c.crop,
          clip_id=f"{rec.name}/{ann.track[k]}", subject_id=rec.group, subset=rec.subset,
          frame_index=int(frames[k]))
      yield f"{rec.name}/{ann.track[k]}/{t_end}", example
      i += 1
    if i == len(keep) and (done or buffer.t[-1] > ann.t[-1]):
      return
    chunk = _next_chunk(chunks, rec)
    if chunk is None:
      done = True
      last = int(buffer.t[-1])
      if ann.t[-1] > last + c.end_tolerance_us:
        raise BadInput(f"{rec.events}: the recording ends at {last} µs but is annotated up "
                       f"to {int(ann.t[-1])} µs ({ann.source}): truncated?")
      continue
    # Keep only what the remaining windows need: events after the next window's start.
    start = int(ann.t[keep[i]]) - w if i < len(keep) else int(chunk.t[0])
    buffer = Events.concatenate([buffer.time_window(start + 1), chunk])


def _next_chunk(chunks, rec: Recording) -> Events | None:
  try:
    return next(chunks, None)
  except EventFileError as e:
    raise BadInput(_event_file_problem(e, rec.events)) from e


def _check_on_sensor(points: np.ndarray, ann: Annotations, sensor_size) -> None:
  """Points (in the events' pixel grid) must lie within the sensor's outer pixel edges."""
  h, w = sensor_size
  x, y = points[..., 0], points[..., 1]
  off = ((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)).any(-1)
  if off.any():
    k = int(np.argmax(off))
    raise BadInput(f"{ann.source}: {int(off.sum())} annotations put a landmark outside the "
                   f"{w}x{h} sensor (first at t={int(ann.t[k])} µs, points "
                   f"{np.round(ann.points[k], 1).tolist()})")


def _event_file_problem(e: EventFileError, path: str) -> str:
  msg = str(e)
  if path.lower().endswith((".h5", ".hdf5")) and "no event datasets" in msg:
    msg += (" — the preprocessed FES .h5 files hold precomputed tensors, not events; put the "
            "raw recordings (.raw) under --manual_dir too")
  return msg
