"""Loss, schedules, checkpoints and metric files of the training loop, against hand values."""

import json

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from evalign_jax import checkpoints
from evalign_jax import config_utils
from evalign_jax import metric_writers
from evalign_jax.evaluators import metrics
from evalign_jax.trainers import alignment
from evalign_jax.trainers import loop
from evalign_jax.trainers import ssmer


def test_alignment_loss_by_hand():
  gt = np.zeros((2, 98, 2), np.float32)
  gt[:, 60] = [0.0, 0.0]
  gt[:, 72] = [2.0, 0.0]                     # inter-ocular distance 2
  preds = np.broadcast_to(gt[:, None, None], (2, 3, 6, 98, 2)).copy()
  preds[0, :, :, 5] += [0.0, 98 * 0.5]       # image 0: one point off by 49 -> mean 0.5 -> /2
  preds[1, 2, 0] += [0.0, 0.2]               # image 1: stage 3, layer 0, all points off by 0.2
  mask = np.ones(2, np.float32)
  loss = alignment.alignment_loss(jnp.asarray(preds), jnp.asarray(gt), jnp.asarray(mask))
  # Stage s: mean over images and layers; image 0 contributes 0.25 in every stage and layer,
  # image 1 contributes 0.1 in one of stage 3's 6 layers.
  want = 0.2 * (0.25 / 2) + 0.3 * (0.25 / 2) + 0.5 * ((0.25 + 0.1 / 6) / 2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # A padded example does not count.
  loss_masked = alignment.alignment_loss(jnp.asarray(preds), jnp.asarray(gt),
                                      jnp.asarray([1.0, 0.0]))
  np.testing.assert_allclose(float(loss_masked), 0.25, rtol=1e-5)


def test_alignment_loss_5_points_by_hand():
  # The 5-point layout (FES, E-SIE): errors over the distance of the eyes 3 and 4, not of
  # 98-point indices. Eyes 40 px apart; the nose 5 px off in every stage and layer.
  gt = np.array([[[50, 60], [40, 80], [60, 80], [30, 40], [70, 40]]], np.float32)
  preds = np.broadcast_to(gt[:, None, None], (1, 3, 2, 5, 2)).copy()
  preds[..., 0, :] += [3.0, 4.0]
  loss = alignment.alignment_loss(jnp.asarray(preds), jnp.asarray(gt), jnp.ones(1))
  np.testing.assert_allclose(float(loss), (0.2 + 0.3 + 0.5) * 5 / 5 / 40, rtol=1e-6)
  # The same normaliser as the metrics' norm="auto".
  nme = metrics.per_image_nme(preds[:, 2, 1], gt, metrics.normalizer(gt, "auto"))
  np.testing.assert_allclose(nme, [5 / 5 / 40])
  with pytest.raises(ValueError, match="no default normaliser for 7 landmarks"):
    alignment.alignment_loss(jnp.zeros((1, 3, 2, 7, 2)), jnp.zeros((1, 7, 2)), jnp.ones(1))


def test_num_landmarks_come_from_the_dataset():
  config = config_utils.load_config("configs/fes.py:tiny")
  assert config.num_landmarks == 0                     # not set: the dataset's
  alignment.set_num_landmarks(config, 5)
  assert config.num_landmarks == 5                     # what the export records
  config.num_landmarks = 98
  with pytest.raises(config_utils.ConfigError, match="num_landmarks=98, but fes_events has 5"):
    alignment.set_num_landmarks(config, 5)


def test_schedules():
  sched = alignment.step_decay(1e-4, steps_per_epoch=10, decay_epochs=(120, 140))
  assert float(sched(1199)) == pytest.approx(1e-4)
  assert float(sched(1200)) == pytest.approx(1e-5)
  assert float(sched(1400)) == pytest.approx(1e-6)
  cos = ssmer.epoch_cosine(0.1, steps_per_epoch=5, num_epochs=4)
  # Constant within an epoch: epoch e has 0.1 * (1 + cos(pi e / 4)) / 2.
  for step, epoch in ((0, 0), (4, 0), (5, 1), (19, 3)):
    assert float(cos(step)) == pytest.approx(0.05 * (1 + np.cos(np.pi * epoch / 4)))


def test_train_step_reports_the_rate_it_applied_past_every_boundary():
  # SGD on loss = w (gradient 1): each step moves w by exactly the rate applied, which the step
  # also reports; x0.1 after 2 steps and again after 3 (by hand: 1e-2, 1e-2, 1e-3, 1e-4, 1e-4).
  sched = alignment.step_decay(1e-2, steps_per_epoch=1, decay_epochs=(2, 3))
  model = nnx.Linear(1, 1, use_bias=False, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(sched), wrt=nnx.Param)))
  step = loop.make_update_step(graphdef, lambda m, x: jnp.sum(m(x)), sched)
  w = float(model.kernel[0, 0])
  for want in (1e-2, 1e-2, 1e-3, 1e-4, 1e-4):
    state, out = step(state, jnp.ones((1, 1)))
    new_w = float(nnx.merge(graphdef, state)[0].kernel[0, 0])
    assert float(out["lr"]) == pytest.approx(want) and w - new_w == pytest.approx(want, rel=1e-3)
    w = new_w


