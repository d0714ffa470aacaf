"""synthetic_faces: the embedded default dataset, generated procedurally (no download).

Clips of rendered faces (98 WFLW points, identity, pose, expression, motion, lighting, clutter,
occluders; see clips.py) go through the event simulator; each frame after the first becomes an
example with the events since the previous frame. Splits are subject-disjoint: every subject's
clips fall in one split. `subset` holds the clip's lighting condition.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import tensorflow_datasets as tfds

from data_pipelines import builder_base
from data_pipelines import schema
from data_pipelines import video_examples
from data_pipelines.synthetic_faces import clips as clip_gen

# Subject seeds of different splits never overlap.
_SUBJECT_BASE = {"train": 0, "validation": 1_000_000, "test": 2_000_000}


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(builder_base.EventFaceConfig):
  """Attributes:
    clips: clips per split.
    clips_per_subject: clips rendered for each subject (different pose, lighting, scene).
    clip: frame size, clip length and frame rate of the renderer.
    seed: master seed for everything generated.
  """

  clips: dict = dataclasses.field(
      default_factory=lambda: {"train": 240, "validation": 24, "test": 48})
  clips_per_subject: int = 2
  clip: clip_gen.ClipSpec = clip_gen.ClipSpec()
  seed: int = 0
  # Median windows hold ~7k events in normal light and ~20k in low light or flicker (noise);
  # 16384 keeps most windows whole and the newest events of the rest.
  crop: schema.CropSpec = schema.CropSpec(image_size=320, event_capacity=16384)


class Builder(builder_base.EventFaceBuilder):
  """DatasetBuilder for synthetic_faces."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      SyntheticFacesConfig(
          name="default",
          description="240/24/48 clips of 9 frames at 320x320: 2.5k examples, builds in "
                      "under a minute on 2 cores."),
      SyntheticFacesConfig(
          name="small",
          description="For quick runs and CI: 64/8/16 clips of 9 frames at 256x256.",
          clips={"train": 64, "validation": 8, "test": 16},
          clip=clip_gen.ClipSpec(height=256, width=256),
          crop=schema.CropSpec(image_size=256, event_capacity=16384)),
      SyntheticFacesConfig(
          name="pretrain",
          description="For the quick start's pretrained weights (configs/quickstart_pretrain.py): "
                      "1200/24/0 clips of 9 frames at 256x256, 9.6k training examples; its "
                      "subjects are in no test split.",
          clips={"train": 1200, "validation": 24, "test": 0},
          clip=clip_gen.ClipSpec(height=256, width=256),
          crop=schema.CropSpec(image_size=256, event_capacity=16384)),
      SyntheticFacesConfig(
          name="tiny",
          description="For unit tests: 2 clips per split, 3 frames at 96x96.",
          clips={"train": 2, "validation": 2, "test": 2}, clips_per_subject=1,
          clip=clip_gen.ClipSpec(height=96, width=96, num_frames=3),
          crop=schema.CropSpec(image_size=64, event_capacity=1024)),
  ]

  @property
  def workers(self):
    # Rendering and simulating clips is pure CPU work in picklable functions: use the cores,
    # unless the build is too small to repay starting the processes (~2 s each).
    return min(os.cpu_count() or 1, 8) if sum(self.builder_config.clips.values()) >= 32 else 0

  def _split_names(self, dl_manager):
    return [s for s, n in self.builder_config.clips.items() if n > 0]

  def _clips(self, split, dl_manager):
    c = self.builder_config
    for i in range(c.clips[split]):
      subject = _SUBJECT_BASE[split] + i // c.clips_per_subject
      clip_seed = video_examples.stable_hash(f"{c.seed}/{split}/{i}") % 2**32
      yield functools.partial(_render, clip_seed, subject, c.clip, f"{split}{i:05d}")


def _render(clip_seed: int, subject_seed: int, spec: clip_gen.ClipSpec,
            clip_id: str) -> video_examples.Clip:
  clip = clip_gen.render_clip(clip_seed, subject_seed, spec)
  return video_examples.Clip(
      frames=clip.frames, timestamps_us=clip.timestamps_us, landmarks=clip.landmarks,
      boxes=clip.boxes, clip_id=clip_id, subject_id=clip.subject_id, subset=clip.condition,
      source=f"synthetic clip {clip_id} (seed {clip_seed})")


