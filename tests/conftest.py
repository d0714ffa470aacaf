"""Test-wide JAX and absl setup.

Four CPU devices, so sharding code is tested on a real (if small) mesh; this must happen before
anything initialises a JAX backend, hence at conftest import time.
"""

import os
import sys
import tempfile

# Unoptimised XLA:CPU code: compiling is most of the suite's time and this compiles about
# twice as fast (the same programs; results may differ in float rounding). Subprocesses inherit
# it; a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_cpu_use_fusion_emitters=false "
                      "--xla_cpu_parallel_codegen_split_count=1")

import jax   # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags   # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_num_cpu_devices", 4)
# One compilation cache for the session: stages that compile the same program (validation in
# training and the eval stage, say) compile it once.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), f"evalign_jax_test_cache_{os.getuid()}"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

# grain's worker processes read absl flags; outside absl.app.run nothing parses them.
if not flags.FLAGS.is_parsed():
  flags.FLAGS(sys.argv[:1])


import numpy as np
import pytest

from evalign_jax.events import Events


@pytest.fixture
def random_events():
  """Factory: a sorted random stream, uniform in space and time, on a given sensor."""

  def make(n, sensor_size=(24, 32), *, seed=0, t_start_us=1_000_000, duration_us=50_000):
    rng = np.random.default_rng(seed)
    h, w = sensor_size
    t = np.sort(rng.integers(t_start_us, t_start_us + duration_us, n))
    return Events(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n),
                  (h, w))

  return make


@pytest.fixture(scope="session")
def known_model(tmp_path_factory):
  """A tiny exported event-only SLPT whose every stage answers its window's centre, so it
  predicts its mean shape (`test_predict.export_model`), and its loaded predictor: compiled
  once for every prediction test."""
  from test_predict import export_model, inner_box_shape   # pylint: disable=g-import-not-at-top
  from evalign_jax import predict   # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("models")
  shape = inner_box_shape()
  known = export_model(root / "known", "slpt_event", shape, known_output=True)
  return {"shape": shape, "known": known, "known_predictor": predict.load_predictor(known),
          "root": root}
