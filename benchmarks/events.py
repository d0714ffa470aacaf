"""Throughput of the event core: representations (numpy reference vs JAX per backend) and the
video-to-event simulator. Prints tables; run on a quiet machine.

  python benchmarks/events.py                    # full table (1 M and 10 M events)
  python benchmarks/events.py --events=1000000   # quicker

Events are uniform random in space, sorted over 50 ms, B = 5 bins. Renderer timings are the
median over repeats taken round-robin across implementations (so load drift hits all alike),
with the events already on the device; compile time is excluded and reported separately.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import numpy as np

from evalign_jax.events import representations as ref
from evalign_jax.events import representations_jax as rj
from evalign_jax.events import scenes
from evalign_jax.events import simulator
from evalign_jax.events.events import Events

KINDS = ("voxel", "frame", "time_surface")


def numpy_fn(kind, ev):
  if kind == "voxel":
    return lambda: ref.voxel_grid(ev, 5, "e2vid")
  if kind == "frame":
    return lambda: ref.event_frame(ev)
  return lambda: ref.time_surface(ev, tau_us=30_000.0)


def jax_fn(kind, padded, sensor):
  if kind == "voxel":
    f = functools.partial(rj.voxel_grid, sensor_size=sensor, num_bins=5, convention="e2vid")
  elif kind == "frame":
    f = functools.partial(rj.event_frame, sensor_size=sensor)
  else:
    f = functools.partial(rj.time_surface, sensor_size=sensor, tau_us=30_000.0)
  return lambda: jax.block_until_ready(f(padded))


def timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench_representations(sizes, counts, repeats, skip_numpy_above):
  backends = {"cpu": jax.devices("cpu")[0]}
  try:
    backends["gpu"] = jax.devices("gpu")[0]
  except RuntimeError:
    pass
  columns = ["numpy f64"] + [f"JAX {b}" for b in backends]
  print(f"\nRepresentations, M events/s (median of {repeats}); compile s in brackets")
  header = f"{'sensor':>9} {'events':>6} {'kind':>12} | " + " | ".join(
      f"{c:>17}" for c in columns)
  print(header)
  print("-" * len(header))
  rng = np.random.default_rng(0)
  for sensor in sizes:
    h, w = sensor
    for n in counts:
      t = np.sort(rng.integers(0, 50_000, n))
      ev = Events(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n),
                  sensor)
      padded = ev.pad(n)
      for kind in KINDS:
        impls, compile_s = {}, {}
        if n <= skip_numpy_above:
          impls["numpy f64"] = numpy_fn(kind, ev)
        for b, dev in backends.items():
          fn = jax_fn(kind, jax.device_put(padded, dev), sensor)
          compile_s[f"JAX {b}"] = timed(fn)
          impls[f"JAX {b}"] = fn
        runs = {k: [] for k in impls}
        for _ in range(repeats):
          for k, fn in impls.items():
            runs[k].append(timed(fn))
        cells = []
        for c in columns:
          if c not in runs:
            cells.append(f"{'skipped':>17}")
            continue
          rate = n / statistics.median(runs[c]) / 1e6
          extra = f" ({compile_s[c]:.2f})" if c in compile_s else ""
          cells.append(f"{rate:>10.1f}{extra:>7}")
        print(f"{h}x{w:<5} {n / 1e6:>5.0f}M {kind:>12} | " + " | ".join(cells))


def bench_simulator(sizes, num_frames, preset):
  print(f"\nSimulator ({preset}), moving-texture scene, {num_frames} frames at 30 fps")
  print(f"{'frame size':>10} | {'frames/s':>9} | {'events/frame':>12} | {'M events/s':>10}")
  print("-" * 52)
  for h, w in sizes:
    frames, ts = scenes.moving_texture_video(h, w, num_frames, seed=1)
    simulator.simulate_events(frames[:3], ts[:3], preset=preset)   # warm caches
    times = []
    for _ in range(3):
      start = time.perf_counter()
      ev = simulator.simulate_events(frames, ts, preset=preset)
      times.append(time.perf_counter() - start)
    s = statistics.median(times)
    print(f"{h:>4}x{w:<5} | {(num_frames - 1) / s:>9.1f} | {len(ev) / (num_frames - 1):>12.0f}"
          f" | {len(ev) / s / 1e6:>10.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--events", default="1000000,10000000",
                      help="comma-separated event counts")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_numpy_above", type=int, default=10_000_000,
                      help="skip the (slow) numpy reference above this many events")
  parser.add_argument("--sim_frames", type=int, default=61)
  parser.add_argument("--preset", default="v2e_default")
  parser.add_argument("--skip_simulator", action="store_true")
  args = parser.parse_args()
  print(f"JAX {jax.__version__}, devices: {jax.devices()}")
  bench_representations([(260, 346), (480, 640)], [int(c) for c in args.events.split(",")],
                        args.repeats, args.skip_numpy_above)
  if not args.skip_simulator:
    bench_simulator([(256, 256), (480, 640)], args.sim_frames, args.preset)


if __name__ == "__main__":
  main()
