"""Stage rgb_slpt: supervised SLPT on RGB crops, the frozen RGB branch of CMFA.

  python -m evalign_jax.main --config=configs/rgb_slpt.py --workdir=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/rgb_slpt.py:runlocal --workdir=workdir/rgb_slpt_local

Defaults are SLPT's WFLW recipe (Adam 1e-3, batch 32, 150 epochs, x0.1 at 120 and 140),
sized for a GPU or TPU; runlocal trains on 2 CPU cores.
The export (<workdir>/export) is what configs/cmfa.py takes as init.rgb_from (of the same size:
runlocal for cmfa.py:runlocal); the public SLPT WFLW weights can be used instead
(python -m evalign_jax.tools.import_torch --kind=slpt ...). Variants: runlocal (2 CPU cores),
tiny (tests); see evalign_jax/config_utils.py.
"""

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, tiny=False)
  return config_utils.alignment_training("rgb_slpt", "rgb_slpt",
                                         size=config_utils.size_variant(arg), batch_size=32,
                                         num_epochs=150, lr=1e-3)