class Tiny(nnx.Module):

  def __init__(self, rngs):
    self.dense = nnx.Linear(3, 2, rngs=rngs)
    self.bn = nnx.BatchNorm(2, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.dense(x))


def tiny_state(seed=0):
  model = Tiny(nnx.Rngs(seed))
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  return nnx.split((model, opt))


def test_checkpoints_latest_best_and_iterator(tmp_path):
  graphdef, state = tiny_state()
  ds = grain.MapDataset.range(100).batch(4)
  it = iter(ds.to_iter_dataset())
  ckpts = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, async_save=False)
  saved = {}
  for step, nme in ((1, 5.0), (2, 3.0), (3, 4.0)):
    next(it)
    state = jax.tree.map(lambda a: a + 1 if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    saved[step] = state
    ckpts.save(step, state, it, {"stage": "test"}, metrics={"val_nme": nme})
  ckpts.wait()
  expected_next = next(it)
  ckpts.close()
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 3]
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  step, best, config = checkpoints.restore_state(str(tmp_path / "best"), abstract)
  assert step == 2 and config == {"stage": "test"}   # val_nme 3.0 was the best
  jax.tree.map(np.testing.assert_array_equal, best, saved[2])
  # A rerun restores the latest state and moves the data iterator to the same position.
  it2 = iter(ds.to_iter_dataset())
  again = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, async_save=False)
  step, restored = again.restore_latest(abstract, it2)
  again.close()
  assert step == 3
  jax.tree.map(np.testing.assert_array_equal, restored, saved[3])
  np.testing.assert_array_equal(next(it2), expected_next)


def test_incomplete_checkpoint_is_not_restored(tmp_path):
  graphdef, state = tiny_state()
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  ckpts = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, best_metric=None,
                                       async_save=False)
  ckpts.save(1, state, it, {})
  ckpts.close()
  # Orbax writes a step into "<step>.orbax-checkpoint-tmp-<n>" and renames it when complete;
  # a crash mid-write leaves such a folder behind.
  partial = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  again = checkpoints.TrainCheckpoints(str(tmp_path), keep=2, best_metric=None)
  restored = again.restore_latest(abstract, iter(grain.MapDataset.range(10).to_iter_dataset()))
  again.close()
  assert restored is not None and restored[0] == 1


def test_metric_writer_and_progress(tmp_path, capsys):
  w = metric_writers.MetricWriter(str(tmp_path))
  w.write(10, {"loss": np.float32(0.5)})
  w.write(20, {"loss": 0.25, "val_nme": 7.0})
  w.close()
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25, "val_nme": 7.0}]
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
  p = metric_writers.Progress("demo", total_steps=100, every=10)
  p.update(10, {"loss": 1.0})
  out = capsys.readouterr().out
  assert "[demo] step 10/100 (10%)" in out and "steps/s" in out and "ETA" in out


@pytest.mark.parametrize("spec", [
    "configs/rgb_slpt.py", "configs/rgb_slpt.py:runlocal", "configs/rgb_slpt.py:tiny",
    "configs/cmfa.py", "configs/cmfa.py:runlocal,model=slpt_event", "configs/cmfa.py:tiny",
    "configs/ssmer.py:runlocal", "configs/ssmer.py:tiny", "configs/eval.py",
    "configs/eval.py:tiny", "configs/quickstart.py", "configs/quickstart.py:tiny",
    "configs/quickstart.py:ablation", "configs/quickstart.py:scratch",
    "configs/quickstart_pretrain.py", "configs/quickstart_pretrain.py:model=ssmer",
    "configs/pipeline_demo.py", "configs/events_demo.py",
    "configs/fes.py", "configs/fes.py:runlocal", "configs/fes.py:tiny",
    "configs/fes.py:model=ssmer", "configs/fes.py:runlocal,model=ssmer",
    "configs/fes.py:tiny,model=ssmer"])
