"""How well the face box that `python -m evalign_jax.predict` finds matches the true one.

  python benchmarks/face_box.py [--configs=small,default] [--windows=5]

Each clip is a test-split clip of synthetic_faces (held-out subjects; config small: 16 clips
at 256x256, default: 48 at 320x320), rendered and simulated as the dataset builder does
(`predict_figure.clip_events`). The events of its first --windows windows of 33,333 µs, cut by
predict's own `windows.iter_windows`, go to each method, and the box found is compared with
the box of the ground-truth landmarks (`geometry.box_of_points`, the datasets' convention)
averaged over the frames those windows end on:

  IoU        of the two boxes
  centre     centre distance / the true box's longer side
  side       found / true longer side (the crop is a square of 1.2 x the longer side)

Methods:

  peak region      the densest part alone: the connected region of a Gaussian blur (sigma =
                   max(h, w) / 50) above 0.3 x its peak, shrunk by sigma / 2
  predict          `windows.face_box_from_events`
  blur=,level=,q=  variants of `windows.event_extent`, each mapped to the landmark box by the
                   map fitted on these clips (medians; in-sample, so optimistic)

Prints a table (per lighting condition: median and worst IoU, median and worst centre error,
median and range of side ratio) and the map fitted to the extent of each variant; for the
default extent that fit gives `windows.LANDMARK_BOX_MAP`.
"""

import pathlib
import sys
import tempfile

import cv2
import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import predict_figure  # noqa: E402  (its clips and event simulation)

_CONFIGS = flags.DEFINE_list("configs", ["small", "default"], "synthetic_faces configs.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Windows looked at (predict's detect_windows).")
WINDOW_US = 33_333   # predict's default
LIGHTS = ("normal", "low_light", "flicker")
VARIANTS = [dict(blur=b, level=l, quantile=q) for b, l, q in
            ((1 / 7, 0.1, 0.05), (1 / 5, 0.1, 0.05), (1 / 10, 0.1, 0.05), (1 / 50, 0.1, 0.05),
             (1 / 7, 0.05, 0.05), (1 / 7, 0.15, 0.05), (1 / 7, 0.1, 0.1), (1 / 7, 0.1, 0.2))]


def peak_region(events):
  """The densest part's box: blur's connected region above 0.3 x its peak, shrunk."""
  h, w = events.sensor_size
  counts = np.bincount(events.y.astype(np.int64) * w + events.x, minlength=h * w)
  counts = counts.reshape(h, w).astype(np.float32)
  counts = np.minimum(counts, np.percentile(counts[counts > 0], 99))
  sigma = max(h, w) / 50.0
  density = cv2.GaussianBlur(counts, (0, 0), sigma)
  mask = (density >= 0.3 * density.max()).astype(np.uint8)
  _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  x0, y0, bw, bh = (float(v) for v in
                    stats[labels[np.unravel_index(np.argmax(density), density.shape)], :4])
  s = max(0.0, min(sigma / 2, (bw - 2) / 2, (bh - 2) / 2))
  return np.array([x0 + s, y0 + s, x0 + bw - 1 - s, y0 + bh - 1 - s])


def recordings():
  """[(clip id, light, events of the first windows, true box)] over the configs' test splits."""
  from data_pipelines import geometry
  from evalign_jax.events import Events, write_events
  from evalign_jax.predict import windows as win
  out = []
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "events.npz"
    for name in _CONFIGS.value:
      config, clips = predict_figure.test_clips(name)
      for make in clips:
        clip = make()
        write_events(path, predict_figure.clip_events(clip, config))
        first = [w for _, w in zip(range(_WINDOWS.value),
                                   win.iter_windows(path, window_us=WINDOW_US))]
        ts = np.asarray(clip.timestamps_us)
        during = (ts > first[0].start_us) & (ts <= first[-1].end_us)
        truth = np.mean([geometry.box_of_points(p) for p in
                         np.asarray(clip.landmarks)[during]], 0)
        out.append((f"{name}/{clip.clip_id}", clip.subset,
                    Events.concatenate([w.events for w in first]), truth))
  return out


def fitted_map(extents, truths):
  """(width scale, height scale, downward shift / extent height): medians over the clips."""
  ew, eh = extents[:, 2] - extents[:, 0], extents[:, 3] - extents[:, 1]
  shift = ((truths[:, 1] + truths[:, 3]) - (extents[:, 1] + extents[:, 3])) / 2 / eh
  return (np.median((truths[:, 2] - truths[:, 0]) / ew),
          np.median((truths[:, 3] - truths[:, 1]) / eh), np.median(shift))


def scores(boxes, truths):
  """Per clip: IoU, centre error / true longer side, found / true longer side."""
  side = lambda b: np.max(b[:, 2:] - b[:, :2], 1)
  centre = np.hypot(*((boxes[:, :2] + boxes[:, 2:] - truths[:, :2] - truths[:, 2:]) / 2).T)
  return predict_figure.box_iou(boxes, truths), centre / side(truths), side(boxes) / side(truths)


def main(argv):
  del argv
  from evalign_jax.predict import windows as win
  recs = recordings()
  lights = np.array([r[1] for r in recs])
  truths = np.stack([r[3] for r in recs]).astype(np.float64)
  methods = {"peak region": np.stack([peak_region(r[2]) for r in recs]),
             "predict": np.stack([win.face_box_from_events(r[2]) for r in recs])}
  for v in VARIANTS:
    extents = np.array([win.event_extent(r[2], **v) for r in recs])
    m = fitted_map(extents, truths)
    name = f"blur={v['blur']:.3g},level={v['level']},q={v['quantile']}"
    print(f"{name}: fitted map width x{m[0]:.2f}, height x{m[1]:.2f}, shift {m[2]:.3f}")
    methods[name] = win.landmark_box(extents, m)
  print(f"\n{len(recs)} clips ({', '.join(f'{l} {np.sum(lights == l)}' for l in LIGHTS)}), "
        f"first {_WINDOWS.value} windows of {WINDOW_US} µs\n")
  print("| method | light | IoU median | IoU worst | centre median | centre worst "
        "| side median | side range |\n|---|---|---|---|---|---|---|---|")
  for name, boxes in methods.items():
    iou, centre, side = scores(boxes, truths)
    for light in (*LIGHTS, "all"):
      s = lights == light if light != "all" else slice(None)
      print(f"| {name} | {light} | {np.median(iou[s]):.2f} | {iou[s].min():.2f} "
            f"| {np.median(centre[s]):.2f} | {centre[s].max():.2f} | {np.median(side[s]):.2f} "
            f"| {side[s].min():.2f}-{side[s].max():.2f} |")


if __name__ == "__main__":
  app.run(main)
