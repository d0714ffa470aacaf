"""Landmarks on an event recording: `python -m evalign_jax.predict` (flags in `__main__.py`).

The recording is read once, in bounded memory, as windows (`windows.iter_windows`); each
window's events are cropped around the face as the evaluation crop of training does, rendered
on device as the model was trained (`evaluators.landmarks.make_predict`, the same jitted
program validation and the eval stage run) in fixed-shape batches, and the crop-pixel landmarks
are mapped back to sensor pixels with the inverse of the crop's affine. The face box is given,
or found from the event density of the first windows, and then follows the previous batch's
last prediction.

Windows are skipped, and counted in the summary, when (for models that take events) their crop
holds fewer than `min_events` events or (for models that take RGB) when no frame lies within
`rgb_max_gap_us` of their end. Everything else that cannot be used is an error naming the
input, raised before any output is published.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import geometry
from evalign_jax import export
from evalign_jax import models
from evalign_jax.evaluators import landmarks as landmark_eval
from evalign_jax.events import Events
from evalign_jax.events import EventFileError
from evalign_jax.events import images
from evalign_jax.predict import outputs
from evalign_jax.predict import rgb as rgb_lib
from evalign_jax.predict import windows as win

DEFAULT_WINDOW_US = 33_333


@dataclasses.dataclass(frozen=True)
class Options:
  """How to cut, crop and batch a recording.

  Attributes:
    window_us, stride_us: time windows of window_us, one every stride_us (default window_us);
      DEFAULT_WINDOW_US when neither window_us nor window_events is given.
    window_events: windows of this many events instead of window_us.
    box: (x0, y0, x1, y1) face box in sensor pixels, else found from the first windows.
    detect_windows: how many windows the automatic face box looks at.
    track: crop each window around the box of the previous window's prediction (the windows
      then go to the device one at a time: each crop needs the answer before it).
    batch_size: windows per device call when not tracking (the box is fixed within a call).
    capacity: event slots per crop (the latest kept when more fall in it).
    min_events: fewer events in the crop skip the window.
    rgb, rgb_times, rgb_max_gap_us: RGB frames (see `rgb.py`) and how far from a window's end
      its frame may be.
    overlay: "mp4", "png" or "none".
    overlay_capacity: event slots per overlay image (the latest kept when a window has more);
      fixed so that one rendering program serves every batch.
    format, sensor_size: passed to the event reader.
  """

  window_us: int | None = None
  stride_us: int | None = None
  window_events: int | None = None
  box: tuple[float, float, float, float] | None = None
  detect_windows: int = 5
  track: bool = True
  batch_size: int = 8
  capacity: int = 16_384
  min_events: int = 100
  rgb: str | None = None
  rgb_times: str | None = None
  rgb_max_gap_us: int = 50_000
  overlay: str = "mp4"
  overlay_capacity: int = 1 << 16
  format: str | None = None
  sensor_size: tuple[int, int] | None = None


@dataclasses.dataclass
class Predictor:
  """An exported aligner ready to run: `predict(state, batch)` -> (B, K, 2) crop pixels."""

  kind: str
  image_size: int
  render: images.RenderConfig
  predict: object
  state: object
  num_landmarks: int

  @property
  def needs_rgb(self) -> bool:
    return "rgb" in models.model_spec(self.kind).inputs

  @property
  def needs_events(self) -> bool:
    return "events" in models.model_spec(self.kind).inputs


def load_predictor(checkpoint: str) -> Predictor:
  """The exported model in `checkpoint` (a stage workdir or export folder) as a Predictor."""
  cfg = export.exported_config(checkpoint)
  config_path = os.path.join(export.export_dir(checkpoint), "config.json")
  kind = cfg.get("model")
  if kind == "ssmer":
    raise ValueError(f"{checkpoint}: an SSMER export is a self-supervised event encoder and "
                     f"predicts no landmarks; give an export of one of {models.LANDMARK_MODELS} "
                     "(SSMER initialises cmfa/slpt_event training: init.event_from)")
  if kind not in models.LANDMARK_MODELS:
    raise ValueError(f"{config_path}: unknown model {kind!r}; prediction needs one of "
                     f"{models.LANDMARK_MODELS}")
  model, cfg = export.load(checkpoint)
  size = int(cfg["image_size"])
  render = images.RenderConfig.from_config(cfg["render"])
  graphdef, state = nnx.split(model)
  return Predictor(kind, size, render,
                   landmark_eval.make_predict(graphdef, kind, size, render), state,
                   int(model.mean_shape.shape[0]))


def crop_to_sensor(points: np.ndarray, m: np.ndarray) -> np.ndarray:
  """(..., 2) crop-pixel points of the crop `m` (`windows.crop_matrix`) -> sensor px, float64."""
  return geometry.apply_to_points(geometry.invert(m), points)


def run(checkpoint: str, events_path, out_dir, options: Options = Options(),
        predictor: Predictor | None = None) -> dict:
  """Predicts landmarks for every window of `events_path` and writes the outputs to `out_dir`.

  Args:
    checkpoint: a stage workdir or export folder (rgb_slpt, slpt_event or cmfa).
    events_path: any file `evalign_jax.events.read_events` reads.
    out_dir: receives landmarks.csv, summary.json and the overlay (`outputs.py`).
    options: see `Options`.
    predictor: an already loaded `load_predictor(checkpoint)` (reuses its compiled program).

  Returns:
    The summary (also in summary.json).
  """
  o = options
  if o.window_us is None and o.window_events is None:
    o = dataclasses.replace(o, window_us=DEFAULT_WINDOW_US)
  p = predictor or load_predictor(checkpoint)
  if p.needs_rgb and not o.rgb:
    raise ValueError(f"{checkpoint}: a {p.kind} model needs RGB frames paired with the events "
                     "(--rgb=VIDEO_OR_FOLDER); for events alone train and use the event-only "
                     "model: python -m evalign_jax.main --config=configs/cmfa.py:model=slpt_event")
  frames = rgb_lib.RgbFrames(o.rgb, o.rgb_times) if p.needs_rgb else None
  stream = win.iter_windows(events_path, window_us=o.window_us, stride_us=o.stride_us,
                            window_events=o.window_events, format=o.format,
                            sensor_size=o.sensor_size)
  first = [w for _, w in zip(range(max(1, o.detect_windows)), stream)]
  if not first or not any(len(w.events) for w in first):
    raise EventFileError(f"{events_path}: the recording holds no events")
  sensor = first[0].events.sensor_size
  if frames is not None and tuple(frames.size) != sensor:
    raise ValueError(f"{o.rgb}: RGB frames are {frames.size[1]}x{frames.size[0]} but the event "
                     f"sensor of {events_path} is {sensor[1]}x{sensor[0]}; they must be "
                     "registered pixel to pixel")
  if o.box is not None:
    box = _checked_box(o.box, sensor)
    box_source = "given"
  else:
    box = win.face_box_from_events(Events.concatenate([w.events for w in first]))
    box_source = "event density"
  initial_box = box.copy()

  fps = 1e6 / (o.stride_us or o.window_us) if o.window_us else 30.0
  writer = outputs.PredictionWriter(out_dir, o.overlay, fps)
  counts = {"windows": 0, "predicted": 0, "too_few_events": 0, "no_rgb_frame": 0,
            "over_capacity": 0, "overlay_truncated": 0, "track_kept_box": 0}
  timing = {"model_s": 0.0}
  capacity = _capacity(p, o)
  if o.track:   # each crop needs the previous window's answer: one window per device call
    o = dataclasses.replace(o, batch_size=1)
  no_events = _empty_crop(0)
  try:
    t0 = time.perf_counter()
    pending = []
    jax.block_until_ready(p.predict(p.state, _batch([], o.batch_size, p, capacity)))
    timing["compile_s"] = time.perf_counter() - t0
    t_loop = time.perf_counter()
    m = win.crop_matrix(box, p.image_size)   # the box, hence the crop, is fixed within a batch
    for window in itertools.chain(first, stream):
      counts["windows"] += 1
      crop = no_events
      if capacity:
        crop, n_in = win.crop_events(window, m, p.image_size, capacity)
        if n_in < o.min_events:
          counts["too_few_events"] += 1
          continue
        counts["over_capacity"] += n_in > capacity
      rgb_crop = None
      if frames is not None:
        found = frames.nearest(window.end_us - 1, o.rgb_max_gap_us)
        if found is None:
          counts["no_rgb_frame"] += 1
          continue
        rgb_crop = cv2.warpAffine(found[0], m, (p.image_size, p.image_size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
      pending.append((window, crop, rgb_crop))
      if len(pending) == o.batch_size:
        box = _flush(pending, box, m, p, o, writer, counts, timing, checkpoint)
        m = win.crop_matrix(box, p.image_size)
        pending = []
    if pending:
      box = _flush(pending, box, m, p, o, writer, counts, timing, checkpoint)
    loop_s = time.perf_counter() - t_loop
    summary = {
        "checkpoint": str(checkpoint), "model": p.kind, "events": str(events_path),
        "rgb": o.rgb, "sensor_size": list(sensor), "image_size": p.image_size,
        "render": dataclasses.asdict(p.render), "options": _jsonable(dataclasses.asdict(o)),
        "box_source": box_source, "initial_box": initial_box.tolist(), "final_box": box.tolist(),
        "windows": counts["windows"], "predicted_windows": counts["predicted"],
        "skipped": {"too_few_events": counts["too_few_events"],
                    "no_rgb_frame": counts["no_rgb_frame"]},
        "windows_over_capacity": counts["over_capacity"],
        "overlay_windows_truncated": counts["overlay_truncated"],
        "track_kept_box": counts["track_kept_box"],
        "compile_s": timing["compile_s"], "seconds": loop_s,
        "windows_per_s": counts["predicted"] / loop_s if loop_s > 0 else None,
        "model_windows_per_s": (counts["predicted"] / timing["model_s"]
                                if timing["model_s"] > 0 else None),
        "device": str(jax.devices()[0]),
    }
    summary["outputs"] = writer.commit(summary)
  except BaseException:
    writer.abort()
    raise
  finally:
    if frames is not None:
      frames.close()
  return summary


def _flush(pending, box, m, p: Predictor, o: Options, writer, counts, timing,
           checkpoint) -> np.ndarray:
  """Runs one batch (cropped by `m`, of `box`), writes rows and overlays; returns the next box."""
  t0 = time.perf_counter()
  out = np.asarray(p.predict(p.state, _batch(pending, o.batch_size, p, _capacity(p, o))))
  timing["model_s"] += time.perf_counter() - t0
  windows = [w for w, _, _ in pending]
  overlays = None
  if o.overlay != "none":
    overlays = _sensor_images(windows, p.render, o.overlay_capacity, o.batch_size)
    counts["overlay_truncated"] += sum(len(w.events) > o.overlay_capacity for w in windows)
  sensor_pts = None
  for i, (window, crop_pts) in enumerate(zip(windows, out)):
    if not np.all(np.isfinite(crop_pts)):
      raise FloatingPointError(f"{checkpoint}: the model predicted non-finite landmarks for the "
                               f"window ending at {window.end_us} µs; its weights are unusable")
    sensor_pts = crop_to_sensor(crop_pts, m)
    writer.landmarks(window.end_us, sensor_pts)
    if overlays is not None:
      writer.frame(window.end_us, overlays[i], box, sensor_pts, win.CROP_SCALE)
    counts["predicted"] += 1
  if o.track:
    new = win.tracked_box(sensor_pts, box)
    if new is None:
      counts["track_kept_box"] += 1
    else:
      box = new
  return box


def _capacity(p: Predictor, o: Options) -> int:
  """Event slots per crop; none for a model that reads no events (rgb_slpt), which then skips
  no sparse window either."""
  return o.capacity if p.needs_events else 0


def _empty_crop(capacity: int) -> dict:
  return {k: np.zeros(capacity, dt) for k, dt in (("x", np.int16), ("y", np.int16),
                                                  ("t", np.int32), ("p", np.uint8),
                                                  ("valid", bool))}


def _batch(pending, batch_size: int, p: Predictor, capacity: int) -> dict:
  """A fixed-shape batch (padded with empty windows) in the format `device_augment.model_inputs`
  reads."""
  size = p.image_size
  empty = _empty_crop(capacity)
  crops = [c for _, c, _ in pending] + [empty] * (batch_size - len(pending))
  durations = [w.duration_us for w, _, _ in pending] + [1] * (batch_size - len(pending))
  batch = {
      "events": {k: np.stack([c[k] for c in crops]) for k in empty},
      "window_us": np.asarray(durations, np.int32),
      "event_grayscale": np.zeros(batch_size, bool),
      "event_occlusion": np.zeros((batch_size, 4), np.float32),
      "event_occlusion_colour": np.zeros((batch_size, 3), np.float32),
  }
  if p.needs_rgb:
    image = np.zeros((batch_size, size, size, 3), np.uint8)
    for i, (_, _, rgb_crop) in enumerate(pending):
      image[i] = rgb_crop
    batch["image"] = image
  return batch


def _sensor_images(windows, render: images.RenderConfig, capacity: int,
                   batch_size: int) -> np.ndarray:
  """The windows rendered on the full sensor as the model's images are: (N, H, W, 3) uint8 RGB.

  One call per batch, padded to batch_size x capacity (a window with more events shows its
  latest `capacity`), so the whole recording runs a single compiled program.
  """
  padded = [w.events[-capacity:].pad(capacity, t_ref_us=w.start_us - 1) for w in windows]
  padded += [padded[0]] * (batch_size - len(windows))
  ends = [w.duration_us for w in windows] + [1] * (batch_size - len(windows))
  batch = jax.tree.map(lambda *a: np.stack(a), *padded)
  out = _render_batch(batch, np.asarray(ends, np.int32), windows[0].events.sensor_size, render)
  return np.asarray(out)[:len(windows)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _render_batch(padded, t_end_us, sensor_size: tuple[int, int], render: images.RenderConfig):
  # Windows are padded relative to start - 1, so their events lie in (0, duration].
  one = lambda e, t: images.render_image(e, sensor_size, render, t_start_us=0, t_end_us=t)
  rgb = jax.vmap(one)(padded, t_end_us)
  return (jnp.clip(rgb, 0, 1) * 255).astype(jnp.uint8)   # a quarter of the float transfer


def _checked_box(box, sensor) -> np.ndarray:
  b = np.asarray(box, np.float64)
  h, w = sensor
  if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
    raise ValueError(f"box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {box}")
  if b[2] < 0 or b[3] < 0 or b[0] >= w or b[1] >= h:
    raise ValueError(f"box {box} lies outside the {w}x{h} sensor")
  return b


def _jsonable(d: dict) -> dict:
  return json.loads(json.dumps(d, default=list))
