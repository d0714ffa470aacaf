"""The long runs that made the quick start's shipped weights (runlocal-size models, 64 px).

  python -m evalign_jax.main --config=configs/quickstart_pretrain.py:model=rgb_slpt \
      --workdir=workdir/pretrain_rgb_slpt
  python -m evalign_jax.main --config=configs/quickstart_pretrain.py:model=ssmer \
      --workdir=workdir/pretrain_ssmer
  python -m evalign_jax.tools.add_pretrained --export=workdir/pretrain_rgb_slpt --name=rgb_slpt
  python -m evalign_jax.tools.add_pretrained --export=workdir/pretrain_ssmer --name=ssmer

They play the parts of the paper's starting points: the public SLPT WFLW checkpoint (a
supervised RGB aligner, CMFA's frozen branch) and SSMER's pretraining on unlabelled events.
Data: synthetic_faces/pretrain (9,600 training crops of 600 subjects, none of whom is in any
test split). The shipped exports are `pretrained:rgb_slpt` and `pretrained:ssmer`
(evalign_jax/pretrained/); the README says what each run cost on 2 CPU cores.
"""

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, model="rgb_slpt")
  if arg.model == "rgb_slpt":
    c = config_utils.load_config("configs/rgb_slpt.py:runlocal")
    c.batch_size = 16
    c.total_steps = 0
    c.num_epochs = 12                      # 7,200 steps of 16
    c.optimizer.decay_epochs = (9, 11)
    c.log_every = 100
    c.evals.val.every = c.checkpoint.every = 1200
    c.evals.val.batch_size = 32
  elif arg.model == "ssmer":
    c = config_utils.load_config("configs/ssmer.py:runlocal")
    c.batch_size = 32
    c.total_steps = 0
    c.num_epochs = 8                       # 2,400 steps of 32
    c.log_every = 100
    c.checkpoint.every = 1000
  else:
    raise config_utils.ConfigError(f"model must be rgb_slpt or ssmer, got {arg.model!r}")
  c.dataset = "synthetic_faces/pretrain"
  return c
