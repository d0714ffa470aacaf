"""Builders for labelled video folders (WFLW-V, eCelebV): `videos/<id>.mp4` + per-video labels.

The events come from our simulator between consecutive frames (DESIGN.md section 4). Splits are
by video (never by frame) through a stable hash of the id, or an explicit split file.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import builder_base
from data_pipelines import geometry
from data_pipelines import video_examples
from data_pipelines.video_examples import BadInput


@dataclasses.dataclass(eq=False)
class VideoConfig(builder_base.EventFaceConfig):
  """Attributes:
    split_fractions: split name -> fraction of videos (by a stable hash of the video id).
    default_fps: frame rate used when the video file does not report one.
  """

  split_fractions: dict = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
  default_fps: float = 30.0


class VideoFolderBuilder(builder_base.EventFaceBuilder):
  """Base for datasets laid out as videos/<id>.mp4 plus label files (see subclasses)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "See the builder's module docstring for the expected layout."

  def _split_names(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    splits = {self._split_of(v, manual_dir) for v in self._video_ids(manual_dir)}
    return [s for s in self.builder_config.split_fractions if s in splits]

  def _video_ids(self, manual_dir: str) -> list[str]:
    videos = os.path.join(manual_dir, "videos")
    if not os.path.isdir(videos):
      raise FileNotFoundError(f"{videos}: no such folder; expected the layout described in "
                              f"{type(self).__module__}")
    return sorted(os.path.splitext(f)[0] for f in os.listdir(videos) if f.endswith(".mp4"))

  def _split_of(self, video_id: str, manual_dir: str) -> str:
    return video_examples.split_of(video_id, self.builder_config.split_fractions)

  def _labels(self, video_id: str, manual_dir: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(T, K, 2) landmarks, (T, 4) boxes and the label file(s) of a video; raise BadInput
    naming the file."""
    raise NotImplementedError

  def _subset(self, video_id: str, manual_dir: str) -> str:
    return ""

  def _clips(self, split, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    for vid in self._video_ids(manual_dir):
      if self._split_of(vid, manual_dir) == split:
        yield lambda vid=vid: self._load(vid, manual_dir)

  def _load(self, vid: str, manual_dir: str) -> video_examples.Clip:
    landmarks, boxes, label_files = self._labels(vid, manual_dir)
    path = os.path.join(manual_dir, "videos", vid + ".mp4")
    frames, fps, count = video_examples.read_video(path)
    if count and count != len(landmarks):
      raise BadInput(f"{path}: the video has {count} frames but {len(landmarks)} are labelled")
    fps = fps if fps > 0 else self.builder_config.default_fps
    ts = np.round(np.arange(len(landmarks)) * 1e6 / fps).astype(np.int64)
    return video_examples.Clip(frames=frames, timestamps_us=ts, landmarks=landmarks,
                               boxes=boxes, clip_id=vid, subject_id=vid,
                               subset=self._subset(vid, manual_dir),
                               source=f"{path} (labels {label_files})")


def load_array(path: str, what: str) -> np.ndarray:
  """np.load with the file named in every error."""
  if not os.path.exists(path):
    raise BadInput(f"{path}: missing {what} file")
  try:
    return np.asarray(np.load(path, allow_pickle=False), np.float64)
  except Exception as e:  # numpy raises several types for corrupt files
    raise BadInput(f"{path}: unreadable {what} file ({type(e).__name__}: {e})") from e


def boxes_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
  return np.stack([geometry.box_of_points(lm) for lm in landmarks]).astype(np.float64)
