"""Dataset names -> builder modules, imported only when used (tfds registers on import)."""

from __future__ import annotations

import importlib
import os

DATASETS = {
    "synthetic_faces": "data_pipelines.synthetic_faces.synthetic_faces_dataset_builder",
    "wflw_v_events": "data_pipelines.wflw_v_events.wflw_v_events_dataset_builder",
    "ecelebv_events": "data_pipelines.ecelebv_events.ecelebv_events_dataset_builder",
    "esie": "data_pipelines.esie.esie_dataset_builder",
    "fes_events": "data_pipelines.fes_events.fes_events_dataset_builder",
}


def builder_class(name: str):
  """The Builder class of dataset `name`; unknown names raise with the valid ones."""
  base = name.split("/")[0]
  if base not in DATASETS:
    raise ValueError(f"unknown dataset {base!r}; valid datasets: {sorted(DATASETS)}")
  return importlib.import_module(DATASETS[base]).Builder


def builder(name: str, *, data_dir: str, config: str | None = None, **kwargs):
  """A builder instance: `name` may carry the config as "name/config"."""
  cls = builder_class(name)
  if "/" in name:
    if config is not None:
      raise ValueError(f"config given twice: {name!r} and config={config!r}")
    name, config = name.split("/", 1)
  valid = [c.name for c in cls.BUILDER_CONFIGS]
  if config is not None and config not in valid:
    raise ValueError(f"unknown config {config!r} of {name}; valid: {valid}")
  return cls(data_dir=os.fspath(data_dir), config=config, **kwargs)


def is_built(name: str, *, data_dir: str, config: str | None = None) -> bool:
  """Whether a complete build exists (an interrupted one does not count)."""
  b = builder(name, data_dir=data_dir, config=config)
  return _complete(b)


def _complete(b) -> bool:
  # tfds renames its temporary folder into place only at the end, with dataset_info.json in it.
  return (b.data_path / "dataset_info.json").exists()


def data_source(name: str, *, data_dir: str, split: str, config: str | None = None,
                decoders=None):
  """Random-access numpy source of a built split (TensorFlow-free); `name` may be name/config."""
  b = builder(name, data_dir=data_dir, config=config)
  if not _complete(b):
    raise FileNotFoundError(
        f"{b.data_path}: dataset {name} (config {b.builder_config.name}) is not built; run "
        f"python -m data_pipelines.build --dataset={name} --data_dir={data_dir}")
  return b.as_data_source(split=split, decoders=decoders)
