"""Images/s of the SSMER and CMFA train steps and of CMFA inference, ours vs the official code.

  python benchmarks/train_step.py                       # batch 8, f32 (CPU-sized)
  python benchmarks/train_step.py --batch=64 --dtypes=float32,bfloat16     # on a GPU
  python benchmarks/train_step.py --official_dir=PATH   # + the official PyTorch steps

Our steps are the trainers' own jitted steps (evalign_jax/trainers), fed synthetic batches in the
input pipeline's format, so they include rendering the events on device. The official steps
get pre-rendered images (their input), so the comparison slightly favours them. Timings are
medians over repeats taken round-robin (ours, official, ours, ...), so load drift hits both;
compile time is reported separately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from data_pipelines import augment
from evalign_jax import models
from evalign_jax.evaluators import landmarks as landmark_eval
from evalign_jax.events import images
from evalign_jax.trainers import alignment
from evalign_jax.trainers import ssmer


def fake_cmfa_batch(rng, batch: int, size: int, capacity: int, events: int) -> dict:
  """A batch in input_pipeline's CMFA format: random image, plausible landmarks, events."""
  lm = rng.uniform(0.3 * size, 0.7 * size, (batch, 98, 2)).astype(np.float32)
  lm[:, 60], lm[:, 72] = [0.3 * size, 0.4 * size], [0.7 * size, 0.4 * size]
  valid = np.arange(capacity)[None] < events
  return {
      "image": rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8),
      "landmarks": lm,
      "events": {"x": rng.integers(0, size, (batch, capacity)).astype(np.int16),
                 "y": rng.integers(0, size, (batch, capacity)).astype(np.int16),
                 "t": np.sort(rng.integers(1, 33_333, (batch, capacity)), 1).astype(np.int32),
                 "p": rng.integers(0, 2, (batch, capacity)).astype(np.uint8),
                 "valid": np.broadcast_to(valid, (batch, capacity)).copy()},
      "window_us": np.full(batch, 33_333, np.int32),
      "event_grayscale": np.zeros(batch, bool),
      "event_occlusion": np.zeros((batch, 4), np.float32),
      "event_occlusion_colour": np.zeros((batch, 3), np.float32),
      "example_mask": np.ones(batch, bool),
  }


def fake_ssmer_batch(rng, batch: int, capacity: int, events: int, size: int) -> dict:
  shape = (batch, 3, capacity)
  valid = np.arange(capacity) < events
  photo = augment.identity_photometric()
  return {
      "views": {"x": rng.integers(0, size, shape).astype(np.int16),
                "y": rng.integers(0, size, shape).astype(np.int16),
                "t": np.sort(rng.integers(1, 33_333, shape), -1).astype(np.int32),
                "p": rng.integers(0, 2, shape).astype(np.uint8),
                "valid": np.broadcast_to(valid, shape).copy()},
      "window_us": np.full(batch, 33_333, np.int32),
      "photometric": {k: np.broadcast_to(v, (batch, 3)).copy() for k, v in photo.items()},
      "example_mask": np.ones(batch, bool),
  }


def _stepper(step, state, batch):
  """A no-argument call running one (donating) train step to completion, and its state box."""
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  return run, holder


def our_steps(args, dtype: str) -> dict:
  """name -> (callable running one step and blocking, images per call)."""
  rng = np.random.default_rng(0)
  render = images.RenderConfig(kind="frame")
  cfg = {"dtype": dtype, "rgb_bn_train": False}
  mean = rng.uniform(0.3, 0.7, (98, 2)).astype(np.float32)
  out = {}

  model = models.build_model({**cfg, "model": "cmfa"}, mean)
  wrt = models.model_spec("cmfa").trainable
  opt = nnx.Optimizer(model, optax.adam(1e-4), wrt=wrt)
  graphdef, state = nnx.split((model, opt))
  step = alignment.make_train_step(graphdef, "cmfa", args.image_size, render,
                                   optax.constant_schedule(1e-4), wrt)
  batch = jax.device_put(fake_cmfa_batch(rng, args.batch, args.image_size, args.capacity,
                                         args.events))
  cmfa_train, holder = _stepper(step, state, batch)
  model_graphdef = nnx.split(model)[0]
  predict = landmark_eval.make_predict(model_graphdef, "cmfa", args.image_size, render)
  # The training state is donated at every step: take the model's current state each time.
  model_state = lambda: nnx.state(nnx.merge(graphdef, holder["state"])[0])
  out["cmfa train"] = (cmfa_train, args.batch)
  out["cmfa inference"] = (lambda: jax.block_until_ready(predict(model_state(), batch)),
                           args.batch)

  model = models.build_model({**cfg, "model": "ssmer"})
  opt = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)
  sgraphdef, sstate = nnx.split((model, opt))
  views = tuple(images.RenderConfig(kind=k) for k in images.KINDS)
  sstep = ssmer.make_train_step(sgraphdef, args.ssmer_size, views, optax.constant_schedule(0.05))
  sbatch = jax.device_put(fake_ssmer_batch(rng, args.batch, args.capacity, args.events,
                                           args.ssmer_size))
  out["ssmer train"] = (_stepper(sstep, sstate, sbatch)[0], args.batch)
  return out


