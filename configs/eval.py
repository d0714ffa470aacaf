"""Stage eval: NME / FR@0.1 / AUC@0.1 (+ per subset, per video, flicker) of an exported model.

  python -m evalign_jax.main --config=configs/eval.py --workdir=workdir/eval_cmfa \
      --config.checkpoint=workdir/cmfa
  python -m evalign_jax.main --config=configs/eval.py:runlocal --workdir=workdir/eval_mean \
      --config.checkpoint=mean_shape

`checkpoint` is a training workdir, an export folder, or "mean_shape" (the training set's mean
shape for every image, the baseline; `image_size` is its crop). An export brings its own crop
size and event rendering; the dataset should be the one it was trained on (runlocal: the
small synthetic build). Each entry of `evals` writes <workdir>/<name>/ (see
evalign_jax/evaluate.py); e.g. --config.evals.test.split=validation, .paper_variant=True.
"""

import ml_collections

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, tiny=False)
  size = config_utils.size_variant(arg)
  config = ml_collections.ConfigDict()
  config.stage = "eval"
  config.checkpoint = ""
  config.dataset = "synthetic_faces"
  config.data_dir = "~/evalign_data"
  config.image_size = 256
  config.evals = ml_collections.ConfigDict()
  # norm: inter_ocular (98 points), inter_pupil (5 points), or auto; paper_variant: also the
  # official per-landmark FR / AUC; pictures: the CED curves and the worst predictions.
  config.evals.test = dict(type="landmarks", split="test", batch_size=32, norm="auto",
                           paper_variant=False, pictures=("ced", "worst"), num_pictures=8)
  if size == "runlocal":
    config.dataset = "synthetic_faces/small"
    config.image_size = 64
  if size == "tiny":
    config.dataset = "synthetic_faces/tiny"
    config.image_size = 32
    config.evals.test.batch_size = 2
  return config
