"""Stage ssmer: SimSiam pretraining of the event backbone on frame / voxel / time-surface views.

  python -m evalign_jax.main --config=configs/ssmer.py --workdir=workdir/ssmer
  python -m evalign_jax.main --config=configs/ssmer.py:runlocal --workdir=workdir/ssmer_local

Defaults are the paper's: 224 px views, batch 64, SGD momentum 0.9, weight decay 1e-4,
lr 0.05 x batch / 256 with a per-epoch cosine over 200 epochs, sized for a GPU or TPU (a
step of batch 64 needs more memory than a 23 GB CPU host has). Its export is what
configs/cmfa.py takes as init.event_from (of the same size). Variants: runlocal (2 CPU cores),
tiny (tests); see evalign_jax/config_utils.py.
"""

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, tiny=False)
  size = config_utils.size_variant(arg)
  config = config_utils.training_base("ssmer")
  config.model = "ssmer"
  config.image_size = 224
  config.batch_size = 64
  config.num_epochs = 200
  config.representations = ("frame", "voxel", "time_surface")
  config.optimizer = dict(lr=0.05, momentum=0.9, weight_decay=1e-4)
  config.model_size = dict(dim=2048, pred_dim=512)   # runlocal shrinks the projection head
  if size in ("runlocal", "tiny"):
    config.dataset = "synthetic_faces/small"
    config.image_size = 64
    config.model_size = dict(dim=512, pred_dim=128, backbone_blocks=1)
    config.batch_size = 8
    config.total_steps = 50
    config.log_every = 25
    config.checkpoint.every = 100
  if size == "tiny":
    config_utils.shrink_to_tiny(config)
  return config
