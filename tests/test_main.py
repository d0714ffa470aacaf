"""The entry point, config variants and the stage registry."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evalign_jax import config_utils
from evalign_jax import stages
from evalign_jax.events import read_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg_variants_and_typos():
  arg = config_utils.parse_arg("runlocal,seed=3,name=abc", runlocal=False, seed=0, name="x")
  assert arg.runlocal is True and arg.seed == 3 and arg.name == "abc"
  assert config_utils.parse_arg(None, runlocal=False).runlocal is False
  with pytest.raises(ValueError, match="unknown config variant 'runlokal'"):
    config_utils.parse_arg("runlokal", runlocal=False)
  with pytest.raises(ValueError, match="needs a value"):
    config_utils.parse_arg("seed", seed=0)


def test_unknown_stage_lists_valid_ones():
  with pytest.raises(ValueError, match="events_demo"):
    stages.get_stage("ssmerr")


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "evalign_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_events_demo_end_to_end(tmp_path):
  out = run_main("--config=configs/events_demo.py:runlocal", f"--workdir={tmp_path}",
                 "--config.scene.height=48", "--config.scene.width=64",
                 "--config.scene.num_frames=5", "--config.output_format=npz",
                 "--config.render.capacity=8192")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  events = read_events(tmp_path / "events.npz")
  assert summary["events"] == len(events) > 0
  assert events.sensor_size == (48, 64) and summary["sensor_size"] == [48, 64]
  assert events.metadata["simulator"]["preset"] == "v2e_default"
  assert np.all(np.diff(events.t) >= 0)
  assert (tmp_path / "representations.png").stat().st_size > 0
  assert "events" in out.stdout and "frames/s" in out.stdout


def test_config_typo_fails_loudly(tmp_path):
  out = run_main("--config=configs/events_demo.py:runlocal", f"--workdir={tmp_path}",
                 "--config.simulatr.seed=1")
  assert out.returncode != 0 and "simulatr" in out.stderr
  assert not (tmp_path / "summary.json").exists()


def test_pipeline_demo_end_to_end(tmp_path):
  out = run_main("--config=configs/pipeline_demo.py:runlocal", f"--workdir={tmp_path / 'w'}",
                 f"--config.data_dir={tmp_path / 'data'}", "--config.dataset=synthetic_faces/tiny",
                 "--config.batch_size=2", "--config.num_batches=1", "--config.preview_rows=2",
                 "--config.cmfa_image_size=64", "--config.ssmer_image_size=48")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert summary["train_examples"] == 4 and summary["build_report"]["train"]["examples"] == 4
  assert summary["cmfa"]["host_samples_per_s"] > 0 and summary["ssmer"]["device_images_per_s"] > 0
  import cv2
  picture = cv2.imread(str(tmp_path / "w" / "batches.png"))
  # CMFA rows are 2 x 64 px (RGB | events) wide; SSMER rows 3 x 48 px.
  assert picture.shape[0] == 2 * 64 + 8 + 2 * 48 + 8 and picture.shape[1] == 3 * 48
