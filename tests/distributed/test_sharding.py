"""Mesh, shardings, gradient accumulation and mixed precision, in one process on 4 CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from evalign_jax import config_utils
from evalign_jax import distributed
from evalign_jax import models
from evalign_jax import sharding
from evalign_jax.trainers import loop


def test_mesh_shape_fills_the_rest_and_rejects_bad_sizes():
  assert sharding.mesh_shape({"data": -1, "fsdp": 1}, 8) == (8, 1)
  assert sharding.mesh_shape({"data": -1, "fsdp": 2}, 8) == (4, 2)
  assert sharding.mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4)
  assert sharding.mesh_shape({"fsdp": 4}, 4) == (1, 4)
  with pytest.raises(ValueError, match="do not divide"):
    sharding.mesh_shape({"data": -1, "fsdp": 3}, 8)
  with pytest.raises(ValueError, match="needs 4 devices, 8 are available"):
    sharding.mesh_shape({"data": 2, "fsdp": 2}, 8)
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="among"):
    sharding.mesh_shape({"model": 2}, 8)


def test_make_mesh_uses_every_device_with_auto_axes():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert "data=2 x fsdp=2 over 4 cpu devices in 1 process" in sharding.describe(mesh)
  assert sharding.make_mesh({"data": -1}, global_batch=8).devices.size == 4
  # A batch that does not divide over the devices runs on one, not replicated on all four.
  assert dict(sharding.make_mesh({"data": -1}, global_batch=2).shape) == {"data": 1, "fsdp": 1}


def test_fsdp_spec_splits_the_largest_divisible_axis_of_large_arrays():
  assert sharding.fsdp_spec((3, 3, 64, 128), 4) == P(None, None, None, "fsdp")
  assert sharding.fsdp_spec((1024, 96), 4) == P("fsdp")
  assert sharding.fsdp_spec((1024, 96), 1) == P()
  assert sharding.fsdp_spec((96,), 4) == P()                  # small: replicated
  assert sharding.fsdp_spec((127, 129), 2) == P()             # nothing divides


class Mlp(nnx.Module):

  def __init__(self, rngs, din=6, dout=256):
    self.dense = nnx.Linear(din, dout, rngs=rngs)
    self.out = nnx.Linear(dout, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.dense(x)))


def mse(model, batch):
  return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)


def mlp_state(tx):
  model = Mlp(nnx.Rngs(0))
  return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))


def batch_of(n, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, 6)).astype(np.float32),
          "y": rng.normal(size=(n, 2)).astype(np.float32)}


def test_fsdp_step_equals_the_unsharded_step_and_keeps_its_shardings():
  tx = optax.adam(1e-2)
  graphdef, state = mlp_state(tx)
  lr = optax.constant_schedule(1e-2)
  batch = batch_of(8)
  ref_step = loop.make_update_step(graphdef, mse, lr)
  ref_state, ref_metrics = ref_step(jax.tree.map(jnp.copy, state), batch)

  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  shardings = sharding.StepShardings(sharding.state_shardings(state, mesh, min_size=256),
                                     sharding.batch_sharding(mesh, 8), sharding.replicated(mesh))
  placed = sharding.put_global(state, shardings.state)
  step = loop.make_update_step(graphdef, mse, lr, shardings=shardings)
  new_state, metrics = step(placed, sharding.global_batch(batch, shardings.batch))
  np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                       atol=1e-7), new_state, ref_state)
  # The (6, 256) kernel and its two Adam moments are split over fsdp on the 256 axis; the state
  # comes back with the shardings it went in with.
  specs = {s.spec for s in jax.tree.leaves(shardings.state)}
  assert P(None, "fsdp") in specs and P("fsdp") in specs
  jax.tree.map(lambda a, s: a.sharding.is_equivalent_to(s, a.ndim) or pytest.fail(str(a.sharding)),
               new_state, shardings.state)
  assert metrics["loss"].sharding.is_fully_replicated
  with pytest.raises(RuntimeError, match="deleted|donated"):
    np.asarray(jax.tree.leaves(placed)[0])   # the state was donated


def test_gradient_accumulation_equals_one_big_batch():
  tx = optax.sgd(0.1)
  graphdef, state = mlp_state(tx)
  lr = optax.constant_schedule(0.1)
  batch = batch_of(8, seed=1)
  one = loop.make_update_step(graphdef, mse, lr)
  four = loop.make_update_step(graphdef, mse, lr, accum_steps=4)
  s1, m1 = one(jax.tree.map(jnp.copy, state), batch)
  s4, m4 = four(jax.tree.map(jnp.copy, state), batch)
  np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s4, s1)
  with pytest.raises(ValueError, match="does not split into 3"):
    loop.make_update_step(graphdef, mse, lr, accum_steps=3)(s1, batch)


def _mlp_params(state, graphdef) -> dict:
  model = nnx.merge(graphdef, state)[0]
  return {"w1": model.dense.kernel[...], "b1": model.dense.bias[...],
          "w2": model.out.kernel[...], "b2": model.out.bias[...]}


def _hand_sgd_step(params, batch, lr):
  """(loss, params after one SGD step) of `Mlp` + `mse`, by hand in float64 numpy."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x, y = np.asarray(batch["x"], np.float64), np.asarray(batch["y"], np.float64)
  h = x @ p["w1"] + p["b1"]
  a = np.maximum(h, 0.0)
  err = a @ p["w2"] + p["b2"] - y
  loss = np.mean(err ** 2)
  d_out = 2.0 * err / err.size
  d_h = (d_out @ p["w2"].T) * (h > 0)
  grads = {"w2": a.T @ d_out, "b2": d_out.sum(0), "w1": x.T @ d_h, "b1": d_h.sum(0)}
  return loss, {k: p[k] - lr * grads[k] for k in p}


