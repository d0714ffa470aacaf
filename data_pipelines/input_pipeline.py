"""The grain input pipeline: tfds source -> shard -> shuffle -> augment -> fixed-shape batches.

The host only decodes, moves coordinates, warps the RGB and batches; representations and
their photometric augmentation happen on device (`device_augment.py`). Batches are numpy with a
leading local batch axis B = global_batch_size // process_count:

CMFA (task="cmfa"):
  image (B, S, S, 3) uint8 RGB (absent for event-only datasets); landmarks (B, K, 2) float32
  output px;
  events {x, y (B, C) int16 output px; t (B, C) int32 µs after the window start;
          p (B, C) uint8; valid (B, C) bool};
  window_us (B,) int32; event_grayscale (B,) bool; event_occlusion (B, 4) float32 half-open
  (x0, y0, x1, y1) px (zeros = none); event_occlusion_colour (B, 3) float32 in [0, 1];
  example_mask (B,) bool; host-only: clip_id, subject_id, subset (B,) bytes, frame_index (B,)
  int32, box_size (B,) float32 output px (the face box's sqrt(w h)).
SSMER (task="ssmer"):
  views {x, y (B, V, C) int16; t (B, V, C) int32; p (B, V, C) uint8; valid (B, V, C) bool};
  window_us (B,) int32; photometric {jitter_apply, grayscale (B, V) bool; brightness,
  contrast, saturation, hue, blur_sigma (B, V) float32}; example_mask (B,) bool.

Determinism: the shuffle and every augmentation draw derive from `seed`, the process index and
the element's position, so a pipeline is reproducible, and its iterator state (a position) can
be saved with Orbax (`grain.checkpoint.CheckpointSave`) and restored exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import augment
from data_pipelines import registry

TASKS = ("cmfa", "ssmer")


def make_source(dataset: str, data_dir: str, split: str, *, decode_image: bool = True):
  """A random-access tfds source of stored examples (numpy; texts as bytes).

  decode_image=False leaves `image` as JPEG bytes: SSMER never looks at the RGB, and decoding
  it is most of the host cost. Event-only datasets have no `image` (see schema.py).
  """
  decoders = None
  if not decode_image and "image" in registry.builder(dataset, data_dir=data_dir).info.features:
    decoders = {"image": tfds.decode.SkipDecoding()}
  return registry.data_source(dataset, data_dir=data_dir, split=split, decoders=decoders)


def _stored_image_size(source) -> tuple[int, int]:
  """(height, width) of the stored crops, from the feature spec or else the first example."""
  info = getattr(source, "dataset_info", None)
  if info is not None and "image" in info.features:
    return tuple(info.features["image"].shape[:2])
  if "image" not in source[0]:                       # event-only: the crop frame's side
    return (int(source[0]["crop_size"]),) * 2
  image = source[0]["image"]
  if isinstance(image, bytes):
    image = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
  return tuple(np.shape(image)[:2])


def _derive_seed(seed: int, *keys: int) -> int:
  """An independent 32-bit seed per (seed, keys): grain wants ints in [0, 2**32)."""
  return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


# Per-example transforms. Module-level classes so grain can pickle them into worker processes.


@dataclasses.dataclass(frozen=True)
class _Augment:
  """One stored example -> one output example of `task`, plus its `example_mask`."""

  task: str
  cfg: Any
  train: bool
  image_size: tuple[int, int] | None = None

  def apply(self, example: dict, rng: np.random.Generator | None, keep: bool) -> dict:
    if self.task == "cmfa":
      out = augment.alignment_example(example, rng, self.cfg, self.train)
    else:
      out = augment.ssmer_example(example, rng, self.cfg, train=self.train,
                                  image_size=self.image_size)
    out["example_mask"] = np.bool_(keep)
    return out


@dataclasses.dataclass(frozen=True)
class _TrainMap(_Augment):

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    return self.apply(example, rng, True)


@dataclasses.dataclass(frozen=True)
class _EvalMap(_Augment):

  def __call__(self, item: tuple[dict, bool]) -> dict:
    example, keep = item
    return self.apply(example, None, keep)


class _PadToLength(grain.MapDataset):
  """(element, True) for the parent's elements, then (a repeated element, False) up to `length`."""

  def __init__(self, parent: grain.MapDataset, length: int):
    super().__init__(parent)
    if len(parent) == 0:
      raise ValueError("cannot pad an empty dataset (fewer examples than processes?)")
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    i = index % self._length
    n = len(self._parent)
    return self._parent[i % n], i < n

  def __str__(self) -> str:
    return f"_PadToLength(length={self._length})"


