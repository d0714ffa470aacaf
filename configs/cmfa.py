"""Stage cmfa: CMFA fine-tuning on events, with the frozen RGB branch (or the event-only SLPT).

After configs/rgb_slpt.py and configs/ssmer.py (of the same size: runlocal with runlocal):

  python -m evalign_jax.main --config=configs/cmfa.py --workdir=workdir/cmfa \
      --config.init.event_from=workdir/ssmer --config.init.rgb_from=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/cmfa.py:runlocal --workdir=workdir/cmfa_local \
      --config.init.event_from=workdir/ssmer_local --config.init.rgb_from=workdir/rgb_slpt_local
  python -m evalign_jax.main --config=configs/cmfa.py:model=slpt_event --workdir=workdir/slpt_event
  python -m evalign_jax.main --config=configs/cmfa.py:runlocal,model=slpt_event \
      --workdir=workdir/slpt_event_local

init.rgb_from is required for cmfa (an rgb_slpt workdir or an imported SLPT); init.event_from
is optional (without it the event backbone starts from scratch). Defaults are the paper's:
Adam 1e-4, x0.1 at epochs 120 and 140, 200 epochs, batch 64, frame representation, deep
supervision 0.2/0.3/0.5; sized for a GPU or TPU. The frozen RGB branch's BatchNorm runs in
eval mode; rgb_bn_train=True reproduces the official code, where its statistics keep updating.
Variants: model=cmfa|slpt_event (the no-CMFA ablation), runlocal (2 CPU cores), tiny (tests).
"""

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, tiny=False, model="cmfa")
  if arg.model not in ("cmfa", "slpt_event"):
    raise config_utils.ConfigError(f"model must be cmfa or slpt_event, got {arg.model!r}")
  return config_utils.alignment_training("cmfa", arg.model, size=config_utils.size_variant(arg),
                                         batch_size=64, num_epochs=200, lr=1e-4)
