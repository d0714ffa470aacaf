"""The example format every builder writes and the input pipeline reads.

One example is one labelled RGB frame plus the events of the time window that ends at it:

  image        (S, S, 3) uint8 RGB: a square crop of `crop_scale` x the face box side, S px;
               absent from event-only datasets (a camera without frames, e.g. FES), which
               store instead
  crop_size    int32 S, the side of the crop's pixel frame (event-only datasets only)
  landmarks    (K, 2) float32, pixel coordinates (x, y) in `image` (centres at integers)
  bbox         (4,) float32 face box (x0, y0, x1, y1) in `image`
  events       x, y: (C,) float16 coordinates in `image`'s frame (sub-pixel: the crop scales);
               t: (C,) int32 µs after the window start, in (0, window_us];
               p: (C,) uint8 0/1; count: valid entries (the first `count`);
               count_total: events the window held before truncation to C
  window_us    int32 length of the window (t_start_us, t_start_us + window_us]
  t_start_us   int64 absolute window start (the previous frame's time)
  clip_id, subject_id, subset: text; frame_index: int32 (frame within the clip)

Events are stored as coordinates, never as images, so augmentation moves them exactly and the
representations are rendered later, on device. Padding is zeros and compresses away (zlib).
When a window holds more than C events the latest C are kept (closest to the RGB frame).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import geometry
from evalign_jax.events import Events, PaddedEvents

EVENT_FIELDS = ("x", "y", "t", "p")


def features(num_landmarks: int, image_size: int, event_capacity: int,
             extra: dict | None = None, *, rgb: bool = True) -> tfds.features.FeaturesDict:
  """The tfds feature spec of the format above (+ dataset-specific `extra` features).

  rgb=False is the event-only format: `crop_size` replaces `image`.
  """
  vec = lambda dtype: tfds.features.Tensor(shape=(event_capacity,), dtype=dtype,
                                           encoding=tfds.features.Encoding.ZLIB)
  if rgb:
    frame = {"image": tfds.features.Image(shape=(image_size, image_size, 3),
                                          encoding_format="jpeg")}
  else:
    frame = {"crop_size": tfds.features.Scalar(dtype=np.int32)}
  spec = {
      **frame,
      "landmarks": tfds.features.Tensor(shape=(num_landmarks, 2), dtype=np.float32),
      "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "events": tfds.features.FeaturesDict({
          "x": vec(np.float16), "y": vec(np.float16), "t": vec(np.int32), "p": vec(np.uint8),
          "count": tfds.features.Scalar(dtype=np.int32),
          "count_total": tfds.features.Scalar(dtype=np.int32),
      }),
      "window_us": tfds.features.Scalar(dtype=np.int32),
      "t_start_us": tfds.features.Scalar(dtype=np.int64),
      "clip_id": tfds.features.Text(),
      "subject_id": tfds.features.Text(),
      "subset": tfds.features.Text(),
      "frame_index": tfds.features.Scalar(dtype=np.int32),
  }
  spec.update(extra or {})
  return tfds.features.FeaturesDict(spec)


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """How a frame becomes a stored example.

  Attributes:
    image_size: S, the stored crop's side in pixels.
    crop_scale: the crop square's side over the face box's longer side. Larger than the
      training crop (1.2) so rotation/scale/shift augmentation has real pixels to use.
    event_capacity: C, events stored per window.
    jpeg_quality: stored RGB quality (0-100).
  """

  image_size: int = 320
  crop_scale: float = 1.5
  event_capacity: int = 8192
  jpeg_quality: int = 95


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise ValueError("JPEG encoding failed")
  return buf.tobytes()


def crop_example(frame_rgb: np.ndarray | None, landmarks: np.ndarray, box: np.ndarray,
                 window: Events, t_start_us: int, t_end_us: int, spec: CropSpec, *,
                 clip_id: str, subject_id: str, subset: str, frame_index: int) -> dict:
  """One frame + its window of sensor-frame events -> an example dict of the format above.

  Args:
    frame_rgb: (H, W, 3) uint8 full frame, or None for an event-only example (`crop_size`
      is stored instead of `image`).
    landmarks: (K, 2) pixel coordinates in the frame.
    box: (4,) face box in the frame; the crop is `spec.crop_scale` x its longer side.
    window: the events with t_start_us < t <= t_end_us, in the frame's pixel grid.
  """
  if not np.all(np.isfinite(landmarks)) or not np.all(np.isfinite(box)):
    raise ValueError("landmarks or box contain NaN/Inf")
  size = spec.image_size
  m = geometry.box_crop_matrix(box, spec.crop_scale, size)
  if frame_rgb is None:
    frame = {"crop_size": np.int32(size)}
  else:
    image = cv2.warpAffine(frame_rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    frame = {"image": encode_jpeg(image, spec.jpeg_quality)}
  lms = geometry.apply_to_points(m, landmarks).astype(np.float32)
  corners = geometry.apply_to_points(m, np.reshape(box, (2, 2))).reshape(4)
  xy = geometry.apply_to_points(m, np.stack([window.x, window.y], -1))
  inside = np.all((xy >= -0.5) & (xy < size - 0.5), axis=-1)
  t = (window.t[inside] - t_start_us).astype(np.int32)
  xy, p = xy[inside], window.p[inside]
  total = len(t)
  cap = spec.event_capacity
  keep = slice(max(0, total - cap), total)            # the latest events
  n = min(total, cap)
  ev = {k: np.zeros(cap, dt) for k, dt in
        (("x", np.float16), ("y", np.float16), ("t", np.int32), ("p", np.uint8))}
  ev["x"][:n], ev["y"][:n] = xy[keep, 0], xy[keep, 1]
  ev["t"][:n], ev["p"][:n] = t[keep], p[keep]
  ev["count"], ev["count_total"] = np.int32(n), np.int32(total)
  return {
      **frame,
      "landmarks": lms,
      "bbox": corners.astype(np.float32),
      "events": ev,
      "window_us": np.int32(t_end_us - t_start_us),
      "t_start_us": np.int64(t_start_us),
      "clip_id": clip_id,
      "subject_id": subject_id,
      "subset": subset,
      "frame_index": np.int32(frame_index),
  }


def stored_events(example: dict) -> PaddedEvents:
  """A decoded example's events as PaddedEvents in its image frame (coordinates rounded)."""
  ev = example["events"]
  n = int(ev["count"])
  cap = len(ev["t"])
  return PaddedEvents(t=np.asarray(ev["t"], np.int32),
                      x=np.rint(np.asarray(ev["x"], np.float32)).astype(np.int32),
                      y=np.rint(np.asarray(ev["y"], np.float32)).astype(np.int32),
                      p=np.asarray(ev["p"], np.int32), valid=np.arange(cap) < n)
