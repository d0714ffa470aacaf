"""Stage `quickstart`: the whole method on the embedded data, small enough for 2 CPU cores.

Trains `config.stages` in order (configs/quickstart.py: slpt_event and cmfa from the shipped
RGB SLPT and SSMER encoder, or rgb_slpt -> ssmer -> slpt_event -> cmfa from scratch), then
runs the eval stage on each entry of `config.compare` (a stage, "mean_shape" or any export) on
the held-out test split. Each
stage keeps its checkpoints and export in <workdir>/<stage>/; a rerun resumes or skips finished
stages. The table is printed and written to <workdir>/summary.json.
"""

from __future__ import annotations

import json
import os
import time

from data_pipelines import datasets
from evalign_jax import evaluate
from evalign_jax import files
from evalign_jax.trainers import alignment
from evalign_jax.trainers import ssmer


def run(config, workdir: str) -> dict:
  """Trains every stage of `config.stages`, evaluates `config.compare` on the test split,
  prints the table and writes <workdir>/summary.json; returns its rows."""
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  sub = lambda name: os.path.join(workdir, name)
  datasets.prepare_dataset(config)
  for name, c in config.stages.items():
    c = c.copy_and_resolve_references()
    for k, path in (c.init.items() if "init" in c else ()):
      if path in config.stages:
        c.init[k] = sub(path)   # an earlier stage of this run (else a path or pretrained:)
    print(f"\n=== {name} ({c.total_steps} steps) ===", flush=True)
    (ssmer.train if c.model == "ssmer" else alignment.train)(c, sub(name))

  rows = {}
  for name in config.compare:
    c = config.eval.copy_and_resolve_references()
    c.checkpoint = sub(name) if name in config.stages else name
    print(f"\n=== eval {name} ===", flush=True)
    result = evaluate.run(c, sub("eval_" + name.replace(":", "_")))["test"]
    rows[name] = {k: result[k] for k in ("nme", "fr", "auc", "num_images")}
  files.write_text(os.path.join(workdir, "summary.json"), json.dumps(rows, indent=2))
  print(f"\nResults on {config.dataset} (test split), {time.perf_counter() - start:.0f} s:")
  print(evaluate.format_table(rows))
  return rows
