"""The whole method end to end on the embedded synthetic faces, sized for 2 CPU cores.

  python -m evalign_jax.main --config=configs/quickstart.py --workdir=workdir/quickstart

rgb_slpt -> ssmer -> slpt_event -> cmfa -> eval (mean shape, slpt_event, cmfa) at the runlocal
sizes of each stage's config; prints the table and writes <workdir>/summary.json.
"""

import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.stage = "quickstart"
  config.dataset = "synthetic_faces/small"
  config.data_dir = "~/evalign_data"
  config.seed = 0
  config.steps = dict(rgb_slpt=150, ssmer=50, slpt_event=150, cmfa=150)
  config.image_size = 64
  config.batch_size = 8
  # Reduced for 2 CPU cores (the paper's sizes are the stage configs' defaults).
  config.model_size = dict(d_model=128, num_heads=4, num_layers=2, ffn_dim=256,
                           backbone_blocks=1)
  config.ssmer_model_size = dict(dim=512, pred_dim=128, backbone_blocks=1)
  return config
