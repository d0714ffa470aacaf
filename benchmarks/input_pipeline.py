"""Host throughput of the CMFA and SSMER training input pipelines, per worker count.

  python benchmarks/input_pipeline.py --data_dir=~/tensorflow_datasets --dataset=synthetic_faces
  python benchmarks/input_pipeline.py                       # no dataset built: in-memory fake

If the dataset is not built under --data_dir, a fake source of schema.py examples is used:
320x320 JPEG crops (q95) with ~4000 of 8192 event slots filled. Like tfds.data_source it decodes
on every access (JPEG via cv2, events via zlib), so the cost per example is realistic.
Prints samples/s after a warm-up (worker start-up excluded) and a per-stage profile of one
example in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib

import cv2
import numpy as np
from absl import flags

from data_pipelines import augment
from data_pipelines import input_pipeline as ip
from data_pipelines import schema
from evalign_jax.events import Events

EVENT_DTYPES = {"x": np.float16, "y": np.float16, "t": np.int32, "p": np.uint8}


class FakeSource:
  """A random-access source of stored examples, decoded on access like a tfds data source.

  `num_examples` distinct records are repeated to a dataset of `length`: grain's shuffle costs
  ~0.4 ms per element on a 64-element dataset but ~6 µs on a realistic 10^5.
  """

  def __init__(self, num_examples: int = 64, length: int = 100_000, num_events: int = 4000,
               decode_image: bool = True, spec: schema.CropSpec = schema.CropSpec()):
    self._decode_image = decode_image
    self._length = length
    self._records = [self._make(i, num_events, spec) for i in range(num_examples)]

  @staticmethod
  def _make(i: int, num_events: int, spec: schema.CropSpec) -> dict:
    rng = np.random.default_rng(i)
    h, w = 480, 640
    # A smooth, face-like frame: JPEG cost depends on content, so no white noise.
    frame = np.full((h, w, 3), 90, np.uint8)
    frame += (np.linspace(0, 80, w)[None, :, None]).astype(np.uint8)
    cv2.ellipse(frame, (320, 240), (100, 130), 0, 0, 360, (200, 160, 140), -1)
    for cx in (280, 360):
      cv2.circle(frame, (cx, 210), 12, (40, 30, 30), -1)
    cv2.ellipse(frame, (320, 300), (40, 12), 0, 0, 360, (150, 60, 60), -1)
    noise = rng.normal(0, 6, frame.shape)
    frame = cv2.GaussianBlur(np.clip(frame + noise, 0, 255).astype(np.uint8), (3, 3), 0)
    box = np.array([220, 110, 420, 370], np.float32)
    lms = rng.uniform([260, 180], [380, 320], (98, 2))
    # Events inside the stored crop square (1.5 x 260 px around the box centre).
    ex, ey = rng.uniform(130, 510, num_events), rng.uniform(45, 435, num_events)
    ev = Events(np.sort(rng.integers(1_001, 34_000, num_events)), ex.astype(int),
                ey.astype(int), rng.integers(0, 2, num_events), (h, w))
    stored = schema.crop_example(frame, lms, box, ev, 1_000, 34_000, spec,
                                 clip_id=f"clip{i}", subject_id="s", subset="train",
                                 frame_index=i)
    stored["events"] = {k: (zlib.compress(v.tobytes()) if k in EVENT_DTYPES else int(v))
                        for k, v in stored["events"].items()}
    return stored

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    r = self._records[index % len(self._records)]
    out = dict(r)
    if self._decode_image:
      out["image"] = cv2.cvtColor(cv2.imdecode(np.frombuffer(r["image"], np.uint8),
                                              cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    out["events"] = {k: (np.frombuffer(zlib.decompress(v), EVENT_DTYPES[k]) if k in EVENT_DTYPES
                         else v) for k, v in r["events"].items()}
    for k in augment.METADATA_FIELDS:
      out[k] = r[k].encode()
    return out


def open_source(args, decode_image: bool):
  try:
    return ip.make_source(args.dataset, args.data_dir, args.split, decode_image=decode_image), \
        args.dataset
  except Exception as e:  # pylint: disable=broad-except
    print(f"# {args.dataset} not readable under {args.data_dir} ({type(e).__name__}); "
          "using the in-memory fake source", file=sys.stderr)
    return FakeSource(args.fake_examples, decode_image=decode_image), "fake"


def cpu_seconds() -> float:
  """User + system CPU time of this process and its live children (grain's workers)."""
  me, total = os.getpid(), 0
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(pid) == me or int(fields[1]) == me:      # fields[1] is the parent pid
      total += int(fields[11]) + int(fields[12])    # utime, stime in clock ticks
  return total / os.sysconf("SC_CLK_TCK")


def throughput(source, task: str, workers: int, args) -> tuple[float, float]:
  """(samples per wall second, samples per CPU second) after a warm-up."""
  ds = ip.make_dataset(source, task=task, train=True, global_batch_size=args.batch_size,
                       seed=0, process_index=0, process_count=1)
  it = ip.make_iterator(ds, workers, num_threads=args.threads)
  for _ in range(args.warmup):
    next(it)
  start, cpu = time.perf_counter(), cpu_seconds()
  for _ in range(args.batches):
    next(it)
  elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
  it.close()
  samples = args.batches * args.batch_size
  return samples / elapsed, samples / cpu


def profile(source, raw_source):
  """Median ms per example of each host stage, in this process."""
  rng = np.random.default_rng(0)
  cmfa, ssmer = augment.AlignmentAugment(), augment.SsmerAugment()
  size = ip._stored_image_size(source)  # pylint: disable=protected-access
  stages = {
      "read+decode (jpeg, events)": lambda i: source[i],
      "read, image not decoded": lambda i: raw_source[i],
      "cmfa augment": lambda i, ex=source[0]: augment.alignment_example(ex, rng, cmfa, True),
      "ssmer augment (3 views)": lambda i, ex=raw_source[0]: augment.ssmer_example(
          ex, rng, ssmer, image_size=size),
  }
  out = {}
  for name, fn in stages.items():
    times = []
    for i in range(60):
      t0 = time.perf_counter()
      fn(i % len(source))
      times.append(time.perf_counter() - t0)
    out[name] = 1e3 * float(np.median(times))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--dataset", default="synthetic_faces")
  parser.add_argument("--split", default="train")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--batches", type=int, default=12, help="timed batches per setting")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--threads", type=int, default=2, help="grain read threads per process")
  parser.add_argument("--tasks", default="cmfa,ssmer")
  parser.add_argument("--fake_examples", type=int, default=64)
  args = parser.parse_args()
  flags.FLAGS(sys.argv[:1])      # grain's workers read absl flags

  decoded, name = open_source(args, decode_image=True)
  raw, _ = open_source(args, decode_image=False)
  cores = len(os.sched_getaffinity(0))
  print(f"source: {name}, {len(decoded)} examples; batch {args.batch_size}; "
        f"{args.threads} read threads per process; {cores} CPU cores\n")
  print("per-example host cost (ms, median, this process):")
  for stage, ms in profile(decoded, raw).items():
    print(f"  {stage:30s} {ms:7.2f}")
  print()
  print(f"{'task':6s} {'workers':>7s} {'samples/s':>10s} {'cores busy':>10s} "
        f"{'samples/CPU-s':>13s}")
  for task in args.tasks.split(","):
    source = decoded if task == "cmfa" else raw     # SSMER never needs the RGB
    for workers in (int(w) for w in args.workers.split(",")):
      wall, per_cpu = throughput(source, task, workers, args)
      print(f"{task:6s} {workers:7d} {wall:10.0f} {wall / per_cpu:10.2f} {per_cpu:13.0f}",
            flush=True)
  print("\nsamples/CPU-s: samples per second of CPU time used by this process and its workers "
        "(the per-core rate).")


if __name__ == "__main__":
  main()