def test_update_step_matches_a_hand_sgd_step_unsharded_fsdp_and_accumulated():
  lr = 0.1
  graphdef, state = mlp_state(optax.sgd(lr))
  batch = batch_of(8, seed=2)
  want_loss, want = _hand_sgd_step(_mlp_params(state, graphdef), batch, lr)
  # The step moves every parameter by far more than the tolerance below.
  assert min(np.max(np.abs(want[k] - np.asarray(v, np.float64)))
             for k, v in _mlp_params(state, graphdef).items()) > 1e-4
  schedule = optax.constant_schedule(lr)

  def check(new_state, metrics):
    assert float(metrics["loss"]) == pytest.approx(want_loss, rel=1e-5)
    got = _mlp_params(new_state, graphdef)
    for k in want:
      np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)

  for accum in (1, 4):
    step = loop.make_update_step(graphdef, mse, schedule, accum_steps=accum)
    check(*step(jax.tree.map(jnp.copy, state), batch))

  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  shardings = sharding.StepShardings(sharding.state_shardings(state, mesh, min_size=256),
                                     sharding.batch_sharding(mesh, 8), sharding.replicated(mesh))
  assert P(None, "fsdp") in {s.spec for s in jax.tree.leaves(shardings.state)}
  step = loop.make_update_step(graphdef, mse, schedule, shardings=shardings)
  new_state, metrics = step(sharding.put_global(state, shardings.state),
                            sharding.global_batch(batch, shardings.batch))
  check(new_state, metrics)


def test_batches_go_global_and_predictions_come_back_local():
  mesh = sharding.make_mesh({"data": -1})
  sh = sharding.batch_sharding(mesh, 8)
  assert sh.spec == P(("data", "fsdp"))
  batch = batch_of(8)
  g = sharding.global_batch(batch, sh)
  assert g["x"].shape == (8, 6) and len(g["x"].addressable_shards) == 4
  np.testing.assert_array_equal(sharding.host_local(g["x"]), batch["x"])
  # A batch that does not divide over the devices is replicated in a single process.
  assert sharding.batch_sharding(mesh, 2).is_fully_replicated
  np.testing.assert_array_equal(sharding.to_host(g)["y"], batch["y"])


def test_bfloat16_computes_in_bf16_with_float32_parameters_and_optimizer_state():
  config = {"model": "slpt_event", "dtype": "bfloat16",
            "model_size": config_utils.TINY_MODEL_SIZE}
  model = models.build_model(config, np.full((98, 2), 0.5, np.float32))
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  floats = [x.dtype for x in jax.tree.leaves(nnx.state((model, opt)))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(d == jnp.float32 for d in floats)
  graphdef, state = nnx.split(model.backbone)   # the convolutions: most of the compute
  jaxpr = str(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(
      state, jnp.zeros((1, 32, 32, 3), jnp.float32)))
  assert "conv_general_dilated" in jaxpr and "bf16[1,16,16," in jaxpr


def test_launch_detection_reads_only_the_environment():
  assert distributed.detect_launch({}) is None
  assert distributed.detect_launch({"JAX_COORDINATOR_ADDRESS": "h:1"}) == "explicit"
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8"}
  assert distributed.detect_launch(slurm) == "slurm"
  assert distributed.detect_launch({**slurm, "SLURM_NTASKS": "1"}) is None
  assert distributed.detect_launch({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}) is None  # sbatch
  assert distributed.detect_launch({"TPU_WORKER_HOSTNAMES": "a,b"}) == "gke_tpu"
  assert distributed.detect_launch({"TPU_WORKER_HOSTNAMES": "a"}) is None
  assert not distributed.initialize("auto")   # nothing here says multi-process
  with pytest.raises(ValueError, match="auto, on or off"):
    distributed.initialize("yes")
