"""Data-parallel scaling of the CMFA and SSMER train steps over 1, 2, 4 devices.

  python benchmarks/scaling.py                                  # CPU: 1, 2, 4 host devices
  python benchmarks/scaling.py --platform=gpu --devices=1,2,4,8 --per_device_batch=32 \
      --config_variant=""                                       # full-size models on GPUs

Weak scaling: each device gets `per_device_batch` examples, so the global batch grows with the
device count; efficiency = (images/s on N devices) / (N x images/s on 1 device). Each device
count runs in a fresh process (the CPU device count is fixed when JAX starts:
XLA_FLAGS=--xla_force_host_platform_device_count=N; on GPUs CUDA_VISIBLE_DEVICES=0..N-1).

The steps are the trainers' own (`build_stage`: the config's mesh, sharded state, events
rendered on device), fed by the real input pipeline. Per step it reports the device step time
(blocking), the host time the loop waits for the next global batch (grain prepares batches in
background threads during the step; the wait plus the transfer to the devices is what input
adds to a training step), and the model FLOPs per image from XLA's cost analysis of the
compiled step (per-device program x devices / batch).
On a CPU the "devices" share the same cores: the table then shows what sharding costs, not a
speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

TASKS = ("cmfa", "ssmer")
RESULT = "RESULT "


def measure(task: str, args) -> dict:
  """One task's step on every visible device: timings and FLOPs (runs in a child process)."""
  import jax   # pylint: disable=g-import-not-at-top
  import numpy as np   # pylint: disable=g-import-not-at-top
  from data_pipelines import input_pipeline as ip   # pylint: disable=g-import-not-at-top
  from evalign_jax import config_utils   # pylint: disable=g-import-not-at-top
  from evalign_jax import export   # pylint: disable=g-import-not-at-top
  from evalign_jax import models   # pylint: disable=g-import-not-at-top
  from evalign_jax import sharding   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import alignment   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import ssmer   # pylint: disable=g-import-not-at-top

  n = jax.device_count()
  spec = f"configs/{task}.py" + (f":{args.config_variant}" if args.config_variant else "")
  config = config_utils.load_config(spec)
  config.unlock()
  config.batch_size = args.per_device_batch * n
  config.mesh = dict(data=-1, fsdp=1)
  config.dtype = args.dtype
  config.num_workers = args.num_workers
  if args.data_dir:
    config.data_dir = args.data_dir
  with tempfile.TemporaryDirectory() as tmp:
    if task == "cmfa":
      # CMFA needs a frozen RGB branch to start from: random weights do for timing.
      config.init.rgb_from = os.path.join(tmp, "rgb")
      rgb = {**json.loads(config.to_json()), "model": "rgb_slpt"}
      export.export(models.build_model(rgb, np.full((98, 2), 0.5, np.float32)), rgb,
                    config.init.rgb_from)
    stage = (ssmer if task == "ssmer" else alignment).build_stage(config)

  def next_batch():
    batch, _ = ip.split_host_fields(next(stage.train_iter))
    return sharding.global_batch(batch, stage.batch_sharding)

  state, batch = stage.state, next_batch()
  start = time.perf_counter()
  compiled = stage.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state, metrics = stage.train_step(state, batch)   # warm-up
  jax.block_until_ready(metrics)
  input_s, step_s = [], []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    batch = next_batch()
    jax.block_until_ready(batch)
    t1 = time.perf_counter()
    state, metrics = stage.train_step(state, batch)
    jax.block_until_ready(metrics)
    input_s.append(t1 - t0)
    step_s.append(time.perf_counter() - t1)
  stage.train_iter.close() if hasattr(stage.train_iter, "close") else None   # pylint: disable=expression-not-assigned
  step = statistics.median(step_s)
  return {"task": task, "devices": n, "platform": jax.devices()[0].platform,
          "batch": config.batch_size, "image_size": config.image_size,
          "step_s": step, "input_s": statistics.median(input_s),
          "images_per_s": config.batch_size / step, "compile_s": compile_s,
          "gflop_per_image": float(cost.get("flops", float("nan"))) * n / config.batch_size / 1e9}


def child(args) -> None:
  for task in args.tasks.split(","):
    print(RESULT + json.dumps(measure(task, args)), flush=True)


def run_child(n: int, args) -> list[dict]:
  env = dict(os.environ)
  if args.platform == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={n} "
                        + env.get("XLA_FLAGS", "")).strip()
  else:
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
  argv = [sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]]
  out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{n} devices failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
  return [json.loads(l[len(RESULT):]) for l in out.stdout.splitlines() if l.startswith(RESULT)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,2,4")
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--per_device_batch", type=int, default=4)
  parser.add_argument("--config_variant", default="runlocal",
                      help="configs/<task>.py variant; runlocal = 64 px, reduced models")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
  parser.add_argument("--num_workers", type=int, default=0, help="grain worker processes")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--platform", default="cpu", choices=["cpu", "gpu"])
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)

  from train_step import print_table   # pylint: disable=g-import-not-at-top
  results = []
  for n in (int(d) for d in args.devices.split(",")):
    results += run_child(n, args)
    print(f"measured {n} device(s)", file=sys.stderr, flush=True)
  first = results[0]
  print(f"{first['platform']}, {args.dtype}, {args.per_device_batch} images per device, "
        f"{first['image_size']} px ({args.config_variant or 'full'} models), median of "
        f"{args.steps} steps")
  rows = []
  for r in results:
    base = next(b for b in results if b["task"] == r["task"] and b["devices"] == 1)
    eff = r["images_per_s"] / (r["devices"] * base["images_per_s"])
    rows.append([r["task"], r["devices"], r["batch"], f"{r['images_per_s']:.1f}", f"{eff:.2f}",
                 f"{r['step_s']:.3f}", f"{r['input_s']:.3f}", f"{r['gflop_per_image']:.2f}",
                 f"{r['compile_s']:.0f}"])
  print_table(["step", "devices", "global batch", "images/s", "efficiency", "step s",
               "input wait s", "GFLOP/image", "compile s"], rows)
  print("images/s counts clips for SSMER (one clip = 3 views); input wait s: host time the "
        "loop waits for the next global batch.")


if __name__ == "__main__":
  main()
