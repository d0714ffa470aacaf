"""What every builder here shares: ArrayRecord output, the bad-input policy, the build report.

Subclasses implement `_clips(split)` (yielding `video_examples.Clip`s, or `BadInput` for an input
that could not even be opened) and `_split_names()`; examples, stats and the report come from
here. The report (examples, skipped inputs, truncated windows) is stored in the dataset's
metadata, so it travels with the data.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow_datasets as tfds

from data_pipelines import schema
from data_pipelines import video_examples


@dataclasses.dataclass(eq=False)
class EventFaceConfig(tfds.core.BuilderConfig):
  """Fields common to every dataset's configs.

  Attributes:
    crop: how frames become stored examples (size, crop scale, event capacity).
    num_landmarks: K.
    sim_preset, sim_seed: the event simulator's preset and seed (per clip the seed is offset
      by a hash of the clip id, so clips get independent noise).
    frame_stride: keep every n-th labelled frame as an example (all frames feed the simulator).
  """

  crop: schema.CropSpec = schema.CropSpec()
  num_landmarks: int = 98
  sim_preset: str = "v2e_default"
  sim_seed: int = 0
  frame_stride: int = 1


class EventFaceBuilder(tfds.core.GeneratorBasedBuilder):
  """Base class; see the module docstring."""

  def __init__(self, *, on_error: str = "skip", **kwargs):
    if on_error not in video_examples.ON_ERROR:
      raise ValueError(f"on_error must be one of {video_examples.ON_ERROR}, got {on_error!r}")
    self.on_error = on_error
    self.stats = video_examples.BuildStats()
    super().__init__(**kwargs)

  def _extra_features(self) -> dict:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=schema.features(c.num_landmarks, c.crop.image_size, c.crop.event_capacity,
                                 self._extra_features()),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/evalign-jax",
    )

  def _split_names(self, dl_manager) -> list[str]:
    """The splits to build (tfds refuses a split without examples, so only non-empty ones)."""
    raise NotImplementedError

  def _clips(self, split: str, dl_manager):
    raise NotImplementedError

  # Processes for making examples; builders whose clips pickle (module-level callables) may
  # raise it. Video decoding and the simulator are single-threaded, so this scales with cores.
  workers = 0

  def _clip_examples(self):
    """A picklable function: clip -> its (key, example) pairs."""
    c = self.builder_config
    return functools.partial(video_examples.clip_examples, spec=c.crop, sim_preset=c.sim_preset,
                             sim_seed=c.sim_seed, frame_stride=c.frame_stride)

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, dl_manager)
            for split in self._split_names(dl_manager)}

  def _generate_examples(self, split, dl_manager):
    yield from video_examples.guarded(self._clips(split, dl_manager), self._clip_examples(),
                                      self.on_error, self.stats, workers=self.workers)
    self.info.metadata[f"build_report_{split}"] = self.stats.as_dict()
    self.stats = video_examples.BuildStats()
