"""What `python -m evalign_jax.predict` gives with the quick start's models, as a figure.

  python benchmarks/predict_figure.py [--run=workdir/quickstart] [--clips=test00002,test00000]
      [--columns=6] [--out=benchmarks/figures]

Each clip is a test-split clip of synthetic_faces/small, the quick start's dataset (held-out
subjects; 256x256, 9 frames at 30 fps), rendered and turned into events exactly as the dataset
builder does. Its events go to <tmp>/<clip>/events.npz and its frames to
<tmp>/<clip>/rgb/<µs>.png (the frame folder layout of `--rgb`), and the prediction command runs
on them with the run's slpt_event and cmfa exports (`--overlay=png`, 33.3 ms windows), in each
of `--settings`:

  default   predict's defaults: face box found from the event density of the first windows
            (`windows.face_box_from_events`), then moved to each window's prediction
  box       --box = the first frame's ground-truth face box (what a user drawing it gives),
            tracked the same way

Each predicted window is scored against the ground truth of the frame it is paired with (the
frame nearest its end, as predict pairs RGB) by inter-ocular NME (`evaluators.metrics`).
Prints a table (clip, light, setting, model, IoU of the initial box with the first frame's
true box, windows, mean NME %, wall seconds of the command) and writes to --out:

  predict_overlay.png              the first setting; per clip, `--columns` windows across time:
                                   the RGB frame, then predict's overlay of each model (events,
                                   crop box in grey, predictions in green) with the ground truth
                                   in black, cropped to the region the face moves through
  quickstart_val_predictions.png   the run's cmfa validation pictures
  quickstart_ced.png               the run's cmfa test CED
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import types

import cv2
import numpy as np
from absl import app
from absl import flags

from evalign_jax import files

_RUN = flags.DEFINE_string("run", "workdir/quickstart", "The quick start's --workdir.")
_CLIPS = flags.DEFINE_list("clips", ["test00002", "test00000"], "Test clips of "
                           "synthetic_faces/small (test00002: normal light, the face moves "
                           "~30 px; test00000: low light, ~34 px).")
_MODELS = flags.DEFINE_list("models", ["slpt_event", "cmfa"], "Stage exports in --run.")
_COLUMNS = flags.DEFINE_integer("columns", 6, "Windows shown per clip.")
_SETTINGS = flags.DEFINE_list("settings", ["default", "box"], "Ways to run predict (see "
                             "above); the figure shows the first.")
_TILE = flags.DEFINE_integer("tile", 150, "Tile side in the figure, px.")
_OUT = flags.DEFINE_string("out", "benchmarks/figures", "Output folder.")
_MAX_BYTES = 400_000   # figures live in the repository: keep each small

REPO = pathlib.Path(__file__).resolve().parents[1]
GT_BGR = (0, 0, 0)   # black: apart from predict's green points and red/blue events on white
# Boxes in full precision: event coordinates are rounded in the crop, so even a sub-pixel box
# change alters the crop the model sees (and, tracked, every later crop).
SETTINGS = {"default": lambda box: [],
            "box": lambda box: ["--box=" + ",".join(repr(float(v)) for v in box)]}


def test_clips(config_name="small"):
  """(builder config, makers of the test split's clips), each a call returning its Clip."""
  from data_pipelines.synthetic_faces import synthetic_faces_dataset_builder as sf
  config = next(c for c in sf.Builder.BUILDER_CONFIGS if c.name == config_name)
  # `_clips` reads only `builder_config`: reuse it so subjects and seeds are the builder's own.
  clips = sf.Builder._clips(types.SimpleNamespace(builder_config=config), "test", None)
  return config, clips


def clip_events(clip, config):
  """The clip's events, simulated as the dataset builder does (`video_examples.simulate_clip`)."""
  from data_pipelines import video_examples
  from evalign_jax.events import Events
  return Events.concatenate([window for _, _, window in video_examples.simulate_clip(
      clip, sim_preset=config.sim_preset, sim_seed=config.sim_seed)])


def write_recording(clip, config, folder):
  """The clip's events (`clip_events`) -> events.npz; frames -> rgb/."""
  from evalign_jax.events import write_events
  frames = list(clip.frames)
  ts = np.asarray(clip.timestamps_us, np.int64)
  folder.mkdir(parents=True, exist_ok=True)
  write_events(folder / "events.npz", clip_events(clip, config))
  (folder / "rgb").mkdir(exist_ok=True)
  for frame, t in zip(frames, ts):
    cv2.imwrite(str(folder / "rgb" / f"{t}.png"), frame[..., ::-1])
  return frames, ts


def run_predict(model_dir, folder, out, extra):
  """Runs the command a user would; returns (summary, wall seconds)."""
  cmd = [sys.executable, "-m", "evalign_jax.predict", f"--checkpoint={model_dir}",
         f"--events={folder}/events.npz", f"--rgb={folder}/rgb", f"--out={out}",
         "--overlay=png", *extra]
  start = time.perf_counter()
  subprocess.run(cmd, cwd=REPO, check=True)
  wall = time.perf_counter() - start
  return json.loads((out / "summary.json").read_text()), wall


def read_landmarks(out):
  """{window_end_us: (K, 2)} from predict's landmarks.csv."""
  rows = np.loadtxt(out / "landmarks.csv", delimiter=",", skiprows=1, ndmin=2)
  return {int(t): rows[rows[:, 0] == t][np.argsort(rows[rows[:, 0] == t, 1]), 2:]
          for t in np.unique(rows[:, 0])}


def box_iou(a, b):
  """Intersection over union of (..., 4) boxes (x0, y0, x1, y1), elementwise."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]),
                          0, None), -1)
  area = lambda x: np.prod(x[..., 2:] - x[..., :2], -1)
  return inter / (area(a) + area(b) - inter)


def face_region(landmarks, size):
  """A square (x0, y0, side) around every frame's face, inside the sensor."""
  lo, hi = landmarks.reshape(-1, 2).min(0), landmarks.reshape(-1, 2).max(0)
  side = int(min(max(hi - lo) * 1.3, min(size)))
  x0, y0 = ((lo + hi) / 2 - side / 2).astype(int)
  return int(np.clip(x0, 0, size[1] - side)), int(np.clip(y0, 0, size[0] - side)), side


def tile(image_bgr, gt, region, text, size):
  """A size x size crop of `region` with `text` in a strip below it, and a 2 px margin."""
  from evalign_jax.evaluators import plots
  x0, y0, side = region
  if gt is None:   # an RGB frame: smooth; 32 levels a channel halve the PNG, unseen at this size
    out = cv2.resize(image_bgr[y0:y0 + side, x0:x0 + side], (size, size),
                     interpolation=cv2.INTER_AREA) // 8 * 8 + 4
  else:   # an overlay: nearest keeps its few colours (events, box, points), which compress
    image = plots.draw_points(image_bgr.copy(), gt, GT_BGR, 1)
    out = cv2.resize(image[y0:y0 + side, x0:x0 + side], (size, size),
                     interpolation=cv2.INTER_NEAREST)
  out = np.vstack([out, label(text, 16, size)])
  return cv2.copyMakeBorder(out, 0, 2, 0, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def label(text, height, width=96):
  """Black text on white, its lines centred vertically."""
  out = np.full((height, width, 3), 255, np.uint8)
  lines = text.split("\n")
  for i, line in enumerate(lines):
    y = (height - 16 * (len(lines) - 1)) // 2 + 4 + 16 * i
    cv2.putText(out, line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
  return out


def save_small(path, image_bgr):
  """PNG, downscaled until it is under _MAX_BYTES."""
  while True:
    _, data = cv2.imencode(".png", image_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if len(data) <= _MAX_BYTES:
      break
    image_bgr = cv2.resize(image_bgr, None, fx=0.85, fy=0.85, interpolation=cv2.INTER_AREA)
  files.write_bytes(str(path), data.tobytes())


def main(argv):
  del argv
  from evalign_jax.evaluators import metrics
  out_dir = pathlib.Path(_OUT.value)
  out_dir.mkdir(parents=True, exist_ok=True)
  run = pathlib.Path(_RUN.value)
  config, clips = test_clips()
  wanted = set(_CLIPS.value)
  table, blocks = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for make in clips:
      clip = make()
      if clip.clip_id not in wanted:
        continue
      folder = pathlib.Path(tmp) / clip.clip_id
      frames, ts = write_recording(clip, config, folder)
      gt_all = np.asarray(clip.landmarks, np.float64)
      size = frames[0].shape[:2]
      rows = {}
      for setting, model in itertools.product(_SETTINGS.value, _MODELS.value):
        out = folder / setting / model
        summary, wall = run_predict(run / model, folder, out, SETTINGS[setting](clip.boxes[0]))
        preds = read_landmarks(out)
        ends = sorted(preds)
        # The frame each window was paired with: nearest its end (`rgb.RgbFrames.nearest`).
        idx = [int(np.argmin(np.abs(ts - (e - 1)))) for e in ends]
        pred = np.stack([preds[e] for e in ends])
        gt = gt_all[idx]
        nme = metrics.per_image_nme(pred, gt, metrics.normalizer(gt, "inter_ocular"))
        table.append((clip.clip_id, clip.subset, setting, model,
                      float(box_iou(summary["initial_box"], clip.boxes[0])),
                      f"{len(ends)}/{summary['windows']}", 100 * nme.mean(), wall))
        print(f"{clip.clip_id} {setting} {model}: NME % per window "
              f"{' '.join(f'{100 * v:.1f}' for v in nme)}", flush=True)
        if setting == _SETTINGS.value[0]:   # the setting drawn
          rows[model] = [(e, i, v, cv2.imread(str(out / "overlay" / f"{e:012d}.png")))
                         for e, i, v in zip(ends, idx, nme)]
      # Columns: windows every model predicted, spread evenly over the clip.
      common = sorted(set.intersection(*(set(e for e, *_ in r) for r in rows.values())))
      picks = [common[int(round(j))] for j in
               np.linspace(0, len(common) - 1, min(_COLUMNS.value, len(common)))]
      region = face_region(gt_all, size)
      s = _TILE.value
      lines = [[label(f"{clip.clip_id}\n{clip.subset}\nRGB frame", s + 18)]]
      for end in picks:
        i = next(i for e, i, *_ in next(iter(rows.values())) if e == end)
        lines[0].append(tile(frames[i][..., ::-1], None, region,
                             f"window to {end / 1000:.1f} ms", s))
      for model, r in rows.items():
        by_end = {e: (i, v, img) for e, i, v, img in r}
        lines.append([label(f"{model}\nevents\n+ pred", s + 18)])
        for end in picks:
          i, v, img = by_end[end]
          lines[-1].append(tile(img, gt_all[i], region, f"NME {100 * v:.1f}%", s))
      blocks.append(np.vstack([np.hstack(line) for line in lines]))
  gap = np.full((8, blocks[0].shape[1], 3), 255, np.uint8)
  legend = label(f"predict --overlay=png ({_SETTINGS.value[0]}): events red/blue, crop box "
                 "grey, prediction green, ground truth black", 24, blocks[0].shape[1])
  figure = np.vstack([legend] + [b for block in blocks for b in (block, gap)][:-1])
  save_small(out_dir / "predict_overlay.png", figure)
  for src, dst in ((run / "cmfa/pictures/val_predictions_300.png",
                    "quickstart_val_predictions.png"),
                   (run / "eval_cmfa/test/ced.png", "quickstart_ced.png")):
    if src.stat().st_size <= _MAX_BYTES:
      files.write_bytes(str(out_dir / dst), src.read_bytes())
    else:
      save_small(out_dir / dst, cv2.imread(str(src), cv2.IMREAD_COLOR))

  print("\n| clip | light | setting | model | initial box IoU | windows | mean NME % | wall s |"
        "\n|---|---|---|---|---|---|---|---|")
  for c, light, setting, m, iou, w, nme, wall in table:
    print(f"| {c} | {light} | {setting} | {m} | {iou:.2f} | {w} | {nme:.2f} | {wall:.1f} |")
  for name in ("predict_overlay.png", "quickstart_val_predictions.png", "quickstart_ced.png"):
    print(f"{out_dir / name} {os.path.getsize(out_dir / name) / 1000:.0f} kB")


if __name__ == "__main__":
  app.run(main)
