"""A picture of a built dataset: examples as rows of RGB | frame | voxel | time surface.

  python -m data_pipelines.preview --dataset=synthetic_faces --data_dir=DIR --out=grid.png

Landmarks are drawn on every panel, so misaligned events or labels are seen at a glance.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app
from absl import flags

from data_pipelines import landmarks as lm
from data_pipelines import registry
from data_pipelines import schema
from evalign_jax import files
from evalign_jax.events import images


def example_row(ex: dict) -> np.ndarray:
  """(S, 4 S, 3) uint8 RGB: the image and the three event renderings, landmarks drawn.

  Event-only examples (no `image`) give (S, 3 S, 3): the renderings alone.
  """
  size = ex["image"].shape[0] if "image" in ex else int(ex["crop_size"])
  panels = [ex["image"]] if "image" in ex else []
  if "event_image" in ex:
    panels += [ex["event_image"]] * 3
  else:
    events = schema.stored_events(ex)
    window = (0, int(ex["window_us"]))
    for kind in images.KINDS:
      config = images.RenderConfig(kind=kind, tau_us=max(window[1] / 2, 1.0))
      img = images.render_image(jax.tree.map(np.asarray, events), (size, size), config,
                                t_start_us=window[0], t_end_us=window[1])
      panels.append(np.clip(np.asarray(img) * 255, 0, 255).astype(np.uint8))
  # Points only on the event panels, so the curves do not hide the events.
  return np.concatenate([lm.draw_landmarks(p, ex["landmarks"], curves=i == 0 and "image" in ex)
                         for i, p in enumerate(panels)], axis=1)


def preview(dataset: str, data_dir: str, out: str, *, split: str = "train", num: int = 6,
            config: str | None = None) -> np.ndarray:
  src = registry.data_source(dataset, data_dir=data_dir, split=split, config=config)
  idx = np.linspace(0, len(src) - 1, min(num, len(src))).astype(int)
  grid = np.concatenate([example_row(src[int(i)]) for i in idx], axis=0)
  files.write_png(out, grid)
  return grid


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.data_dir:
    raise app.UsageError("--data_dir is required")
  grid = preview(FLAGS.dataset, FLAGS.data_dir, FLAGS.out, split=FLAGS.split,
                 num=FLAGS.num, config=FLAGS.config)
  features = registry.builder(FLAGS.dataset, data_dir=FLAGS.data_dir,
                              config=FLAGS.config).info.features
  rgb = "RGB | " if "image" in features else ""
  print(f"wrote {FLAGS.out} ({grid.shape[1]}x{grid.shape[0]}): rows = examples; columns = "
        f"{rgb}event frame | voxel grid | time surface")


def _define_flags():
  """Flags only for the command line, so importing this module defines none."""
  flags.DEFINE_string("dataset", "synthetic_faces", "Dataset name.")
  flags.DEFINE_string("data_dir", None, "Where the dataset was built.")
  flags.DEFINE_string("config", None, "Builder config (default: the first).")
  flags.DEFINE_string("split", "train", "Split to show.")
  flags.DEFINE_integer("num", 6, "Number of examples (rows).")
  flags.DEFINE_string("out", "preview.png", "Output PNG.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
