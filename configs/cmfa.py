"""Stage cmfa: CMFA fine-tuning on events, with the frozen RGB branch (or the event-only SLPT).

  python -m evalign_jax.main --config=configs/cmfa.py --workdir=workdir/cmfa \
      --config.init.event_from=workdir/ssmer --config.init.rgb_from=workdir/rgb_slpt
  python -m evalign_jax.main --config=configs/cmfa.py:model=slpt_event --workdir=workdir/slpt_event
  python -m evalign_jax.main --config=configs/cmfa.py:runlocal --workdir=... (2 CPU cores)

Defaults are the paper's: Adam 1e-4, x0.1 at epochs 120 and 140, 200 epochs, batch 64, frame
representation, deep supervision 0.2/0.3/0.5. The frozen RGB branch's BatchNorm runs in eval
mode; rgb_bn_train=True reproduces the official code, where its statistics keep updating.
"""

from evalign_jax.config_utils import parse_arg, training_base


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, model="cmfa")
  config = training_base("cmfa")
  config.model = arg.model               # "cmfa" or "slpt_event" (the no-CMFA ablation)
  config.num_landmarks = 98
  config.image_size = 256
  config.batch_size = 64
  config.eval_batch_size = 32
  config.num_epochs = 200
  config.val_split = "validation"
  config.optimizer = dict(lr=1e-4, decay_epochs=(120, 140))
  config.loss = dict(stage_weights=(0.2, 0.3, 0.5))
  # The paper's decoder; runlocal shrinks it (labelled as such) so 2 CPU cores can train it.
  config.model_size = dict(d_model=256, num_heads=8, num_layers=6, ffn_dim=1024)
  config.rgb_bn_train = False
  # Workdirs or export folders of earlier stages; event_from may be empty (no SSMER).
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
