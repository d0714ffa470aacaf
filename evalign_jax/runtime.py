"""Process setup shared by the command-line entry points (`main`, `predict`)."""

from __future__ import annotations

import os

import jax
from absl import flags
from absl import logging


def enable_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk: a rerun, a resumed run or a later stage with the same
  program skips compilation (minutes for the HRNet steps on a CPU). EVALIGN_JAX_CACHE sets the
  folder; EVALIGN_JAX_CACHE="" turns it off."""
  path = os.environ.get("EVALIGN_JAX_CACHE", os.path.expanduser("~/.cache/evalign_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def quiet_library_logs() -> None:
  """Progress goes to stdout; the libraries' INFO lines (Orbax writes ~20 per checkpoint) would
  bury it. An explicit --verbosity (e.g. 0) keeps them."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
