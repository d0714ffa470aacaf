"""Atomic writes and the one PNG writer, against files read back by OpenCV."""

import os

import cv2
import numpy as np
import pytest

from evalign_jax import files


def test_write_png_round_trips_rgb_and_gray_exactly(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
  files.write_png(str(tmp_path / "sub" / "rgb.png"), rgb)
  np.testing.assert_array_equal(cv2.imread(str(tmp_path / "sub" / "rgb.png"))[..., ::-1], rgb)
  gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
  for name, image in (("gray.png", gray), ("gray1.png", gray[..., None])):
    files.write_png(str(tmp_path / name), image)
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED), gray)
  assert sorted(os.listdir(tmp_path)) == ["gray.png", "gray1.png", "sub"]   # no temporaries


def test_write_png_rejects_other_images_before_writing(tmp_path):
  path = tmp_path / "x.png"
  path.write_bytes(b"old")
  for bad in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
              np.zeros((2, 4, 4, 3), np.uint8)):
    with pytest.raises(ValueError, match="uint8"):
      files.write_png(str(path), bad)
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.png"]


def test_write_text_replaces_whole_files(tmp_path):
  path = tmp_path / "a.json"
  files.write_text(str(path), "{}\n")
  files.write_text(str(path), "µs\n")
  assert path.read_text() == "µs\n" and os.listdir(tmp_path) == ["a.json"]
