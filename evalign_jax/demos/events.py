"""Stage `events_demo`: the event core end to end on a procedural scene.

Renders a moving scene, simulates its events, writes them to disk, reads them back, renders the
three representations on device for every frame interval, and writes a preview grid:

  <workdir>/events.<format>      the simulated stream (round-trip checked)
  <workdir>/representations.png  per row: gray frame | frame | voxel | time surface
  <workdir>/summary.json         counts, rates and every simulator parameter
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import logging

from evalign_jax import files
from evalign_jax.events import images
from evalign_jax.events import io
from evalign_jax.events import scenes
from evalign_jax.events import simulator
from evalign_jax.events.events import Events


def _window_batch(events: Events, timestamps_us: np.ndarray, capacity: int):
  """Pads the events of each frame interval (t_k, t_k+1] to one fixed-shape batch.

  Returns the batch (leading axis = interval), the int32 window bounds relative to each
  window's start, and how many windows had to be truncated to `capacity`.
  """
  windows, ends, truncated = [], [], 0
  for t0, t1 in zip(timestamps_us[:-1], timestamps_us[1:]):
    w = events.time_window(t0 + 1, t1 + 1)
    truncated += len(w) > capacity
    windows.append(w[:capacity].pad(capacity, t_ref_us=int(t0)))
    ends.append(int(t1 - t0))
  batch = jax.tree.map(lambda *a: np.stack(a), *windows)
  return batch, np.zeros(len(ends), np.int32), np.array(ends, np.int32), truncated


def _preview(frames, reps, path, rows):
  tiles = []
  for k in np.linspace(1, len(frames) - 1, rows).astype(int):
    gray = np.repeat(frames[k][..., None], 3, axis=-1)
    cells = [gray] + [np.clip(r[k - 1] * 255.0, 0, 255).astype(np.uint8) for r in reps]
    tiles.append(np.concatenate(cells, axis=1))
  files.write_png(path, np.concatenate(tiles, axis=0))


def run(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  s = config.scene
  frames, ts = scenes.moving_texture_video(s.height, s.width, s.num_frames, fps=s.fps,
                                            speed_px=s.speed_px, seed=s.seed)
  logging.info("simulating %d frames of %dx%d", s.num_frames, s.height, s.width)
  start = time.perf_counter()
  events = simulator.simulate_events(frames, ts, preset=config.simulator.preset,
                                     seed=config.simulator.seed)
  sim_s = time.perf_counter() - start

  path = os.path.join(workdir, f"events.{config.output_format}")
  io.write_events(path, events)
  back = io.read_events(path)
  if not all(np.array_equal(getattr(back, f), getattr(events, f)) for f in "txyp"):
    raise RuntimeError(f"{path}: events read back differ from those written")

  batch, starts, ends, truncated = _window_batch(events, ts, config.render.capacity)
  sensor = (s.height, s.width)
  reps = []
  render_s = 0.0
  for kind in images.KINDS:
    cfg = images.RenderConfig.from_config(config.render, kind=kind)
    fn = jax.jit(jax.vmap(lambda e, a, b, c=cfg: images.render_image(
        e, sensor, c, t_start_us=a, t_end_us=b)))
    out = jax.block_until_ready(fn(batch, starts, ends))   # compile + run
    start = time.perf_counter()
    out = jax.block_until_ready(fn(batch, starts, ends))
    render_s += time.perf_counter() - start
    reps.append(np.asarray(out))
  _preview(frames, reps, os.path.join(workdir, "representations.png"), config.preview_rows)

  n_windows = len(ts) - 1
  summary = {
      "frames": int(s.num_frames), "sensor_size": list(sensor), "events": len(events),
      "events_per_frame": len(events) / n_windows,
      "simulator_frames_per_s": n_windows / sim_s,
      "render_windows_per_s": 3 * n_windows / render_s,
      "windows_truncated": int(truncated), "capacity": int(config.render.capacity),
      "events_file": path, "device": str(jax.devices()[0]),
      "simulator": events.metadata.get("simulator", {}),
  }
  files.write_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))

  rows = [("frames simulated", f"{s.num_frames} at {s.height}x{s.width}"),
          ("events", f"{len(events):,} ({summary['events_per_frame']:.0f} per frame)"),
          ("simulator", f"{summary['simulator_frames_per_s']:.1f} frames/s"),
          ("rendering (3 kinds)", f"{summary['render_windows_per_s']:.0f} windows/s on "
                                  f"{summary['device']}"),
          ("windows truncated", f"{truncated} of {n_windows} (capacity {config.render.capacity})"),
          ("written", f"{path}, representations.png, summary.json")]
  width = max(len(k) for k, _ in rows)
  print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
  return summary
