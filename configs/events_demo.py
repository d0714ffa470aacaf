"""The event core end to end: scene -> simulator -> event file -> on-device representations.

  python -m evalign_jax.main --config=configs/events_demo.py --workdir=/tmp/events_demo
  python -m evalign_jax.main --config=configs/events_demo.py:runlocal --workdir=/tmp/events_demo

Writes the simulated events, a preview of the frame / voxel / time-surface renderings and a
summary.json (see evalign_jax/demos/events.py).
"""

import ml_collections

from evalign_jax.config_utils import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.stage = "events_demo"

  config.scene = dict(height=256, width=256, num_frames=61, fps=30.0, speed_px=1.5, seed=0)
  config.simulator = dict(preset="v2e_default", seed=0)
  # aedat4 is what iniVation cameras record; npz, h5, raw (EVT3) and dat work too.
  config.output_format = "aedat4"
  config.render = dict(
      capacity=65_536,       # events per window slot; fuller windows are truncated and counted
      num_bins=5,
      convention="e2vid",
      tau_us=30_000.0,
  )
  config.preview_rows = 4

  if arg.runlocal:
    config.scene.height, config.scene.width, config.scene.num_frames = 128, 160, 16
    config.render.capacity = 32_768
    config.preview_rows = 3
  return config
