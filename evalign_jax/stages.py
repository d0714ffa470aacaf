"""Stage registry: the config's `stage` name selects what `evalign_jax.main` runs.

Entries are import paths, so the entry point imports only the stage it runs.
"""

from __future__ import annotations

import importlib
from typing import Callable

from evalign_jax import config_utils

# name -> "module:function"; the function takes (config, workdir).
STAGES: dict[str, str] = {
    "events_demo": "evalign_jax.demos.events:run",
    "pipeline_demo": "evalign_jax.demos.pipeline:run",
    "rgb_slpt": "evalign_jax.trainers.alignment:train",
    "cmfa": "evalign_jax.trainers.alignment:train",
    "ssmer": "evalign_jax.trainers.ssmer:train",
    "eval": "evalign_jax.evaluate:run",
    "quickstart": "evalign_jax.quickstart:run",
}


def get_stage(name: str) -> Callable:
  """The run function of stage `name`; unknown names raise with the valid ones."""
  if name not in STAGES:
    raise config_utils.ConfigError(f"unknown stage {name!r}; valid stages: {sorted(STAGES)}")
  module, _, fn = STAGES[name].partition(":")
  return getattr(importlib.import_module(module), fn)
