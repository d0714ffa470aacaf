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
import contextlib
import os
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity_torch   # pylint: disable=g-import-not-at-top,wrong-import-position


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


def cmfa_train_setup(batch: int, image_size: int, dtype: str, capacity: int, events: int,
                     model_size: dict | None = None, seed: int = 0):
  """CMFA's train step (frozen RGB branch, Adam), its state and a device batch of `batch`.

  Returns:
    (jitted step, state of nnx.split((model, optimizer)), batch, graphdef); the step donates
    the state. `model_size`: the model's sizes (None: the paper's).
  """
  rng = np.random.default_rng(seed)
  render = images.RenderConfig(kind="frame")
  cfg = {"dtype": dtype, "rgb_bn_train": False, "model": "cmfa", "model_size": model_size}
  mean = rng.uniform(0.3, 0.7, (98, 2)).astype(np.float32)
  model = models.build_model(cfg, mean, seed)
  wrt = models.model_spec("cmfa").trainable
  opt = nnx.Optimizer(model, optax.adam(1e-4), wrt=wrt)
  graphdef, state = nnx.split((model, opt))
  step = alignment.make_train_step(graphdef, "cmfa", image_size, render,
                                   optax.constant_schedule(1e-4), wrt)
  data = jax.device_put(fake_cmfa_batch(rng, batch, image_size, capacity, events))
  return step, state, data, graphdef


def ssmer_train_setup(batch: int, image_size: int, dtype: str, capacity: int, events: int,
                      model_size: dict | None = None, seed: int = 0):
  """SSMER's train step (3 views, SGD), its state and a device batch: as `cmfa_train_setup`."""
  rng = np.random.default_rng(seed)
  model = models.build_model({"dtype": dtype, "model": "ssmer", "model_size": model_size},
                             seed=seed)
  opt = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)
  graphdef, state = nnx.split((model, opt))
  views = tuple(images.RenderConfig(kind=k) for k in images.KINDS)
  step = ssmer.make_train_step(graphdef, image_size, views, optax.constant_schedule(0.05))
  data = jax.device_put(fake_ssmer_batch(rng, batch, capacity, events, image_size))
  return step, state, data, graphdef


def our_steps(args, dtype: str) -> dict:
  """name -> (callable running one step and blocking, images per call)."""
  out = {}
  step, state, batch, graphdef = cmfa_train_setup(args.batch, args.image_size, dtype,
                                                  args.capacity, args.events)
  cmfa_train, holder = _stepper(step, state, batch)
  model = nnx.merge(graphdef, state)[0]
  predict = landmark_eval.make_predict(nnx.split(model)[0], "cmfa", args.image_size,
                                       images.RenderConfig(kind="frame"))
  # The training state is donated at every step: take the model's current state each time.
  model_state = lambda: nnx.state(nnx.merge(graphdef, holder["state"])[0])
  out["cmfa train"] = (cmfa_train, args.batch)
  out["cmfa inference"] = (lambda: jax.block_until_ready(predict(model_state(), batch)),
                           args.batch)
  sstep, sstate, sbatch, _ = ssmer_train_setup(args.batch, args.ssmer_size, dtype,
                                               args.capacity, args.events)
  out["ssmer train"] = (_stepper(sstep, sstate, sbatch)[0], args.batch)
  return out


def official_cmfa_steps(cmfa, *, batch: int, image_size: int, device: str, amp_dtype=None,
                        optimizer=None) -> dict:
  """The official CMFA's train and inference steps on pre-rendered random images.

  `cmfa`: `parity_torch.official_models`' CMFA, or a `torch.compile` of it. `amp_dtype`: run the
  forward passes under `torch.autocast(device, amp_dtype)` (None: float32). `optimizer`: Adam
  over the trainable parameters (built here if None).
  """
  import torch   # pylint: disable=g-import-not-at-top
  b, s = batch, image_size
  rgb = torch.randn(b, 3, s, s, device=device)
  ev = torch.randn(b, 3, s, s, device=device)
  gt = torch.rand(b, 98, 2, device=device)
  if optimizer is None:
    optimizer = torch.optim.Adam([p for p in cmfa.parameters() if p.requires_grad], lr=1e-4)
  opt = optimizer
  sync = _sync(torch, device)
  amp = _autocast(torch, device, amp_dtype)

  def cmfa_train():
    cmfa.train()
    with amp():
      preds = cmfa(rgb, ev)
      loss = sum(w * parity_torch.official_alignment_loss(p.float(), gt)
                 for w, p in zip((0.2, 0.3, 0.5), preds))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()

  def cmfa_infer():
    cmfa.eval()
    with torch.no_grad(), amp():
      cmfa(rgb, ev)
    sync()

  return {"cmfa train": cmfa_train, "cmfa inference": cmfa_infer}


def official_ssmer_step(simsiam, criterion, *, batch: int, image_size: int, device: str,
                        amp_dtype=None, optimizer=None):
  """The official SSMER train step (the encoder runs per pair: 6 passes) on random views."""
  import torch   # pylint: disable=g-import-not-at-top
  v = [torch.randn(batch, 3, image_size, image_size, device=device) for _ in range(3)]
  if optimizer is None:
    optimizer = torch.optim.SGD(simsiam.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
  sopt = optimizer
  sync = _sync(torch, device)
  amp = _autocast(torch, device, amp_dtype)

  def ssmer_train():
    simsiam.train()
    loss = 0.0
    with amp():
      for a, c in ((0, 1), (1, 2), (0, 2)):   # the official loop: the encoder runs per pair
        p1, p2, z1, z2 = simsiam(x1=v[a], x2=v[c])
        loss = loss - (criterion(p1.float(), z2.float()).mean()
                       + criterion(p2.float(), z1.float()).mean()) * 0.5
    sopt.zero_grad()
    loss.backward()
    sopt.step()
    sync()

  return ssmer_train


def _sync(torch, device: str):
  return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _autocast(torch, device: str, amp_dtype):
  """A context factory: autocast to `amp_dtype` on `device`, or nothing."""
  if amp_dtype is None:
    return contextlib.nullcontext
  return lambda: torch.autocast(device, dtype=amp_dtype)


def official_steps(args) -> dict:
  """The official PyTorch steps (CPU or CUDA), float32, on pre-rendered random images."""
  import torch   # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  cmfa, simsiam, criterion = parity_torch.official_models(args.official_dir, device)
  steps = official_cmfa_steps(cmfa, batch=args.batch, image_size=args.image_size, device=device)
  steps["ssmer train"] = official_ssmer_step(simsiam, criterion, batch=args.batch,
                                             image_size=args.ssmer_size, device=device)
  return {name: (fn, args.batch) for name, fn in steps.items()}


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
