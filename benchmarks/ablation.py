"""The paper's ablation on our data: event-only SLPT vs CMFA without SSMER vs CMFA with SSMER.

  python benchmarks/ablation.py --workdir=workdir/ablation [--steps=2000] [--dataset=...]

The quick start's ablation variant (configs/quickstart.py:ablation: runlocal-size models, 64
px, batch 16, all three starting from the shipped pretrained RGB SLPT; CMFA's event backbone
from the shipped SSMER encoder, or, without SSMER, from the RGB SLPT's) on the default
synthetic_faces (1,920 training crops), validated every 100 steps. Runs resume from their
workdirs, and finished ones are only evaluated again. Prints NME / FR@0.1 / AUC@0.1 on the test
split per model and per lighting condition, and writes <workdir>/ablation.json and
<workdir>/val_nme.png (validation NME against steps, the mean shape as a line).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from evalign_jax import config_utils
from evalign_jax import files
from evalign_jax import quickstart

LABELS = {"mean_shape": "mean shape", "pretrained:rgb_slpt": "RGB SLPT (on RGB)",
          "slpt_event": "event-only SLPT", "cmfa_no_ssmer": "CMFA without SSMER",
          "cmfa": "CMFA with SSMER"}


def _curve(workdir: str) -> tuple[list[int], list[float]]:
  steps, nmes = [], []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      entry = json.loads(line)
      if "val_nme" in entry:
        steps.append(entry["step"])
        nmes.append(entry["val_nme"])
  return steps, nmes


def plot(curves: dict, mean_shape_nme: float) -> np.ndarray:
  """Validation NME against steps, one line per stage: (400, 600, 3) uint8 RGB."""
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4), dpi=100)   # as plots.ced_image: no pyplot state
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for name, (steps, nmes) in curves.items():
    ax.plot(steps, nmes, label=LABELS.get(name, name))
  ax.axhline(mean_shape_nme, color="grey", linestyle="--", label="mean shape (test)")
  ax.set_xlabel("training step")
  ax.set_ylabel("validation NME %")
  ax.set_yscale("log")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def table(rows: dict) -> str:
  subsets = sorted({s for r in rows.values() for s in r["per_subset"]})
  head = f"{'model':22s} {'NME %':>7s} {'FR@0.1 %':>9s} {'AUC@0.1':>8s}" + "".join(
      f" {s + ' NME':>15s}" for s in subsets)
  out = [head, "-" * len(head)]
  for name, r in rows.items():
    out.append(f"{LABELS.get(name, name):22s} {r['nme']:7.2f} {r['fr']:9.2f} {r['auc']:8.4f}"
               + "".join(f" {r['per_subset'].get(s, {}).get('nme', float('nan')):15.2f}"
                         for s in subsets))
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=2000, help="steps per stage")
  parser.add_argument("--dataset", default="synthetic_faces")
  parser.add_argument("--data_dir", default="~/evalign_data")
  args = parser.parse_args()
  config = config_utils.load_config("configs/quickstart.py:ablation")
  config.dataset, config.data_dir = args.dataset, args.data_dir
  for name in config.steps:
    config.steps[name] = args.steps
  quickstart.run(config, args.workdir)

  rows = {}
  for name in config.compare:
    path = os.path.join(args.workdir, "eval_" + name.replace(":", "_"), "test", "results.json")
    with open(path) as f:
      rows[name] = json.load(f)
  curves = {name: _curve(os.path.join(args.workdir, name)) for name in config.stages}
  files.write_text(os.path.join(args.workdir, "ablation.json"), json.dumps(
      {"test": {n: {k: r[k] for k in ("nme", "fr", "auc", "num_images", "per_subset")}
                for n, r in rows.items()},
       "val_nme": {n: dict(zip(*c)) for n, c in curves.items()}}, indent=1))
  files.write_png(os.path.join(args.workdir, "val_nme.png"),
                  plot(curves, rows["mean_shape"]["nme"]))
  print(f"\n{config.dataset}, test split, per lighting condition:\n{table(rows)}")
  order = [rows[n]["nme"] for n in ("cmfa", "cmfa_no_ssmer", "slpt_event")]
  print("paper's order (CMFA with SSMER < CMFA without < event-only SLPT): "
        + ("holds" if order == sorted(order) and len(set(order)) == 3 else "does not hold"))


if __name__ == "__main__":
  main()
