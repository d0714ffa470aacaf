"""FES end to end on a fake release in FES's layout (the builder tests' writer): the build, the
mean-shape baseline's NME by the eye distance and by the face box against numpy from the
annotations, and (slow) the README's FES commands as written, tiny for runlocal: build, the
event-only SLPT of configs/fes.py trained, validated, exported and evaluated, SSMER
pretrained on FES's windows and the SLPT started from it."""

import json
import os
import shlex
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from data_pipelines import build
from data_pipelines.fes_events import fes_events_dataset_builder as fes_builder
from evalign_jax import config_utils
from evalign_jax import evaluate
from evalign_jax import export

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The builder tests' writer of fake FES releases (tests/data/test_fes_events.py).
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
import test_fes_events as fake_fes  # pylint: disable=g-import-not-at-top,wrong-import-position

# name -> (FES's split folder, subset, face tracks): 16 annotated frames each (30 Hz).
RECORDINGS = {
    "20210923_0_0": ("train", "lab", [fake_fes.face_track(1, range(16))]),
    "20210923_1_2": ("train", "lab", [fake_fes.face_track(2, range(16))]),
    "03_10": ("train", "wild", [fake_fes.face_track(3, range(16)),
                                fake_fes.face_track(4, range(3, 14), track=1,
                                                    centre=(300.0, 300.0))]),
    "20211002_0_0": ("val", "lab", [fake_fes.face_track(5, range(16))]),
    "20211004_0_0": ("test", "lab", [fake_fes.face_track(6, range(16))]),
    "06_07": ("test", "wild", [fake_fes.face_track(7, range(16))]),
}
SPLITS = {"train": "train", "val": "validation", "test": "test"}


def write_release(root):
  """The fake release of RECORDINGS in FES's layout at `root`, plus a test recording with a
  NaN point (skipped and counted); returns {name: truth} of RECORDINGS."""
  truth = {name: fake_fes.add_recording(root, name, split, subset, tracks, seed=10 + i)
           for i, (name, (split, subset, tracks)) in enumerate(RECORDINGS.items())}
  t, track, xywh, pts = fake_fes.face_track(8, range(8))
  pts[3, 2, 1] = np.nan
  fake_fes.add_recording(root, "20211004_0_1", "test", "lab", [(t, track, xywh, pts)], seed=30)
  return truth


@pytest.fixture(scope="module")
def fes(tmp_path_factory):
  """The fake release built by the build command (default config); (data_dir, truth, report)."""
  root = tmp_path_factory.mktemp("fes")
  truth = write_release(root / "FES")
  data_dir = str(root / "data")
  report = build.build("fes_events", data_dir, manual_dir=str(root / "FES"))
  return data_dir, truth, report


def eval_crops(truth, split, size):
  """Every example of a split computed from the annotations alone: (points (N, 5, 2), box size
  sqrt(w h) (N,), subset (N,)) in the evaluation crop (1.2 x the box's longer side, size px).

  The examples: each face at every 5th annotated frame whose 33 ms window starts at or after
  the recording's first event (the builder's default config). Points in the stored order:
  nose, mouth and eyes image-left then image-right (FES: right eye, left eye, nose, right
  mouth corner, left mouth corner).
  """
  window = fes_builder.Builder.BUILDER_CONFIGS[0].window_us     # the default config's
  points, boxes, subsets = [], [], []
  for rec in truth.values():
    if SPLITS[rec["split"]] != split:
      continue
    for row, t in enumerate(rec["t"]):
      if round(t * 30 / 1e6) % 5 or t - window < rec["events"].t[0]:
        continue
      x, y, w, h = rec["xywh"][row].astype(np.float32).astype(np.float64)   # stored float32
      pts = rec["pts"][row].astype(np.float32).astype(np.float64)[[2, 3, 4, 0, 1]]
      s = size / (1.2 * max(w, h))
      points.append((pts - [x + w / 2, y + h / 2]) * s + (size - 1) / 2)
      boxes.append(np.sqrt(w * h) * s)
      subsets.append(rec["subset"])
  return np.array(points), np.array(boxes), np.array(subsets)


def nme(pred, gt, norm):
  return 100 * np.mean(np.linalg.norm(pred - gt, axis=-1).mean(-1) / norm)


