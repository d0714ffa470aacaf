"""Stage `quickstart`: the whole method on the embedded data, small enough for 2 CPU cores.

rgb_slpt -> ssmer -> slpt_event (no CMFA, no SSMER) -> cmfa (SSMER init, frozen RGB branch)
-> eval of the mean shape, slpt_event and cmfa on the held-out test split. Each stage keeps
its checkpoints and export in <workdir>/<stage>/; a rerun resumes or skips finished stages.
The table is printed and written to <workdir>/summary.json.
"""

from __future__ import annotations

import json
import os
import time

from evalign_jax import config_utils
from evalign_jax import files
from evalign_jax.trainers import alignment
from evalign_jax.trainers import common
from evalign_jax.trainers import evaluate
from evalign_jax.trainers import ssmer


def _stage_config(spec: str, config, steps: int):
  """A stage's runlocal config with the quickstart's data, sizes and step budget."""
  c = config_utils.load_config(spec)
  c.dataset, c.data_dir, c.seed = config.dataset, config.data_dir, config.seed
  c.total_steps = steps
  c.eval_every = c.checkpoint.every = steps
  c.log_every = max(1, min(c.log_every, steps))
  c.image_size, c.batch_size = config.image_size, config.batch_size
  c.model_size = dict(config.ssmer_model_size if c.model == "ssmer" else config.model_size)
  if "eval_batch_size" in c:
    c.eval_batch_size = config.batch_size
  return c


def default_plan(workdir: str) -> list[tuple[str, str, dict]]:
  """(stage name, runlocal config, init) in training order; the quick start's comparison."""
  sub = lambda name: os.path.join(workdir, name)
  return [
      ("rgb_slpt", "configs/rgb_slpt.py:runlocal", {}),
      ("ssmer", "configs/ssmer.py:runlocal", {}),
      ("slpt_event", "configs/cmfa.py:runlocal,model=slpt_event", {}),
      ("cmfa", "configs/cmfa.py:runlocal",
       {"event_from": sub("ssmer"), "rgb_from": sub("rgb_slpt")}),
  ]


def run(config, workdir: str, plan=None, evaluated=("slpt_event", "cmfa")) -> dict:
  """Trains `plan` (default: `default_plan`), evaluates the mean shape and `evaluated` on the
  test split, prints the table and writes <workdir>/summary.json."""
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  sub = lambda name: os.path.join(workdir, name)
  common.prepare_dataset(config)
  for name, spec, init in plan or default_plan(workdir):
    c = _stage_config(spec, config, config.steps[name])
    for k, v in init.items():
      c.init[k] = v
    print(f"\n=== {name} ({c.total_steps} steps) ===", flush=True)
    (ssmer.train if c.model == "ssmer" else alignment.train)(c, sub(name))

  rows = {}
  for name in ("mean_shape",) + tuple(evaluated):
    c = config_utils.load_config("configs/eval.py:runlocal")
    c.dataset, c.data_dir = config.dataset, config.data_dir
    c.checkpoint = evaluate.MEAN_SHAPE if name == "mean_shape" else sub(name)
    c.image_size, c.eval_batch_size = config.image_size, config.batch_size
    print(f"\n=== eval {name} ===", flush=True)
    result = evaluate.run(c, sub(f"eval_{name}"))
    rows[name] = {"nme": result["nme"], "fr": result["fr"], "auc": result["auc"],
                  "num_images": result["num_images"]}
  files.write_text(os.path.join(workdir, "summary.json"), json.dumps(rows, indent=2))
  print(f"\nResults on {config.dataset} (test split), {time.perf_counter() - start:.0f} s:")
  print(evaluate.format_table(rows))
  return rows
