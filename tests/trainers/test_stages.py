"""Stages end to end on the tiny synthetic build, with tiny models (the `tiny` config variants):
one stage trained, validated, exported, evaluated and resumed; and (slow) the quick start's whole
path (rgb_slpt -> ssmer -> slpt_event -> cmfa -> eval) with the weight transfer between stages."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from evalign_jax import config_utils
from evalign_jax import evaluate
from evalign_jax import export
from evalign_jax import models
from evalign_jax import quickstart
from evalign_jax.models import checkpoint_io
from evalign_jax.trainers import alignment


def test_one_stage_trains_validates_exports_evaluates_and_resumes(tmp_path, capsys):
  config = config_utils.load_config("configs/cmfa.py:tiny,model=slpt_event")
  config.data_dir = str(tmp_path / "data")
  work = tmp_path / "slpt_event"
  last = alignment.train(config, str(work))
  # The validation evaluator ran at the last step; its metrics are logged with its name.
  lines = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "loss" in l] == [1, 2]
  assert [l for l in lines if "val_nme" in l] == [{"step": 2, **last}]
  assert sorted(last) == ["val_auc", "val_fr", "val_nme"] and last["val_nme"] > 0
  assert [p.name for p in (work / "pictures").iterdir()] == ["val_predictions_2.png"]
  # The export is the best validation state (the only one); the eval stage reads it back and,
  # on the same crops, finds the NME validation logged.
  assert export.exported_config(str(work))["model"] == "slpt_event"
  assert sorted(p.name for p in (work / "best").iterdir()) == ["2"]
  evaluation = config_utils.load_config("configs/eval.py:tiny")
  evaluation.checkpoint, evaluation.data_dir = str(work), config.data_dir
  evaluation.evals.test.split = "validation"
  result = evaluate.run(evaluation, str(tmp_path / "eval"))["test"]
  assert result["nme"] == pytest.approx(last["val_nme"], rel=1e-6)
  assert result["num_images"] == 4 and result["split"] == "validation"
  # A rerun of the finished stage resumes at its last step instead of training again.
  capsys.readouterr()
  alignment.train(config, str(work))
  assert "resumed from step 2" in capsys.readouterr().out


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
  root = tmp_path_factory.mktemp("quick")
  config = config_utils.load_config("configs/quickstart.py:tiny")
  config.data_dir = str(root / "data")
  rows = quickstart.run(config, str(root / "work"))
  return root / "work", rows


@pytest.mark.slow
def test_quickstart_writes_the_table(quick):
  work, rows = quick
  summary = json.loads((work / "summary.json").read_text())
  assert summary == rows and list(summary) == [
      "mean_shape", "rgb_slpt", "slpt_event", "cmfa"]
  for r in summary.values():
    assert 0 < r["nme"] and 0 <= r["fr"] <= 100 and 0 <= r["auc"] <= 1 and r["num_images"] == 4
  for stage in ("rgb_slpt", "ssmer", "slpt_event", "cmfa"):
    assert (work / stage / "export" / "config.json").exists()
  assert (work / "eval_cmfa" / "test" / "ced.png").exists()
  assert (work / "eval_cmfa" / "test" / "worst.png").exists()
  results = json.loads((work / "eval_cmfa" / "test" / "results.json").read_text())
  assert {k: results[k] for k in summary["cmfa"]} == summary["cmfa"]
  lines = [json.loads(l) for l in (work / "cmfa" / "metrics.jsonl").read_text().splitlines()]
  assert any("loss" in l for l in lines)
  # The validation line: the evaluator's metrics, prefixed with its name.
  assert [sorted(l) for l in lines if "val_nme" in l] == [["step", "val_auc", "val_fr",
                                                           "val_nme"]]
  # Every evaluation drew its predictions on validation crops.
  assert [p.name for p in (work / "cmfa" / "pictures").iterdir()] == ["val_predictions_2.png"]


@pytest.mark.slow
def test_cmfa_took_its_branches_from_the_earlier_stages(quick):
  work, _ = quick
  cmfa, _ = export.load(str(work / "cmfa"))
  slpt, _ = export.load(str(work / "rgb_slpt"))
  ssmer, _ = export.load(str(work / "ssmer"))
  flat = checkpoint_io.model_state_dict
  # The frozen RGB branch is exactly the rgb_slpt backbone after cmfa's training.
  a, b = flat(cmfa.rgb.backbone), flat(slpt.backbone)
  leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(np.asarray(cmfa.rgb.structure_encoding[...]),
                                np.asarray(slpt.structure_encoding[...]))
  # The event backbone started from the SSMER encoder's body (everything but its head) and has
  # been trained since for 2 Adam steps at the tiny variant's lr: each param moved by at most
  # ~lr per step, while a freshly built model's (what ignoring init.event_from would leave) is
  # far off.
  assert cmfa.event.backbone.conv1.kernel.shape == ssmer.encoder.conv1.kernel.shape
  lr = config_utils.load_config("configs/cmfa.py:tiny").optimizer.lr
  tol = 2 * 1.5 * lr
  body = lambda m: {k: np.asarray(v[...], np.float64) for k, v in nnx.to_flat_state(
      nnx.state(m, nnx.All(nnx.Param, models.body_filter)))}
  got, want = body(cmfa.event.backbone), body(ssmer.encoder)
  assert got.keys() == want.keys() and len(got) > 10
  assert all(not k or k[0] != "head" for k in got)
  for k in got:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol, err_msg=str(k))
  cfg = export.exported_config(str(work / "cmfa"))
  fresh = models.build_model(cfg, np.full((cfg["num_landmarks"], 2), 0.5, np.float32))
  fresh = body(fresh.event.backbone)
  far = [np.max(np.abs(fresh[k] - want[k])) for k in want if k[-1] == "kernel"]   # random init
  assert far and min(far) > 3 * tol and np.median(far) > 10 * tol
