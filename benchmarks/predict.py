"""Prediction throughput: windows/s of `python -m evalign_jax.predict` on a synthetic recording.

  python benchmarks/predict.py [--size=paper|runlocal] [--seconds=3] [--notrack --batch_size=8]

Writes a DVXplorer-sized (320x240) AEDAT4 recording of `--seconds` seconds (a face-sized
square of events at `--rate` events/s plus 10% uniform noise), exports a freshly initialised
event-only SLPT of the chosen size (random weights: speed does not depend on them) and runs
the prediction command on it (33.3 ms windows, automatic face box, mp4 overlay; tracking the
face window by window as predict does by default, or `--notrack`, a fixed box and batches of
`--batch_size`). Prints the end-to-end and model-only windows/s.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags

_SIZE = flags.DEFINE_enum("size", "paper", ["paper", "runlocal"], "Model size (configs/cmfa.py).")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Recording length.")
_RATE = flags.DEFINE_float("rate", 300_000, "Events per second.")
_TRACK = flags.DEFINE_bool("track", True, "Track the face (one window per device call).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Windows per device call with --notrack.")
_OVERLAY = flags.DEFINE_enum("overlay", "mp4", ["mp4", "png", "none"], "Overlay output.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recording(path, seconds, rate, seed=0):
  from evalign_jax.events import Events, write_events
  rng = np.random.default_rng(seed)
  n = int(seconds * rate)
  noise = n // 10
  x = np.r_[rng.normal(160, 30, n - noise).clip(0, 319), rng.integers(0, 320, noise)]
  y = np.r_[rng.normal(120, 35, n - noise).clip(0, 239), rng.integers(0, 240, noise)]
  t = np.sort(rng.integers(0, int(seconds * 1e6), n)) + 1_000_000
  write_events(path, Events(t, x.astype(int), y.astype(int), rng.integers(0, 2, n), (240, 320)))


def main(argv):
  del argv
  from evalign_jax import config_utils
  from evalign_jax import export
  from evalign_jax import models
  variant = "model=slpt_event" + (",runlocal" if _SIZE.value == "runlocal" else "")
  config = config_utils.load_config(f"configs/cmfa.py:{variant}")
  cfg = json.loads(config.to_json())
  shape = np.random.default_rng(0).uniform(0.25, 0.75, (98, 2)).astype(np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    export.export(models.build_model(cfg, shape), cfg, f"{tmp}/model")
    recording(f"{tmp}/rec.aedat4", _SECONDS.value, _RATE.value)
    cmd = [sys.executable, "-m", "evalign_jax.predict", f"--checkpoint={tmp}/model",
           f"--events={tmp}/rec.aedat4", f"--out={tmp}/out", f"--batch_size={_BATCH_SIZE.value}",
           "--track" if _TRACK.value else "--notrack", f"--overlay={_OVERLAY.value}"]
    print(" ".join(cmd).replace(tmp, "TMP"), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    s = json.loads(open(f"{tmp}/out/summary.json").read())
  batching = "tracked, 1" if _TRACK.value else f"fixed box, {_BATCH_SIZE.value}"
  print(f"| {_SIZE.value} ({cfg['image_size']} px) | {s['device']} | {batching} | "
        f"{s['predicted_windows']} | {s['windows_per_s']:.2f} | {s['model_windows_per_s']:.2f} | "
        f"{s['compile_s']:.1f} s |")


if __name__ == "__main__":
  app.run(main)
