"""Stage eval: NME / FR@0.1 / AUC@0.1 (+ per subset, per video, flicker) of an exported model.

  python -m evalign_jax.main --config=configs/eval.py --workdir=workdir/eval_cmfa \
      --config.checkpoint=workdir/cmfa
  python -m evalign_jax.main --config=configs/eval.py --workdir=workdir/eval_mean \
      --config.checkpoint=mean_shape

`checkpoint` is a training workdir, an export folder, or "mean_shape" (the training set's mean
shape for every image, the baseline). Dataset and image size should match the model's training.
"""

import ml_collections

from evalign_jax.config_utils import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.stage = "eval"
  config.checkpoint = ""
  config.dataset = "synthetic_faces"
  config.data_dir = "~/evalign_data"
  config.split = "test"
  config.image_size = 256
  config.eval_batch_size = 32
  config.norm = "auto"                  # inter_ocular (98 points), inter_pupil (5 points), auto
  config.paper_variant = False          # also the official per-landmark FR / AUC
  config.num_worst = 8
  if arg.runlocal:
    config.dataset = "synthetic_faces/small"
    config.image_size = 64
  return config