def official_steps(args) -> dict:
  """The official PyTorch steps (CPU or CUDA), on pre-rendered random images."""
  sys.path.insert(0, "benchmarks")
  import parity_torch   # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  cmfa, simsiam, criterion = parity_torch.official_models(args.official_dir, device)
  b, s = args.batch, args.image_size
  rgb = torch.randn(b, 3, s, s, device=device)
  ev = torch.randn(b, 3, s, s, device=device)
  gt = torch.rand(b, 98, 2, device=device)
  opt = torch.optim.Adam([p for p in cmfa.parameters() if p.requires_grad], lr=1e-4)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def cmfa_train():
    cmfa.train()
    preds = cmfa(rgb, ev)
    loss = sum(w * parity_torch.official_alignment_loss(p, gt)
               for w, p in zip((0.2, 0.3, 0.5), preds))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()

  def cmfa_infer():
    cmfa.eval()
    with torch.no_grad():
      cmfa(rgb, ev)
    sync()

  v = [torch.randn(b, 3, args.ssmer_size, args.ssmer_size, device=device) for _ in range(3)]
  sopt = torch.optim.SGD(simsiam.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)

  def ssmer_train():
    simsiam.train()
    loss = 0.0
    for a, c in ((0, 1), (1, 2), (0, 2)):   # the official loop: the encoder runs per pair
      p1, p2, z1, z2 = simsiam(x1=v[a], x2=v[c])
      loss = loss - (criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    sopt.zero_grad()
    loss.backward()
    sopt.step()
    sync()

  return {"cmfa train": (cmfa_train, b), "cmfa inference": (cmfa_infer, b),
          "ssmer train": (ssmer_train, b)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=256, help="CMFA crop")
  parser.add_argument("--ssmer_size", type=int, default=224, help="SSMER views")
  parser.add_argument("--capacity", type=int, default=16384, help="events per window slot")
  parser.add_argument("--events", type=int, default=8000, help="valid events per window")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--official_dir", default="")
  args = parser.parse_args()
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind} ({jax.devices()[0].platform});"
        f" batch {args.batch}, CMFA {args.image_size} px, SSMER {args.ssmer_size} px")
  rows = []
  official = official_steps(args) if args.official_dir else {}
  for dtype in args.dtypes.split(","):
    ours = our_steps(args, dtype)
    compile_s = {}
    for name, (fn, _) in ours.items():
      start = time.perf_counter()
      fn()
      compile_s[name] = time.perf_counter() - start
    for fn, _ in official.values():
      fn()   # warm-up
    times = {name: [] for name in ours}
    ref = {name: [] for name in official}
    for _ in range(args.repeats):
      for name, (fn, _) in ours.items():
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
        if name in official:
          start = time.perf_counter()
          official[name][0]()
          ref[name].append(time.perf_counter() - start)
    for name, (_, n) in ours.items():
      ips = n / statistics.median(times[name])
      row = [name, dtype, f"{statistics.median(times[name]):.3f}", f"{ips:.2f}",
             f"{compile_s[name]:.1f}"]
      if name in ref and dtype == "float32":
        off = n / statistics.median(ref[name])
        row += [f"{off:.2f}", f"{ips / off:.2f}x"]
      rows.append(row)
    official = {} if dtype == "float32" else official
  print_table(["step", "dtype", "s/step", "images/s", "first call s", "official img/s",
               "ours/off"], rows)
  print("images/s counts clips for SSMER (one clip = 3 views).")


def print_table(header: list, rows: list) -> None:
  """Left-aligned columns; rows may be shorter than the header."""
  widths = [max(len(str(r[i])) if i < len(r) else 0 for r in rows + [header])
            for i in range(len(header))]
  print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
  print("-+-".join("-" * w for w in widths))
  for r in rows:
    print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
  main()
