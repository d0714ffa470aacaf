"""Every stage end to end on the tiny synthetic build, with tiny models: the quick start's path
(rgb_slpt -> ssmer -> slpt_event -> cmfa -> eval), weight transfer between stages, resume."""

import json

import numpy as np
import pytest
from flax import nnx

from evalign_jax import config_utils
from evalign_jax import models
from evalign_jax.models import checkpoint_io
from evalign_jax.trainers import common
from evalign_jax.trainers import quickstart

TINY_MODEL = dict(d_model=32, num_heads=2, num_layers=1, ffn_dim=32, backbone_blocks=1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  root = tmp_path_factory.mktemp("quick")
  config = config_utils.load_config("configs/quickstart.py")
  config.unlock()
  config.dataset, config.data_dir = "synthetic_faces/tiny", str(root / "data")
  config.steps = dict(rgb_slpt=2, ssmer=2, slpt_event=2, cmfa=2)
  config.image_size, config.batch_size = 32, 2
  config.model_size = TINY_MODEL
  config.ssmer_model_size = dict(dim=32, pred_dim=16, backbone_blocks=1)
  rows = quickstart.run(config, str(root / "work"))
  return root / "work", rows


def test_quickstart_writes_the_table(quick):
  work, rows = quick
  summary = json.loads((work / "summary.json").read_text())
  assert set(summary) == {"mean_shape", "slpt_event", "cmfa"}
  for r in summary.values():
    assert 0 < r["nme"] and 0 <= r["fr"] <= 100 and 0 <= r["auc"] <= 1 and r["num_images"] == 4
  for stage in ("rgb_slpt", "ssmer", "slpt_event", "cmfa"):
    assert (work / stage / "export" / "config.json").exists()
  assert (work / "eval_cmfa" / "ced.png").exists() and (work / "eval_cmfa" / "worst.png").exists()
  lines = (work / "cmfa" / "metrics.jsonl").read_text().splitlines()
  assert any("val_nme" in l for l in lines) and any("loss" in l for l in lines)
  # Every evaluation drew its predictions on validation crops.
  assert [p.name for p in (work / "cmfa" / "pictures").iterdir()] == ["val_predictions_2.png"]


def test_cmfa_took_its_branches_from_the_earlier_stages(quick):
  work, _ = quick
  cmfa, _ = common.load_exported(str(work / "cmfa"))
  slpt, _ = common.load_exported(str(work / "rgb_slpt"))
  ssmer, _ = common.load_exported(str(work / "ssmer"))
  flat = lambda m: checkpoint_io.model_state_dict(m)
  # The frozen RGB branch is exactly the rgb_slpt backbone after cmfa's training.
  a, b = flat(cmfa.rgb.backbone), flat(slpt.backbone)
  leaves = lambda t: [np.asarray(x) for x in __import__("jax").tree.leaves(t)]
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(np.asarray(cmfa.rgb.structure_encoding[...]),
                                np.asarray(slpt.structure_encoding[...]))
  # The event backbone started from the SSMER encoder's body (everything but its head) and has
  # been trained since for 2 Adam steps at the runlocal lr: each param moved by at most ~lr per
  # step, while a freshly built model's (what ignoring init.event_from would leave) is far off.
  assert cmfa.event.backbone.conv1.kernel.shape == ssmer.encoder.conv1.kernel.shape
  lr = config_utils.load_config("configs/cmfa.py:runlocal").optimizer.lr
  tol = 2 * 1.5 * lr
  body = lambda m: {k: np.asarray(v[...], np.float64) for k, v in nnx.to_flat_state(
      nnx.state(m, nnx.All(nnx.Param, models.body_filter)))}
  got, want = body(cmfa.event.backbone), body(ssmer.encoder)
  assert got.keys() == want.keys() and len(got) > 10
  assert all(not k or k[0] != "head" for k in got)
  for k in got:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol, err_msg=str(k))
  fresh = body(common._model_factory(common.exported_config(str(work / "cmfa"))).event.backbone)
  far = [np.max(np.abs(fresh[k] - want[k])) for k in want if k[-1] == "kernel"]   # random init
  assert far and min(far) > 3 * tol and np.median(far) > 10 * tol


def test_rerun_resumes_instead_of_retraining(quick, capsys):
  work, _ = quick
  config = config_utils.load_config("configs/rgb_slpt.py:runlocal")
  config.unlock()
  config.dataset = "synthetic_faces/tiny"
  config.data_dir = str(work.parent / "data")
  config.image_size, config.batch_size, config.eval_batch_size = 32, 2, 2
  config.model_size = TINY_MODEL
  config.total_steps = config.eval_every = config.checkpoint.every = 2
  from evalign_jax.trainers import alignment
  alignment.train(config, str(work / "rgb_slpt"))
  assert "resumed from step 2" in capsys.readouterr().out
