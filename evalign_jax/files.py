"""Atomic output files: written beside the target and renamed into place, so a crash or an error
never leaves half a file (an existing file is kept until the new one is complete)."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def write_atomic(path: str, write: Callable[[str], None]) -> None:
  """Calls write(tmp_path) and renames tmp_path to path; removes tmp_path if anything fails."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=directory)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  write_atomic(path, write)