def make_dataset(source: Sequence[dict], *, task: str, train: bool, global_batch_size: int,
                 seed: int = 0, num_epochs: int | None = None, shuffle: bool | None = None,
                 augment_config: augment.AlignmentAugment | augment.SsmerAugment | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None) -> grain.MapDataset:
  """A MapDataset of fixed-shape local batches (format in the module docstring).

  Examples are sharded first (process i of n reads source[i::n], so processes never share an
  example), then shuffled within the shard (reshuffled every epoch), augmented and batched.

  Args:
    source: random-access stored examples (`make_source`, or any sequence of example dicts).
    task: "cmfa" or "ssmer".
    train: random augmentation, and the last partial batch is dropped. False is the evaluation
      pass: no randomness, and the last batch is padded with `example_mask` False so every
      example is seen once; every process gets the same number of batches.
    global_batch_size: the batch over all processes.
    seed: seeds the shuffle and the augmentation.
    num_epochs: passes over the shard; None repeats forever in training, means 1 in eval.
    shuffle: default `train`.
    augment_config: default AlignmentAugment() / SsmerAugment().
    process_index, process_count: default jax.process_index() / jax.process_count().
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if global_batch_size % pc:
    raise ValueError(f"global batch {global_batch_size} is not divisible by {pc} processes")
  batch = global_batch_size // pc
  shuffle = train if shuffle is None else shuffle
  if num_epochs is None and not train:
    num_epochs = 1
  if augment_config is None:
    augment_config = augment.AlignmentAugment() if task == "cmfa" else augment.SsmerAugment()
  image_size = _stored_image_size(source) if task == "ssmer" else None

  total = len(source)
  ds = grain.MapDataset.source(source)[pi::pc]
  if not train:
    # Shards differ by at most one example; pad all to the same whole number of batches.
    per_process = -(-total // pc)
    ds = _PadToLength(ds, -(-per_process // batch) * batch)
  if shuffle:
    ds = ds.shuffle(seed=_derive_seed(seed, pi, 0))
  ds = ds.repeat(num_epochs)
  if train:
    ds = ds.random_map(_TrainMap(task, augment_config, True, image_size),
                       seed=_derive_seed(seed, pi, 1))
  else:
    ds = ds.map(_EvalMap(task, augment_config, False, image_size))
  return ds.batch(batch, drop_remainder=train)


def make_iterator(dataset: grain.MapDataset | grain.IterDataset, num_workers: int = 0, *,
                  num_threads: int = 2, prefetch_batches: int = 2,
                  worker_buffer_size: int = 2) -> grain.DatasetIterator:
  """An iterator over `dataset` (checkpointable: get_state / set_state, or Orbax).

  Call `close()` on it when done with workers, to stop them promptly.

  Args:
    dataset: from `make_dataset`.
    num_workers: worker processes (0 = this process only).
    num_threads: threads per process computing batches (cv2 and zlib release the GIL).
    prefetch_batches: batches read ahead per process. grain's default (500) would hold
      gigabytes of image batches.
    worker_buffer_size: finished batches buffered per worker.
  """
  if isinstance(dataset, grain.MapDataset):
    dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(prefetch_batches, num_threads)))
  if num_workers > 0:
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers,
                                     per_worker_buffer_size=worker_buffer_size),
        worker_init_fn=_init_worker)
  return iter(dataset)


def _init_worker(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  # Workers are the parallelism; cv2's own thread pool in each one only oversubscribes the
  # cores (measured ~30% more CPU per example with 2 cv2 threads on 2 cores).
  cv2.setNumThreads(1)


# Text ids cannot go to a device; `frame_index` and `box_size` stay with them, being for
# metrics only.
HOST_ONLY = ("clip_id", "subject_id", "subset", "frame_index", "box_size")


def split_host_fields(batch: dict) -> tuple[dict, dict]:
  """(the arrays the jitted step takes, the host-only ids used for per-video metrics)."""
  host = {k: batch[k] for k in HOST_ONLY if k in batch}
  return {k: v for k, v in batch.items() if k not in HOST_ONLY}, host
