"""The one training loop and its update step, for every training stage.

A stage (`alignment.py`, `ssmer.py`) supplies a model, an optimizer, a jitted pure
`train_step(state, batch)` over `nnx.split((model, optimizer))` state (`make_update_step` builds
it from a loss) and its evaluators (`config.evals`, `evaluators.registry`); `run_training` does
the rest: resume from the newest checkpoint of the same workdir, log, evaluate, save (latest N +
best by a validation metric) and export the final model for the next stage (`export.py`).

Several processes run the same code on their own share of every batch (`sharding.py`); each
saves its shards of a checkpoint, and only process 0 writes logs and the config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from data_pipelines import input_pipeline as ip
from evalign_jax import checkpoints
from evalign_jax import distributed
from evalign_jax import export as export_lib
from evalign_jax import files
from evalign_jax import guards
from evalign_jax import metric_writers
from evalign_jax import sharding


# ---------------------------------------------------------------------------------------------
# The update step


def accumulated_value_and_grad(loss_fn: Callable, model: nnx.Module, batch: Any, wrt,
                               steps: int = 1):
  """(mean loss, mean gradient of the `wrt` variables) over `steps` slices of `batch`.

  The slices are processed one after another (a scan), so memory is that of one slice. Slice a
  takes rows a, a + steps, a + 2 steps, ...: every device's contiguous block of the batch
  splits evenly between the slices, so no data moves. The model's other state (BatchNorm
  statistics, dropout counters) advances slice by slice.

  Args:
    loss_fn: (model, batch) -> scalar loss.
    batch: pytree of arrays with a leading batch axis divisible by `steps`.
  """
  if steps == 1:
    return nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, batch)
  size = jax.tree.leaves(batch)[0].shape[0]
  if size % steps:
    raise ValueError(f"batch {size} does not split into {steps} accumulation steps")
  slices = jax.tree.map(
      lambda x: x.reshape(size // steps, steps, *x.shape[1:]).swapaxes(0, 1), batch)
  graphdef, params, rest = nnx.split(model, wrt, ...)

  # Plain JAX inside the scan (the model is rebuilt from its state in each slice).
  def slice_loss(params, rest, piece):
    m = nnx.merge(graphdef, params, rest)
    return loss_fn(m, piece).astype(jnp.float32), nnx.split(m, wrt, ...)[2]

  grad_fn = jax.value_and_grad(slice_loss, has_aux=True)

  def body(carry, piece):
    rest, loss_sum, grad_sum = carry
    (loss, rest), grads = grad_fn(params, rest, piece)
    return (rest, loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (rest, loss, grads), _ = jax.lax.scan(body, (rest, jnp.zeros((), jnp.float32), zeros), slices)
  nnx.update(model, rest)
  return loss / steps, jax.tree.map(lambda g: g / steps, grads)


def make_update_step(graphdef, loss_fn: Callable, lr, *, wrt=nnx.Param, accum_steps: int = 1,
                     shardings: sharding.StepShardings | None = None) -> Callable:
  """jitted (state, batch) -> (state, {"loss", "lr"}) over nnx.split((model, optimizer)) state.

  Args:
    graphdef: of nnx.split((model, optimizer)).
    loss_fn: (model, batch) -> scalar loss, called with the model in training mode (inputs are
      rendered inside it, so accumulation renders one slice at a time).
    lr: the schedule, step -> rate (reported only).
    wrt: the filter of what is differentiated and updated (the optimizer's `wrt`).
    accum_steps: gradient accumulation (`accumulated_value_and_grad`).
    shardings: compile for these state and batch shardings; the new state keeps the state's
      shardings and the metrics are replicated. None: whatever the arguments carry.

  The state is donated: updated in place on device, the argument is invalid afterwards.
  """

  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    loss, grads = accumulated_value_and_grad(loss_fn, model, batch, wrt, accum_steps)
    optimizer.update(model, grads)
    # The rate this update applied. optax schedules misread unsigned counts past their first
    # boundary, and nnx counts steps in uint32 (optax's own counts are int32).
    applied = lr(optimizer.step[...].astype(jnp.int32) - 1)
    return nnx.state((model, optimizer)), {"loss": loss, "lr": applied}

  kw = {}
  if shardings is not None:
    kw = dict(in_shardings=(shardings.state, shardings.batch),
              out_shardings=(shardings.state, shardings.replicated))
  return distributed.CompiledTogether(jax.jit(train_step, donate_argnums=0, **kw), "train_step")


def place_state(state, mesh, config) -> tuple[Any, sharding.StepShardings]:
  """The freshly built (model, optimizer) state on the mesh, and the step's shardings."""
  shardings = sharding.step_shardings(state, mesh, config.batch_size)
  return sharding.put_global(state, shardings.state), shardings


# ---------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class Stage:
  """A training stage as `run_training` needs it.

  Attributes:
    name: for progress lines.
    graphdef, state: `nnx.split((model, optimizer))`.
    train_step: jitted (state, batch) -> (state, metrics dict of scalars).
    train_iter: the grain iterator of training batches (checkpointed with the state).
    total_steps: steps of the whole run.
    evaluators: {name: evaluator} (`evaluators.registry.from_config`), each run on the model
      state every `evaluator.every` steps and at the end; its metrics are logged as
      `<name>_<metric>` and its pictures written as `<workdir>/pictures/<name>_<tag>_<step>.png`
      and to TensorBoard.
    best_metric: the logged metric (lower is better) that picks the `best/` checkpoint and the
      export, e.g. "val_nme"; None: the final state.
    export_model: (state) -> the model to export at the end (for `init_from`).
    batch_sharding: the global sharding of a training batch; each host batch becomes global
      arrays with it (`sharding.global_batch`). None: host batches go to the step as they are.
  """

  name: str
  graphdef: Any
  state: Any
  train_step: Callable
  train_iter: Any
  total_steps: int
  evaluators: dict = dataclasses.field(default_factory=dict)
  best_metric: str | None = None
  export_model: Callable | None = None
  batch_sharding: Any = None


def model_state(graphdef, state):
  """The model's part of an `nnx.split((model, optimizer))` state (what evaluators run on)."""
  return nnx.state(nnx.merge(graphdef, state)[0])


def run_training(stage: Stage, config, workdir: str) -> dict:
  """Trains to `stage.total_steps`, resuming from `workdir` if it holds checkpoints.

  Returns the last evaluation metrics, as logged (or {}).
  """
  # Fails before any work when the workdir cannot be written or cannot hold the checkpoints.
  guards.check_workdir(workdir, guards.checkpoint_bytes(stage.state, config.checkpoint.keep))
  config_dict = json.loads(config.to_json())
  if distributed.is_primary():
    files.write_text(os.path.join(workdir, "config.json"), json.dumps(config_dict, indent=2))
  ckpts = checkpoints.TrainCheckpoints(workdir, keep=config.checkpoint.keep,
                                       best_metric=stage.best_metric)
  restored = ckpts.restore_latest(abstract_state(stage.state), stage.train_iter)
  step = 0
  state = stage.state
  if restored is not None:
    step, state = restored
    print(f"[{stage.name}] resumed from step {step} in {workdir}", flush=True)
  writer = metric_writers.MetricWriter(workdir)
  progress = metric_writers.Progress(stage.name, stage.total_steps, step,
                                     every=config.log_every)
  last_eval = {}
  first_step = step
  t_input = 0.0   # host seconds spent waiting for batches since the last log line
  try:
    while step < stage.total_steps:
      t0 = time.perf_counter()
      batch, _ = ip.split_host_fields(next(stage.train_iter))
      if stage.batch_sharding is not None:
        batch = sharding.global_batch(batch, stage.batch_sharding)
      t_input += time.perf_counter() - t0
      state, metrics = stage.train_step(state, batch)
      step += 1
      if step % config.log_every == 0 or step == stage.total_steps:
        metrics = guards.check_finite_metrics(stage.name, step, metrics)
        # Host seconds per step waiting for input: near the step time means input-bound.
        metrics["input_s_per_step"] = t_input / config.log_every
        metrics["steps_per_s"] = progress.rate(step)
        writer.write(step, metrics)
        progress.update(step, {**{k: metrics[k] for k in ("loss", "lr") if k in metrics},
                               **last_eval}, force=True)   # + the latest validation metrics
        t_input = 0.0
      if step == first_step + 1:
        progress.restart_clock(step)   # the first step of this run includes compilation
      due = {name: ev for name, ev in stage.evaluators.items()
             if (ev.every and step % ev.every == 0) or step == stage.total_steps}
      if due:
        last_eval = run_evaluators(due, model_state(stage.graphdef, state), step, writer)
        print(f"[{stage.name}] step {step}: " + "  ".join(
            f"{k}={v:.4g}" for k, v in last_eval.items()), flush=True)
      if step % config.checkpoint.every == 0 or step == stage.total_steps:
        # Log steps alone would let a NaN state be saved at a checkpoint step between them.
        guards.check_finite_metrics(stage.name, step, metrics)
        guards.check_finite_state(stage.name, step, state)
        ckpts.save(step, state, stage.train_iter, config_dict,
                   metrics=last_eval if due else None)
    ckpts.wait()
  finally:
    ckpts.close()
    writer.close()
  if stage.export_model is not None:
    export_lib.export(stage.export_model(_best_or_final(workdir, stage, state)), config_dict,
                      os.path.join(workdir, export_lib.EXPORT_DIR))
  return last_eval


def export_checkpoint(stage: Stage, config_dict: dict, workdir: str, step: int,
                      directory: str) -> None:
  """Exports the model of `workdir`'s checkpoint at `step` (e.g. of a long run stopped before
  its end) to `directory`, as the end of training exports its final or best state."""
  _, state, _ = checkpoints.restore_state(os.path.join(workdir, "checkpoints"),
                                          abstract_state(stage.state), step=step)
  export_lib.export(stage.export_model(state), config_dict, directory)


def run_evaluators(evaluators: dict, state, step: int, writer) -> dict:
  """Runs `evaluators` on the model state `state`; writes and returns their logged metrics
  (`<name>_<metric>` for the metrics in each evaluator's SCALARS)."""
  logged = {}
  for name, ev in evaluators.items():
    metrics, pictures = ev.run(state)
    logged.update({f"{name}_{k}": metrics[k] for k in ev.SCALARS
                   if metrics.get(k) is not None})
    writer.write_pictures(step, {f"{name}_{tag}": image for tag, image in pictures.items()})
  writer.write(step, logged)
  return logged


def _best_or_final(workdir: str, stage: Stage, state):
  """The best validation state if one was saved, else the final state."""
  best = os.path.join(workdir, "best")
  if stage.best_metric is not None and os.path.isdir(best):
    try:
      return checkpoints.restore_state(best, abstract_state(state))[1]
    except FileNotFoundError:
      pass
  return state


def abstract_state(state):
  """Shapes, dtypes and shardings to restore into: a checkpoint written on another number of
  devices or processes is resharded onto this run's mesh."""
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
      state)
