"""wflw_v_events: WFLW-V (LDEQ, CVPR 2023) videos with simulated events.

Manual download (its release layout), in `--manual_dir`:
  videos/<id>.mp4          the clips
  landmarks/<id>.npy       (T, 98, 2) WFLW-layout points in frame pixels
  bboxes/<id>.npy          (T, >=4) face boxes, the first 4 values x1, y1, x2, y2
  easy_video_IDs.txt, hard_video_IDs.txt   optional: one id per line -> `subset`
Examples crop 1.5x the box (the training crop, 1.2x, is cut from it with augmentation). Splits
are by video through a stable hash (WFLW-V itself is a test set; a real split is needed to train
on it and the official code's train/test leakage is not reproduced).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from data_pipelines import schema
from data_pipelines import video_dataset
from data_pipelines.video_examples import BadInput


class Builder(video_dataset.VideoFolderBuilder):
  """DatasetBuilder for wflw_v_events."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      video_dataset.VideoConfig(
          name="default", description="Every frame; 320 px crops, 16384 events per window.",
          crop=schema.CropSpec(image_size=320, event_capacity=16384)),
      video_dataset.VideoConfig(
          name="stride5", description="Every 5th frame as an example (events from all frames).",
          crop=schema.CropSpec(image_size=320, event_capacity=16384), frame_stride=5),
  ]

  def _labels(self, vid, manual_dir):
    lm_path = os.path.join(manual_dir, "landmarks", vid + ".npy")
    box_path = os.path.join(manual_dir, "bboxes", vid + ".npy")
    landmarks = video_dataset.load_array(lm_path, "landmarks")
    boxes = video_dataset.load_array(box_path, "bboxes")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (98, 2):
      raise BadInput(f"{lm_path}: landmarks have shape {landmarks.shape}, expected (T, 98, 2)")
    if boxes.ndim != 2 or boxes.shape[1] < 4 or len(boxes) != len(landmarks):
      raise BadInput(f"{box_path}: bboxes have shape {boxes.shape}, expected "
                     f"({len(landmarks)}, >=4) to match {lm_path}")
    return landmarks, boxes[:, :4], f"{lm_path}, {box_path}"

  def _subset(self, vid, manual_dir):
    for name in ("easy", "hard"):
      path = os.path.join(manual_dir, f"{name}_video_IDs.txt")
      if os.path.exists(path):
        with open(path) as f:
          if vid in {line.strip() for line in f}:
            return name
    return ""
