"""The entry point for every stage.

  python -m evalign_jax.main --config=configs/<stage>.py[:variant] --workdir=DIR

The config's `stage` field names what runs (see `evalign_jax.stages`); any config field can be
overridden on the command line, e.g. `--config.simulator.seed=3`. The config is locked, so a
mistyped field is an error, not a silent default.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from evalign_jax import stages

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with :variant.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  logging.info("stage %s, config:\n%s", config.stage, config)
  stages.get_stage(config.stage)(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
