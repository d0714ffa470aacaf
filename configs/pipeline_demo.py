"""The embedded dataset through the training input path: build -> grain -> device rendering.

  python -m evalign_jax.main --config=configs/pipeline_demo.py --workdir=workdir/pipeline_demo
  python -m evalign_jax.main --config=configs/pipeline_demo.py:runlocal --workdir=workdir/demo

Builds synthetic_faces into `data_dir` on first use, then times the CMFA and SSMER pipelines
and writes a picture of augmented batches (see evalign_jax/demos/pipeline.py).
"""

import ml_collections

from evalign_jax.config_utils import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.stage = "pipeline_demo"
  config.dataset = "synthetic_faces"      # name or name/config, e.g. synthetic_faces/small
  config.data_dir = "~/evalign_data"
  config.batch_size = 32
  config.num_batches = 8
  config.num_workers = 0
  config.seed = 0
  config.cmfa_image_size = 256            # the CMFA crop
  config.ssmer_image_size = 224           # the SSMER views
  config.render = dict(kind="frame", num_bins=5, tau_us=30_000.0)   # CMFA's event input
  config.preview_rows = 4

  if arg.runlocal:
    config.dataset = "synthetic_faces/small"
    config.batch_size = 8
    config.num_batches = 4
  return config
