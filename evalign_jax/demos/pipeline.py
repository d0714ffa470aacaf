"""Stage `pipeline_demo`: the embedded dataset through the training input path, no model yet.

Builds `synthetic_faces` on first use, runs the CMFA and SSMER grain pipelines (augmentation on
host), renders their events on the JAX device exactly as the training steps will (frame, voxel
and time-surface images, device photometric augmentation), and writes:

  <workdir>/batches.png     CMFA rows: augmented RGB | its rendered event frame, landmarks drawn;
                            SSMER rows: the three views (frame | voxel | time surface)
  <workdir>/summary.json    dataset report, host samples/s, device images/s
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from data_pipelines import augment
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from data_pipelines import landmarks as lm
from data_pipelines.build import ensure_built
from evalign_jax import files
from evalign_jax.events import images


def _timed_batches(it, n: int) -> tuple[list, float]:
  next(it)   # worker start-up and first-batch latency are not throughput
  start = time.perf_counter()
  batches = [next(it) for _ in range(n)]
  return batches, time.perf_counter() - start


def _device_rate(fn, batch, repeats: int = 3) -> float:
  jax.block_until_ready(fn(batch))   # compile
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(batch))
  return repeats / (time.perf_counter() - start)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  """ImageNet-normalised images -> uint8 RGB for display."""
  x = x * np.array(da.IMAGENET_STD) + np.array(da.IMAGENET_MEAN)
  return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def run(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  data_dir = os.path.expanduser(config.data_dir)
  report = ensure_built(config.dataset, data_dir)
  source = ip.make_source(config.dataset, data_dir, "train")
  size = config.cmfa_image_size
  event_cfg = images.RenderConfig.from_config(config.render)
  view_cfgs = tuple(images.RenderConfig.from_config(config.render, kind=k) for k in images.KINDS)

  rows = {}
  cmfa_render = jax.jit(lambda b: da.cmfa_event_images(b, size, event_cfg))
  ssmer_render = jax.jit(lambda b: da.ssmer_view_images(b, config.ssmer_image_size, view_cfgs))
  shown = {}
  augments = {"cmfa": augment.AlignmentAugment(out_size=size),
              "ssmer": augment.SsmerAugment(out_size=config.ssmer_image_size)}
  for task, render in (("cmfa", cmfa_render), ("ssmer", ssmer_render)):
    ds = ip.make_dataset(source if task == "cmfa" else ip.make_source(
        config.dataset, data_dir, "train", decode_image=False), task=task, train=True,
        global_batch_size=config.batch_size, seed=config.seed, augment_config=augments[task])
    it = ip.make_iterator(ds, config.num_workers)
    try:
      batches, host_s = _timed_batches(it, config.num_batches)
    finally:
      getattr(it, "close", lambda: None)()
    device_batch, _ = ip.split_host_fields(batches[0])
    per_s = _device_rate(render, device_batch)
    images_per_batch = config.batch_size * (1 if task == "cmfa" else len(view_cfgs))
    rows[task] = {"host_samples_per_s": config.num_batches * config.batch_size / host_s,
                  "device_images_per_s": per_s * images_per_batch}
    shown[task] = (batches[0], np.asarray(render(device_batch)))

  # The picture: CMFA (RGB | events) and SSMER (3 views) for a few examples.
  n = min(config.preview_rows, config.batch_size)
  batch, events = shown["cmfa"]
  cmfa_rows = [np.concatenate([lm.draw_landmarks(batch["image"][i], batch["landmarks"][i]),
                               lm.draw_landmarks(_to_uint8(events[i]), batch["landmarks"][i],
                                                 curves=False)], axis=1) for i in range(n)]
  _, views = shown["ssmer"]
  ssmer_rows = [np.concatenate([_to_uint8(v) for v in views[i]], axis=1) for i in range(n)]
  path = os.path.join(workdir, "batches.png")
  panels = [np.concatenate(cmfa_rows, 0), np.concatenate(ssmer_rows, 0)]
  width = max(p.shape[1] for p in panels)
  files.write_png(path, np.concatenate(
      [np.pad(p, ((0, 8), (0, width - p.shape[1]), (0, 0))) for p in panels], 0))

  summary = {"dataset": config.dataset, "data_dir": data_dir, "train_examples": len(source),
             "build_report": report, "batch_size": config.batch_size,
             "num_workers": config.num_workers, "device": str(jax.devices()[0]), **rows}
  files.write_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))

  print(f"\n{config.dataset}: {len(source)} training examples in {data_dir}")
  print(f"{'pipeline':<8} {'host samples/s':>15} {'device images/s':>16}   ({summary['device']})")
  for task, r in rows.items():
    print(f"{task:<8} {r['host_samples_per_s']:>15.0f} {r['device_images_per_s']:>16.0f}")
  print(f"wrote {path} and summary.json")
  return summary

