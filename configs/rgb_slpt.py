"""Stage rgb_slpt: supervised SLPT on RGB crops, the frozen RGB branch of CMFA.

  python -m evalign_jax.main --config=configs/rgb_slpt.py --workdir=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/rgb_slpt.py:runlocal --workdir=workdir/rgb_slpt

Defaults are SLPT's WFLW recipe (Adam 1e-3, batch 32, 150 epochs, x0.1 at 120 and 140).
The export (<workdir>/export) is what configs/cmfa.py takes as init.rgb_from; the public SLPT
WFLW weights can be used instead (python -m evalign_jax.tools.import_torch --kind=slpt ...).
"""

from evalign_jax.config_utils import parse_arg, training_base


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  config = training_base("rgb_slpt")
  config.model = "rgb_slpt"
  config.num_landmarks = 98
  config.image_size = 256
  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_epochs = 150
  config.val_split = "validation"
  config.optimizer = dict(lr=1e-3, decay_epochs=(120, 140))
  config.loss = dict(stage_weights=(0.2, 0.3, 0.5))
  # The paper's decoder; runlocal shrinks it (labelled as such) so 2 CPU cores can train it.
  config.model_size = dict(d_model=256, num_heads=8, num_layers=6, ffn_dim=1024)
  config.rgb_bn_train = False
  config.init = dict(event_from="", rgb_from="")
  if arg.runlocal:
    config.dataset = "synthetic_faces/small"
    config.image_size = 64
    config.model_size = dict(d_model=128, num_heads=4, num_layers=2, ffn_dim=256,
                             backbone_blocks=1)
    config.batch_size = 8
    config.eval_batch_size = 16
    config.total_steps = 150
    config.log_every = 25
    config.eval_every = 150
    config.checkpoint.every = 150
    config.optimizer.lr = 1e-3
  return config
