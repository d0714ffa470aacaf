"""Training output: metrics to a JSONL file and TensorBoard, pictures (PNG + TensorBoard images),
progress lines with rate and ETA.

Only process 0 writes (the other processes of a multi-host job hold the same metrics).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from evalign_jax import files

PICTURES_DIR = "pictures"


class MetricWriter:
  """Appends {"step": s, **metrics} lines to <workdir>/metrics.jsonl and TensorBoard scalars;
  pictures go to <workdir>/pictures/ and TensorBoard images."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter   # pylint: disable=g-import-not-at-top
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(np.asarray(v)) for k, v in metrics.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    if self.tb is not None:
      for k, v in clean.items():
        self.tb.add_scalar(k, v, step)

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB, to TensorBoard only."""
    if self.enabled and self.tb is not None:
      self.tb.add_image(tag, image, step, dataformats="HWC")

  def write_pictures(self, step: int, pictures: dict) -> None:
    """{tag: (H, W, 3) uint8 RGB} as <workdir>/pictures/<tag>_<step>.png and to TensorBoard."""
    if not self.enabled:
      return
    for tag, image in pictures.items():
      files.write_png(os.path.join(self.workdir, PICTURES_DIR, f"{tag}_{step}.png"), image)
      self.write_image(step, tag, image)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class Progress:
  """Prints `stage step/total (pct) | steps/s | ETA | metrics` every `every` steps."""

  def __init__(self, name: str, total_steps: int, first_step: int = 0, every: int = 10):
    self.name, self.total, self.every = name, total_steps, every
    self.start_step, self.start = first_step, time.perf_counter()
    self.enabled = jax.process_index() == 0

  def rate(self, step: int) -> float:
    return (step - self.start_step) / max(time.perf_counter() - self.start, 1e-9)

  def restart_clock(self, step: int) -> None:
    """Excludes what came before (e.g. compilation) from the rate."""
    self.start_step, self.start = step, time.perf_counter()

  def update(self, step: int, metrics: dict, force: bool = False) -> None:
    if not self.enabled or (step % self.every and not force):
      return
    rate = self.rate(step)
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    shown = "  ".join(f"{k}={float(np.asarray(v)):.4g}" for k, v in metrics.items())
    print(f"[{self.name}] step {step}/{self.total} ({100 * step / self.total:.0f}%)  "
          f"{rate:.2f} steps/s  ETA {_duration(eta)}  {shown}", flush=True)


def _duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
