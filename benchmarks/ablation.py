"""The longer comparison: event-only SLPT vs CMFA without SSMER vs CMFA with SSMER.

  python benchmarks/ablation.py --workdir=workdir/ablation [--steps=2000] [--dataset=...]

The quick start's stages (reduced models, 64 px; see configs/quickstart.py) with more steps and
one more run, CMFA whose event backbone starts from scratch instead of the SSMER encoder. All
runs resume from their workdirs. Prints NME / FR@0.1 / AUC@0.1 on the test split.
"""

from __future__ import annotations

import argparse

from evalign_jax import config_utils
from evalign_jax import quickstart


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=2000, help="steps per supervised stage")
  parser.add_argument("--ssmer_steps", type=int, default=1000)
  parser.add_argument("--dataset", default="synthetic_faces")
  parser.add_argument("--data_dir", default="~/evalign_data")
  args = parser.parse_args()
  config = config_utils.load_config("configs/quickstart.py:ablation")
  config.dataset, config.data_dir = args.dataset, args.data_dir
  for name in config.steps:
    config.steps[name] = args.ssmer_steps if name == "ssmer" else args.steps
  quickstart.run(config, args.workdir)


if __name__ == "__main__":
  main()
