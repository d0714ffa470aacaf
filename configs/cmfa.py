"""Stage cmfa: CMFA fine-tuning on events, with the frozen RGB branch (or the event-only SLPT).

  python -m evalign_jax.main --config=configs/cmfa.py --workdir=workdir/cmfa \
      --config.init.event_from=workdir/ssmer --config.init.rgb_from=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/cmfa.py:model=slpt_event --workdir=workdir/slpt_event
  python -m evalign_jax.main --config=configs/cmfa.py:runlocal --workdir=... (2 CPU cores)

Defaults are the paper's: Adam 1e-4, x0.1 at epochs 120 and 140, 200 epochs, batch 64, frame
representation, deep supervision 0.2/0.3/0.5. The frozen RGB branch's BatchNorm runs in eval
mode; rgb_bn_train=True reproduces the official code, where its statistics keep updating.
"""

from evalign_jax.config_utils import alignment_training, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, model="cmfa")
  # model: "cmfa", or "slpt_event" (the no-CMFA ablation).
  return alignment_training("cmfa", arg.model, runlocal=arg.runlocal, batch_size=64,
                            num_epochs=200, lr=1e-4)
