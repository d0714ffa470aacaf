"""The synthetic_faces builder, the build command and the preview, on the tiny config."""

import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import geometry
from data_pipelines import preview
from data_pipelines import registry
from data_pipelines.build import build
from data_pipelines.synthetic_faces import clips as clip_gen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("sf")
  report = build("synthetic_faces", str(data_dir), config="tiny")
  return data_dir, report


def test_tiny_build_contents(tiny):
  data_dir, report = tiny
  assert {s: r["examples"] for s, r in report.items()} == {
      "train": 4, "validation": 4, "test": 4}   # 2 clips x (3 frames - 1) per split
  subjects = {}
  for split in ("train", "validation", "test"):
    src = registry.data_source("synthetic_faces/tiny", data_dir=data_dir, split=split)
    for i in range(len(src)):
      ex = src[i]
      subjects.setdefault(ex["subject_id"], set()).add(split)
      assert ex["image"].shape == (64, 64, 3) and ex["landmarks"].shape == (98, 2)
      assert ex["subset"].decode() in clip_gen.CONDITIONS
      n = int(ex["events"]["count"])
      assert 0 < n <= 1024 and int(ex["events"]["count_total"]) >= n
  assert all(len(s) == 1 for s in subjects.values())   # subject-disjoint splits


def test_tiny_build_matches_the_generator(tiny):
  """An example's landmarks are the rendered clip's, moved by the 1.5x box crop."""
  data_dir, _ = tiny
  src = registry.data_source("synthetic_faces/tiny", data_dir=data_dir, split="train")
  ex = [src[i] for i in range(len(src)) if src[i]["clip_id"] == b"train00000"
        and int(src[i]["frame_index"]) == 2][0]
  b = registry.builder("synthetic_faces/tiny", data_dir=data_dir)
  c = b.builder_config
  from data_pipelines import video_examples
  clip = clip_gen.render_clip(video_examples.stable_hash(f"{c.seed}/train/0") % 2**32, 0,
                              c.clip)
  m = geometry.box_crop_matrix(clip.boxes[2], c.crop.crop_scale, c.crop.image_size)
  np.testing.assert_allclose(ex["landmarks"], geometry.apply_to_points(m, clip.landmarks[2]),
                             atol=1e-4)


def test_preview_writes_a_grid(tiny, tmp_path):
  data_dir, _ = tiny
  out = tmp_path / "grid.png"
  grid = preview.preview("synthetic_faces/tiny", str(data_dir), str(out), num=3)
  assert grid.shape == (3 * 64, 4 * 64, 3) and out.stat().st_size > 0
  # The event panels are not blank: frame images are white where no events fell.
  assert (grid[:, 64:128] < 250).any()


@pytest.mark.slow
def test_build_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "data_pipelines.build", "--dataset=synthetic_faces",
       "--config=tiny", f"--data_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "windows truncated" in out.stdout and "train:" in out.stdout
  bad = subprocess.run(
      [sys.executable, "-m", "data_pipelines.build", "--dataset=synthetic_face",
       f"--data_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "valid datasets" in bad.stderr
