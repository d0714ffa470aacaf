"""Atomic output files: written beside the target and renamed into place, so a crash or an error
never leaves half a file (an existing file is kept until the new one is complete)."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np


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


def write_bytes(path: str, data: bytes) -> None:
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
  write_atomic(path, write)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) RGB or (H, W) / (H, W, 1) gray uint8 image as a lossless PNG.

  Raises ValueError for other shapes or dtypes, before anything is written.
  """
  import cv2   # pylint: disable=g-import-not-at-top  (keeps `files` importable without OpenCV)
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
      image.ndim == 3 and image.shape[-1] not in (1, 3)):
    raise ValueError(f"a PNG image must be (H, W[, 1 | 3]) uint8, got {image.shape} "
                     f"{image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 3:
    image = image[..., ::-1]   # cv2 encodes BGR
  ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
  if not ok:
    raise OSError(f"could not encode {path} as PNG")
  write_bytes(path, buf.tobytes())