def test_fes_builds_and_the_mean_shape_scores_as_numpy_says(fes, tmp_path):
  data_dir, truth, report = fes
  assert {k: (r["examples"], r["skipped"]) for k, r in report.items()} == {
      "train": (11, 0), "validation": (3, 0), "test": (6, 1)}
  # The mean-shape baseline: the training split's mean 5 points in the evaluation crop.
  config = config_utils.load_config("configs/eval.py:tiny")
  config.checkpoint, config.dataset, config.data_dir = "mean_shape", "fes_events", data_dir
  result = evaluate.run(config, str(tmp_path / "eval"))["test"]
  size = config.image_size
  train, _, _ = eval_crops(truth, "train", size)
  gt, box, subset = eval_crops(truth, "test", size)
  pred = np.broadcast_to(train.mean(0), gt.shape)
  eyes = np.linalg.norm(gt[:, 3] - gt[:, 4], axis=-1)
  assert result["norm_kind"] == "inter_pupil" and result["num_images"] == 6
  assert result["nme"] == pytest.approx(nme(pred, gt, eyes), rel=1e-4)
  assert result["nme_box"] == pytest.approx(nme(pred, gt, box), rel=1e-4)
  for name in ("lab", "wild"):
    sub = result["per_subset"][name]
    assert sub["n"] == 3
    assert sub["nme"] == pytest.approx(nme(pred[subset == name], gt[subset == name],
                                           eyes[subset == name]), rel=1e-4)
    assert sub["nme_box"] == pytest.approx(nme(pred[subset == name], gt[subset == name],
                                               box[subset == name]), rel=1e-4)
  table = (tmp_path / "eval" / "test" / "table.txt").read_text()
  assert "NME box %" in table and f"{result['nme_box']:.2f}" in table
  # The worst crops are drawn on their events' frame rendering (FES has no RGB): white
  # background, red and blue events.
  worst = cv2.imread(str(tmp_path / "eval" / "test" / "worst.png"))[..., ::-1]
  tile = worst[14:14 + size, :size].reshape(-1, 3).astype(int)     # below its title bar
  assert np.mean(np.all(tile == 255, axis=-1)) > 0.3
  assert np.any((tile[:, 2] > 200) & (tile[:, 0] < 200))            # an ON (blue) event


def readme_fes_commands():
  """The commands of the README's FES section (its bash block), continuation lines joined."""
  with open(os.path.join(REPO, "README.md")) as f:
    section = f.read().split("### FES:", 1)[1]
  block = section.split("```bash\n", 1)[1].split("```", 1)[0]
  return [" ".join(c.split()) for c in block.replace("\\\n", " ").splitlines() if c.strip()]


@pytest.mark.slow
def test_readme_fes_commands_build_train_and_evaluate(tmp_path):
  # The README's FES commands as written (tiny for runlocal), in a folder with the repo's
  # configs, for a user whose home holds the fake release at ~/FES.
  home, run = tmp_path / "home", tmp_path / "run"
  truth = write_release(home / "FES")
  run.mkdir()
  (run / "configs").symlink_to(os.path.join(REPO, "configs"))
  env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(
             [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
         # The tests' compilation cache (conftest.py), so reruns compile nothing.
         "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}
  commands = readme_fes_commands()
  assert commands[0].startswith("python -m data_pipelines.build --dataset=fes_events")
  assert len(commands) == 5 and all(":runlocal" in c for c in commands[1:])
  for command in commands:
    args = shlex.split(command.replace(":runlocal", ":tiny"))
    assert args[0] == "python", command
    out = subprocess.run([sys.executable, *args[1:]], cwd=run, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (command, out.stderr[-3000:])
  data_dir = str(home / "evalign_data")
  work = run / "workdir"

  # The event-only SLPT: trained and validated, predicting FES's 5 points from its training
  # split's mean shape.
  slpt = work / "fes_slpt_local"
  assert [p.name for p in (slpt / "pictures").iterdir()] == ["val_predictions_2.png"]
  model, cfg = export.load(str(slpt))
  assert cfg["num_landmarks"] == 5 and cfg["dataset"] == "fes_events"
  size = cfg["image_size"]
  train, _, _ = eval_crops(truth, "train", size)
  np.testing.assert_allclose(np.asarray(model.mean_shape[...]), train.mean(0) / size,
                             atol=1e-5)
  # Its evaluation on FES's test split: both normalisations, per subset, and the pictures.
  result = json.loads((work / "fes_eval_local" / "test" / "results.json").read_text())
  assert result["num_images"] == 6 and result["norm_kind"] == "inter_pupil"
  assert result["nme"] > 0 and result["nme_box"] > 0
  assert {k: v["n"] for k, v in result["per_subset"].items()} == {"lab": 3, "wild": 3}
  assert (work / "fes_eval_local" / "test" / "worst.png").exists()
  # SSMER pretrained on FES's windows, and the SLPT started from its encoder.
  lines = [json.loads(l) for l in
           (work / "fes_ssmer_local" / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "loss" in l] == [1, 2]
  assert all(np.isfinite(l["loss"]) for l in lines if "loss" in l)
  assert export.exported_config(str(work / "fes_ssmer_local"))["model"] == "ssmer"
  started = export.exported_config(str(work / "fes_slpt_ssmer_local"))
  assert started["model"] == "slpt_event" and started["num_landmarks"] == 5
  assert started["init"]["event_from"] == "workdir/fes_ssmer_local"

  # A 5-point model has nothing to say about 98 points: one line, before any prediction.
  evaluation = config_utils.load_config("configs/eval.py:tiny")
  evaluation.checkpoint, evaluation.dataset = str(slpt), "synthetic_faces/tiny"
  evaluation.data_dir = data_dir
  with pytest.raises(config_utils.ConfigError,
                     match="5-point predictions cannot be scored against 98-point"):
    evaluate.run(evaluation, str(tmp_path / "eval_98"))