def test_configs_load_and_are_locked(spec):
  config = config_utils.load_config(spec)
  assert config.stage
  with pytest.raises(AttributeError):
    config.not_a_field = 1


def test_quickstart_stages_are_the_stage_configs_with_shared_knobs_written_once():
  quick = config_utils.load_config("configs/quickstart.py")
  # By default both fine-tune from the shipped pretrained exports, as the paper starts from the
  # public SLPT checkpoint and SSMER; :scratch trains those first, in the run.
  assert list(quick.stages) == ["slpt_event", "cmfa"]   # training order
  assert quick.stages.cmfa.init.to_dict() == {
      "rgb_from": "pretrained:rgb_slpt", "aligner_from": "pretrained:rgb_slpt",
      "event_from": "pretrained:ssmer"}
  assert quick.compare == ("mean_shape", "pretrained:rgb_slpt", "slpt_event", "cmfa")
  scratch = config_utils.load_config("configs/quickstart.py:scratch")
  assert list(scratch.stages) == ["rgb_slpt", "ssmer", "slpt_event", "cmfa"]
  assert scratch.stages.cmfa.init.event_from == "ssmer"
  for config, name, spec in (
      (scratch, "rgb_slpt", "rgb_slpt.py:runlocal"), (scratch, "ssmer", "ssmer.py:runlocal"),
      (quick, "slpt_event", "cmfa.py:runlocal,model=slpt_event"),
      (quick, "cmfa", "cmfa.py:runlocal")):
    own = json.loads(config_utils.load_config(f"configs/{spec}").to_json())
    got = json.loads(config.stages[name].to_json())
    # What the quick start changes: the validation batch, the checkpoint cadence (its steps),
    # the inits (earlier stages or shipped exports) and, for the fine-tuned stages, the rate
    # and the steps.
    diff = {k for k in own if own[k] != got[k]}
    allowed = {"evals", "checkpoint", "init"}
    if name in ("slpt_event", "cmfa"):
      allowed |= {"optimizer", "total_steps"}
      assert got["optimizer"]["lr"] == own["optimizer"]["lr"] / 5
    assert diff <= allowed, (name, diff)
  # One knob per stage moves its steps, evaluation and checkpoint cadence together ...
  quick.steps.cmfa = 7
  c = quick.stages.cmfa
  assert c.total_steps == c.evals.val.every == c.checkpoint.every == 7
  assert quick.stages.slpt_event.total_steps == 300
  # ... and the shared ones every stage and the eval stage.
  quick.dataset, quick.seed = "synthetic_faces/tiny", 3
  assert {s.dataset for s in quick.stages.values()} | {quick.eval.dataset} == {
      "synthetic_faces/tiny"}
  assert {s.seed for s in quick.stages.values()} == {3}
  tiny = config_utils.load_config("configs/quickstart.py:tiny")
  assert list(tiny.stages) == ["rgb_slpt", "ssmer", "slpt_event", "cmfa"]
  assert tiny.stages.cmfa.model_size.to_dict() == config_utils.TINY_MODEL_SIZE
  assert tiny.stages.ssmer.model_size.to_dict() == config_utils.TINY_SSMER_SIZE
  with pytest.raises(config_utils.ConfigError, match="one of the variants"):
    config_utils.load_config("configs/cmfa.py:runlocal,tiny")


@pytest.mark.parametrize("variant", ["", "runlocal", "tiny"])
def test_fes_configs_are_the_stage_configs_on_fes(variant):
  # The event-only SLPT and SSMER of configs/fes.py are cmfa.py:model=slpt_event and ssmer.py
  # (sizes written once) with FES's dataset.
  for fes, own in ((f"fes.py:{variant}", f"cmfa.py:{variant},model=slpt_event"),
                   (f"fes.py:{variant},model=ssmer", f"ssmer.py:{variant}")):
    got = json.loads(config_utils.load_config(f"configs/{fes}").to_json())
    want = json.loads(config_utils.load_config(f"configs/{own}").to_json())
    assert got.pop("dataset") == "fes_events"
    want.pop("dataset")
    assert got == want, fes
  with pytest.raises(config_utils.ConfigError, match="FES has no RGB"):
    config_utils.load_config("configs/fes.py:model=cmfa")
