"""esie: the E-SIE layout — real paired RGB frames and events, 5 points + a face box.

Manual download, in `--manual_dir`, per subject `<user>` and session `<subuser>`:
  label/<user>/<subuser>/<frame>.txt   one line: x0 y0 ... x4 y4 (nose tip, mouth corners
                                       image-left/right, pupils image-left/right), then the box
                                       x_min y_min x_max y_max
  rgb/<user>/<subuser>/<frame>.png     the RGB frame
and the events, either
  events/<user>/<subuser>.<ext>        a raw recording (any format evalign_jax.events reads) on
                                       the RGB frame's pixel grid, plus
  timestamps/<user>/<subuser>.txt      lines "<frame> <t_us>": each frame's capture time
                                       (config "raw": the window is (previous frame, frame])
or
  <repr>/<user>/<subuser>/<frame>.png  pre-rendered event images (config "rendered", repr
                                       "frame"), stored as `event_image`; `events` is then empty.
E-SIE is a test set (the official code only evaluates on it): everything goes to `test`, and
subject ids are kept so a subject-disjoint split can be made.
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import builder_base
from data_pipelines import geometry
from data_pipelines import schema
from data_pipelines.video_examples import BadInput
from evalign_jax.events import EventFileError, Events, read_events


@dataclasses.dataclass(eq=False)
class EsieConfig(builder_base.EventFaceConfig):
  """Attributes:
    source: "raw" (event files + timestamps) or "rendered" (pre-rendered event PNGs).
    representation: folder of the pre-rendered images for source="rendered".
    sensor_size: (height, width) of the event files, overriding theirs (e.g. for recordings
      whose header gives none, where it is otherwise inferred with a warning).
  """

  source: str = "raw"
  representation: str = "frame"
  sensor_size: tuple[int, int] | None = None


class Builder(builder_base.EventFaceBuilder):
  """DatasetBuilder for esie."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [
      EsieConfig(name="raw", num_landmarks=5, description="Raw event files + frame times."),
      EsieConfig(name="rendered", num_landmarks=5, source="rendered",
                 description="Pre-rendered event images (the official code's input)."),
  ]

  def _extra_features(self):
    c = self.builder_config
    if c.source != "rendered":
      return {}
    size = c.crop.image_size
    return {"event_image": tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg")}

  def _split_names(self, dl_manager):
    return ["test"]

  def _clips(self, split, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    label_root = os.path.join(root, "label")
    if not os.path.isdir(label_root):
      raise FileNotFoundError(f"{label_root}: no such folder; see {__name__} for the layout")
    for user in sorted(os.listdir(label_root)):
      for sub in sorted(os.listdir(os.path.join(label_root, user))):
        yield lambda user=user, sub=sub: self._session(root, user, sub)

  def _session(self, root, user, sub) -> dict:
    label_dir = os.path.join(root, "label", user, sub)
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(label_dir) if f.endswith(".txt"))
    if not names:
      raise BadInput(f"{label_dir}: no label files")
    labels = np.stack([_read_label(os.path.join(label_dir, n + ".txt")) for n in names])
    session = {"root": root, "user": user, "sub": sub, "names": names,
               "landmarks": labels[:, :10].reshape(-1, 5, 2), "boxes": labels[:, 10:14]}
    if self.builder_config.source == "raw":
      session["times"] = _read_times(os.path.join(root, "timestamps", user, sub + ".txt"), names)
      session["events"] = _find_events(os.path.join(root, "events", user), sub)
    return session

  def _clip_examples(self):
    return self._session_examples

  def _session_examples(self, session: dict):
    c = self.builder_config
    root, user, sub = session["root"], session["user"], session["sub"]
    events = None
    if c.source == "raw":
      try:
        events = read_events(session["events"], sensor_size=c.sensor_size)
      except EventFileError as e:
        raise BadInput(str(e)) from e
      times = session["times"]
    for i, name in enumerate(session["names"]):
      rgb_path = os.path.join(root, "rgb", user, sub, name + ".png")
      rgb = _read_rgb(rgb_path)
      box, lms = session["boxes"][i], session["landmarks"][i]
      if c.source == "raw":
        if events.sensor_size != rgb.shape[:2]:
          raise BadInput(f"{session['events']}: the {events.sensor_size} sensor does not match "
                         f"the {rgb.shape[:2]} RGB frame {rgb_path} (pairs must share a grid)")
        t_end = int(times[i])
        t_start = int(times[i - 1]) if i else t_end - int(np.median(np.diff(times)) if
                                                          len(times) > 1 else 33_333)
        window = events.time_window(t_start + 1, t_end + 1)
      else:
        window, t_start, t_end = Events.empty(rgb.shape[:2]), 0, 1
      key = f"{user}/{sub}/{name}"
      example = schema.crop_example(rgb, lms, box, window, t_start, t_end, c.crop,
                                    clip_id=f"{user}/{sub}", subject_id=user, subset=sub,
                                    frame_index=i)
      if c.source == "rendered":
        path = os.path.join(root, c.representation, user, sub, name + ".png")
        image = _read_rgb(path)
        if image.shape != rgb.shape:
          raise BadInput(f"{path}: shape {image.shape} differs from the RGB frame's {rgb.shape}")
        m = geometry.box_crop_matrix(box, c.crop.crop_scale, c.crop.image_size)
        crop = cv2.warpAffine(image, m, (c.crop.image_size,) * 2, flags=cv2.INTER_LINEAR)
        example["event_image"] = schema.encode_jpeg(crop, c.crop.jpeg_quality)
      yield key, example


def _read_label(path: str) -> np.ndarray:
  try:
    with open(path) as f:
      values = np.array(f.read().split()[:14], np.float64)
  except (OSError, ValueError) as e:
    raise BadInput(f"{path}: unreadable label ({e})") from e
  if values.shape != (14,):
    raise BadInput(f"{path}: expected 10 landmark values and 4 box values, got {values.size}")
  if not np.all(np.isfinite(values)):
    raise BadInput(f"{path}: NaN/Inf in the label")
  return values


def _read_times(path: str, names: list[str]) -> np.ndarray:
  if not os.path.exists(path):
    raise BadInput(f"{path}: missing frame timestamps for the raw events")
  table = {}
  with open(path) as f:
    for line in f:
      parts = line.split()
      if len(parts) >= 2:
        table[os.path.splitext(parts[0])[0]] = parts[1]
  missing = [n for n in names if n not in table]
  if missing:
    raise BadInput(f"{path}: no timestamp for labelled frame(s) {missing[:5]}")
  try:
    times = np.array([int(float(table[n])) for n in names], np.int64)
  except ValueError as e:
    raise BadInput(f"{path}: unreadable timestamp ({e})") from e
  if np.any(np.diff(times) <= 0):
    raise BadInput(f"{path}: frame timestamps do not increase")
  return times


def _find_events(folder: str, session: str) -> str:
  if os.path.isdir(folder):
    for f in sorted(os.listdir(folder)):
      if os.path.splitext(f)[0] == session:
        return os.path.join(folder, f)
  raise BadInput(f"{folder}: no event file for session {session!r}")


def _read_rgb(path: str) -> np.ndarray:
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise BadInput(f"{path}: missing or unreadable image (a missing RGB/event pair)")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
