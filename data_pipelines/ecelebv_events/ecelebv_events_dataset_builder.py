"""ecelebv_events: CelebV-HQ clips + user-supplied 98-point labels, with simulated events.

Manual download, in `--manual_dir`:
  videos/<clip_id>.mp4     CelebV-HQ clips
  labels/<clip_id>.npy     (T, 98, 2) WFLW-layout points per frame (e.g. pseudo-labels from an
                           RGB aligner); clips without a label file are skipped and counted
  split.json               optional {"train": [ids], "validation": [ids], "test": [ids]}
                           (e.g. the official multilabel split); else a stable hash by clip
Face boxes are the landmarks' bounding boxes.
"""

from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from data_pipelines import schema
from data_pipelines import video_dataset
from data_pipelines.video_examples import BadInput


class Builder(video_dataset.VideoFolderBuilder):
  """DatasetBuilder for ecelebv_events."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      video_dataset.VideoConfig(name="default", description="Every 5th frame, 320 px crops.",
                                crop=schema.CropSpec(image_size=320, event_capacity=16384),
                                frame_stride=5),
  ]

  def _split_of(self, vid, manual_dir):
    path = os.path.join(manual_dir, "split.json")
    if not os.path.exists(path):
      return super()._split_of(vid, manual_dir)
    if not hasattr(self, "_split_table"):
      try:
        with open(path) as f:
          table = json.load(f)
        self._split_table = {v: s for s, ids in table.items() for v in ids}
      except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}: not a {{split: [clip ids]}} JSON file ({e})") from e
    return self._split_table.get(vid, "unlisted")

  def _labels(self, vid, manual_dir):
    path = os.path.join(manual_dir, "labels", vid + ".npy")
    landmarks = video_dataset.load_array(path, "labels")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (98, 2):
      raise BadInput(f"{path}: labels have shape {landmarks.shape}, expected (T, 98, 2)")
    return landmarks, video_dataset.boxes_from_landmarks(landmarks), path
