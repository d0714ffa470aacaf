"""Process setup shared by the command-line entry points (`main`, `predict`): the compilation
cache, quiet library logs, and user errors as one line."""

from __future__ import annotations

import contextlib
import os
import sys

import jax
from absl import flags
from absl import logging

# What a user can cause and fix (a config that cannot run, a missing file, dataset or export,
# an unwritable workdir, bad input, a run that diverged): one line naming it, not a traceback.
# ValueError covers config_utils.ConfigError, EventFileError and RgbInputError; OSError covers
# FileNotFoundError and guards.WorkdirError.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def enable_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk: a rerun, a resumed run or a later stage with the same
  program skips compilation (minutes for the HRNet steps on a CPU). EVALIGN_JAX_CACHE sets the
  folder; EVALIGN_JAX_CACHE="" turns it off."""
  path = os.environ.get("EVALIGN_JAX_CACHE", os.path.expanduser("~/.cache/evalign_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def quiet_library_logs() -> None:
  """Progress goes to stdout; the libraries' INFO lines (Orbax writes ~20 per checkpoint) would
  bury it. An explicit --verbosity (e.g. 0) keeps them."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def one_line(error: BaseException) -> str:
  """The message of `error` on one line; for an error the flag parser or the config loader
  wrapped (a config file's own error, a mistyped field), the message of what they wrapped."""
  chain = [error]
  while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  # absl's flag errors wrap the config loader's, which re-raises with a traceback as message.
  wrapper = lambda e: (type(e).__module__.startswith("absl.")
                       or "Traceback (most recent call last)" in str(e))
  error = next((e for e in chain if not wrapper(e)), chain[-1])
  text = error.args[0] if isinstance(error, KeyError) and error.args else error
  return " ".join(str(text).split())


@contextlib.contextmanager
def user_errors_as_one_line():
  """Exits with "error: <message>" (status 1) on a `USER_ERRORS` exception; the traceback goes
  to the log at INFO level (shown with --verbosity=0)."""
  try:
    yield
  except USER_ERRORS as e:
    logging.info("the error below came from", exc_info=True)
    sys.exit(f"error: {one_line(e)}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (for `app.run(..., flags_parser=parse_flags)`), with a missing or
  mistyped flag, config field or variant, and a config file's own error, as one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, *USER_ERRORS) as e:   # KeyError: a mistyped config field
    sys.exit(f"error: {one_line(e)}")
