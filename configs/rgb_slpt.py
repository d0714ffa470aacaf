"""Stage rgb_slpt: supervised SLPT on RGB crops, the frozen RGB branch of CMFA.

  python -m evalign_jax.main --config=configs/rgb_slpt.py --workdir=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/rgb_slpt.py:runlocal --workdir=workdir/rgb_slpt

Defaults are SLPT's WFLW recipe (Adam 1e-3, batch 32, 150 epochs, x0.1 at 120 and 140).
The export (<workdir>/export) is what configs/cmfa.py takes as init.rgb_from; the public SLPT
WFLW weights can be used instead (python -m evalign_jax.tools.import_torch --kind=slpt ...).
"""

from evalign_jax.config_utils import alignment_training, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  return alignment_training("rgb_slpt", "rgb_slpt", runlocal=arg.runlocal, batch_size=32,
                            num_epochs=150, lr=1e-3)
