"""Stage ssmer: SimSiam pretraining of the event backbone on frame / voxel / time-surface views.

  python -m evalign_jax.main --config=configs/ssmer.py --workdir=workdir/ssmer
  python -m evalign_jax.main --config=configs/ssmer.py:runlocal --workdir=workdir/ssmer

Defaults are the paper's: 224 px views, batch 64, SGD momentum 0.9, weight decay 1e-4,
lr 0.05 x batch / 256 with a per-epoch cosine over 200 epochs. Its export is what
configs/cmfa.py takes as init.event_from.
"""

from evalign_jax.config_utils import parse_arg, training_base


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  config = training_base("ssmer")
  config.model = "ssmer"
  config.image_size = 224
  config.batch_size = 64
  config.num_epochs = 200
  config.representations = ("frame", "voxel", "time_surface")
  config.optimizer = dict(lr=0.05, momentum=0.9, weight_decay=1e-4)
  config.model_size = dict(dim=2048, pred_dim=512)   # runlocal shrinks the projection head
  if arg.runlocal:
    config.dataset = "synthetic_faces/small"
    config.image_size = 64
    config.model_size = dict(dim=512, pred_dim=128, backbone_blocks=1)
    config.batch_size = 8
    config.total_steps = 50
    config.log_every = 25
    config.checkpoint.every = 100
  return config
