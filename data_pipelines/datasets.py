"""What a stage needs of its dataset before training: where it is, that it is built, its mean shape.

A stage config names the dataset (`dataset`, name or name/config) and where builds live
(`data_dir`). The embedded `synthetic_faces` builds itself on first use; the others read raw
data the user has (`--manual_dir`), so a missing build is an error saying how to make it.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import augment
from data_pipelines import geometry
from data_pipelines import input_pipeline as ip
from data_pipelines import registry
from data_pipelines.build import ensure_built
from evalign_jax import distributed

# Datasets that build from nothing but code (no raw data to point --manual_dir at).
SELF_BUILDING = ("synthetic_faces",)


def data_dir(config) -> str:
  """The config's `data_dir`, user folder expanded."""
  return os.path.expanduser(config.data_dir)


def prepare_dataset(config) -> None:
  """Builds the config's dataset on first use when it needs no raw data; else checks it is built.

  In a multi-process job process 0 builds it and the others wait: data_dir must then be shared
  by the hosts (or built beforehand on each).

  Raises:
    ValueError: an unknown dataset or builder config (naming the valid ones).
    FileNotFoundError: a dataset built from raw data that has not been built, with the command
      that builds it.
  """
  name, directory = config.dataset, data_dir(config)
  if name.split("/")[0] not in SELF_BUILDING and not registry.is_built(name, data_dir=directory):
    raise FileNotFoundError(
        f"dataset {name} is not built in {directory}; build it from its raw data first: "
        f"python -m data_pipelines.build --dataset={name.split('/')[0]} "
        + (f"--config={name.split('/', 1)[1]} " if "/" in name else "")
        + f"--manual_dir=RAW_DATA --data_dir={directory}")
  if distributed.is_primary():
    ensure_built(name, directory)
  distributed.barrier("dataset_built")


def mean_shape(dataset: str, data_dir: str, image_size: int,
               max_examples: int = 2000) -> np.ndarray:
  """(K, 2) mean landmarks of the training split in [0, 1] crop coordinates.

  In the evaluation crop (1.2 x box, no augmentation), the frame the models see; only the
  landmarks are transformed (images are not decoded). An evenly spaced subset of at most
  `max_examples` examples is enough for a mean.
  """
  source = ip.make_source(dataset, data_dir, "train", decode_image=False)
  cfg = augment.AlignmentAugment(out_size=image_size)
  idx = np.linspace(0, len(source) - 1, min(len(source), max_examples)).astype(int)
  pts = []
  for i in idx:
    example = source[int(i)]
    pts.append(geometry.apply_to_points(augment.eval_crop_matrix(example, cfg),
                                        np.asarray(example["landmarks"])))
  return (np.mean(pts, axis=0) / image_size).astype(np.float32)
