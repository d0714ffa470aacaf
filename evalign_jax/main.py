"""The entry point for every stage.

  python -m evalign_jax.main --config=configs/<stage>.py[:variant] --workdir=DIR

Multi-process jobs (several hosts, or `launch/local.sh N -- ...` on one machine) join first;
see `evalign_jax/distributed.py` for --distributed, --coordinator_address, --num_processes,
--process_id and the timeouts, and `launch/` for SLURM and TPU VM scripts.

The config's `stage` field names what runs (see `evalign_jax.stages`); any config field can be
overridden on the command line, e.g. `--config.simulator.seed=3`. The config is locked, so a
mistyped field is an error, not a silent default. A config that cannot run (a mistyped field
or variant, cmfa without `init.rgb_from`, a dataset that is not built, an unwritable workdir)
stops with one line saying why and exit status 1; --verbosity=0 also logs the traceback.
"""


import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from evalign_jax import distributed
from evalign_jax import guards
from evalign_jax import runtime
from evalign_jax import stages

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with :variant.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags()   # before anything else touches a JAX backend
  runtime.quiet_library_logs()
  runtime.enable_compilation_cache()
  with runtime.user_errors_as_one_line():
    # A config file that did not load raises at its first use; a bad workdir fails here, not
    # after building data and models.
    config = _CONFIG.value
    logging.info("stage %s, config:\n%s", config.stage, config)
    guards.check_workdir(_WORKDIR.value)
    run = stages.get_stage(config.stage)
    try:
      run(config, _WORKDIR.value)
    except jax.errors.JaxRuntimeError:
      if jax.process_count() > 1:
        logging.error("process %d of %d stopped on a runtime error; in a multi-process job "
                      "this usually means another process failed first: see its log",
                      jax.process_index(), jax.process_count())
      raise


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
