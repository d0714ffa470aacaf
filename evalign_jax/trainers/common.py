"""What every training stage shares: data, the loop, checkpoints, evaluation output.

A stage supplies a model, an optimizer, a jitted pure `train_step(state, batch)` over
`nnx.split((model, optimizer))` state (`make_update_step` builds it from a loss), and optionally
an evaluation function; `run_training` does the rest: resume from the newest checkpoint of the
same workdir, log, evaluate, save (latest N + best by validation NME) and export the final model
for the next stage.

Several processes run the same code on their own share of every batch (`sharding.py`); each
saves its shards of a checkpoint, and only process 0 writes logs and the config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from data_pipelines import augment
from data_pipelines import geometry
from data_pipelines import input_pipeline as ip
from data_pipelines import landmarks as lm
from data_pipelines.build import ensure_built
from evalign_jax import checkpoints
from evalign_jax import distributed
from evalign_jax import files
from evalign_jax import guards
from evalign_jax import metric_writers
from evalign_jax import sharding
from evalign_jax.events import images as event_images

EXPORT_DIR = "export"


# ---------------------------------------------------------------------------------------------
# Data


def data_dir(config) -> str:
  return os.path.expanduser(config.data_dir)


def prepare_dataset(config) -> None:
  """Builds the config's dataset on first use (the embedded one needs no download).

  In a multi-process job process 0 builds it and the others wait: data_dir must then be shared
  by the hosts (or built beforehand on each).
  """
  if distributed.is_primary():
    ensure_built(config.dataset, data_dir(config))
  distributed.barrier("dataset_built")


def render_config(config) -> event_images.RenderConfig:
  r = config.render
  return event_images.RenderConfig(kind=r.kind, num_bins=r.num_bins, convention=r.convention,
                                   tau_us=r.tau_us)


def mean_shape(dataset: str, data_dir: str, image_size: int,
               max_examples: int = 2000) -> np.ndarray:
  """(K, 2) mean landmarks of the training split in [0, 1] crop coordinates.

  In the evaluation crop (1.2 x box, no augmentation), the frame the models see; only the
  landmarks are transformed (images are not decoded). An evenly spaced subset of at most
  `max_examples` examples is enough for a mean.
  """
  source = ip.make_source(dataset, data_dir, "train", decode_image=False)
  cfg = augment.AlignmentAugment(out_size=image_size)
  idx = np.linspace(0, len(source) - 1, min(len(source), max_examples)).astype(int)
  pts = []
  for i in idx:
    example = source[int(i)]
    pts.append(geometry.apply_to_points(augment.eval_crop_matrix(example, cfg),
                                        np.asarray(example["landmarks"])))
  return (np.mean(pts, axis=0) / image_size).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Loss and schedules


def alignment_loss(preds: jax.Array, gt: jax.Array, mask: jax.Array,
                   stage_weights=(0.2, 0.3, 0.5)) -> jax.Array:
  """SLPT/CMFA deep-supervised loss.

  Args:
    preds: (B, S, L, K, 2) landmarks of every stage S and decoder layer L, any unit.
    gt: (B, K, 2) in the same unit.
    mask: (B,) 1 for real examples, 0 for padding.
    stage_weights: weight of each stage's loss.

  Returns:
    sum_s w_s * mean over (images, layers) of mean_k ||pred - gt|| / ||gt60 - gt72||.
  """
  io = jnp.linalg.norm(gt[:, lm.LEFT_EYE_OUTER] - gt[:, lm.RIGHT_EYE_OUTER], axis=-1)
  err = jnp.linalg.norm(preds.astype(jnp.float32) - gt[:, None, None], axis=-1).mean(-1)
  per_image = err / jnp.maximum(io, 1e-6)[:, None, None]            # (B, S, L)
  per_stage = jnp.sum(per_image.mean(-1) * mask[:, None], 0) / jnp.maximum(mask.sum(), 1.0)
  return jnp.sum(per_stage * jnp.asarray(stage_weights, jnp.float32))


def step_decay(base_lr: float, steps_per_epoch: int, decay_epochs, factor: float = 0.1):
  """Multiplies the rate by `factor` at each epoch in `decay_epochs` (MultiStepLR)."""
  return optax.piecewise_constant_schedule(
      base_lr, {int(e * steps_per_epoch): factor for e in decay_epochs})


def epoch_cosine(base_lr: float, steps_per_epoch: int, num_epochs: int):
  """SimSiam's schedule: lr * (1 + cos(pi * epoch / epochs)) / 2, constant within an epoch."""
  def schedule(step):
    epoch = jnp.floor(step / steps_per_epoch)
    return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / num_epochs))
  return schedule


def compute_dtype(name: str):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


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
    return nnx.state((model, optimizer)), {"loss": loss, "lr": lr(optimizer.step[...] - 1)}

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
    evaluate: optional (state) -> (metrics, pictures): metrics e.g. {"val_nme": ...} (lower
      val_nme is better); pictures {tag: (H, W, 3) uint8 RGB}, possibly empty, written as
      `<workdir>/pictures/<tag>_<step>.png` and to TensorBoard.
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
  evaluate: Callable | None = None
  export_model: Callable | None = None
  batch_sharding: Any = None


def run_training(stage: Stage, config, workdir: str) -> dict:
  """Trains to `stage.total_steps`, resuming from `workdir` if it holds checkpoints.

  Returns the last evaluation metrics (or {}).
  """
  # Fails before any work when the workdir cannot be written or cannot hold the checkpoints.
  guards.check_workdir(workdir, guards.checkpoint_bytes(stage.state, config.checkpoint.keep))
  config_dict = json.loads(config.to_json())
  if distributed.is_primary():
    files.write_text(os.path.join(workdir, "config.json"), json.dumps(config_dict, indent=2))
  ckpts = checkpoints.TrainCheckpoints(
      workdir, keep=config.checkpoint.keep,
      best_metric="val_nme" if stage.evaluate is not None else None)
  restored = ckpts.restore_latest(_abstract(stage.state), stage.train_iter)
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
      evaluate_now = stage.evaluate is not None and (
          step % config.eval_every == 0 or step == stage.total_steps)
      if evaluate_now:
        last_eval, pictures = stage.evaluate(state)
        writer.write(step, last_eval)
        writer.write_pictures(step, pictures)
        print(f"[{stage.name}] step {step}: " + "  ".join(
            f"{k}={v:.4g}" for k, v in last_eval.items()), flush=True)
      if step % config.checkpoint.every == 0 or step == stage.total_steps:
        # Log steps alone would let a NaN state be saved at a checkpoint step between them.
        guards.check_finite_metrics(stage.name, step, metrics)
        guards.check_finite_state(stage.name, step, state)
        ckpts.save(step, state, stage.train_iter, config_dict,
                   metrics=last_eval if evaluate_now else None)
    ckpts.wait()
  finally:
    ckpts.close()
    writer.close()
  if stage.export_model is not None:
    export(stage.export_model(_best_or_final(workdir, stage, state)), config_dict,
           os.path.join(workdir, EXPORT_DIR))
  return last_eval


def _best_or_final(workdir: str, stage: Stage, state):
  """The best validation state if one was saved, else the final state."""
  best = os.path.join(workdir, "best")
  if stage.evaluate is not None and os.path.isdir(best):
    try:
      return checkpoints.restore_state(best, _abstract(state))[1]
    except FileNotFoundError:
      pass
  return state


def _abstract(state):
  """Shapes, dtypes and shardings to restore into: a checkpoint written on another number of
  devices or processes is resharded onto this run's mesh."""
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
      state)


def export(model: nnx.Module, config: dict, directory: str) -> None:
  """Writes the model's state and the config that built it, for `init_from` and `eval`.

  Written beside the target and renamed into place, so a crash never leaves half an export.
  The arrays are gathered to the host first, so the export reads back on any number of devices
  or processes. In a multi-process job every process calls it; process 0 writes.
  """
  from evalign_jax.models import checkpoint_io   # pylint: disable=g-import-not-at-top
  # One temporary name for all processes (they write into the same folder).
  tmp = f"{directory}.tmp" if jax.process_count() > 1 else f"{directory}.tmp-{os.getpid()}"
  if distributed.is_primary():
    shutil.rmtree(tmp, ignore_errors=True)
  distributed.barrier("export_start")
  checkpoint_io.save_model_state(os.path.join(tmp, "state"),
                                 sharding.to_host(checkpoint_io.model_state_dict(model)))
  if distributed.is_primary():
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(config, f, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    logging.info("exported the model to %s", directory)
  distributed.barrier("export_done")   # no process reads the export before it is in place


def load_exported(path: str) -> tuple[nnx.Module, dict]:
  """(model, config) from an export folder or a stage workdir (or an import_torch output)."""
  from evalign_jax.models import checkpoint_io   # pylint: disable=g-import-not-at-top
  directory = export_dir(path)
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{path}: no exported model (expected {config_path}); give a "
                            "finished stage's workdir, its export/ folder or an import_torch "
                            "output")
  with open(config_path) as f:
    config = json.load(f)
  model = _model_factory(config)
  checkpoint_io.load_model_state(os.path.join(directory, "state"), model)
  return model, config


def _model_factory(config: dict) -> nnx.Module:
  """A model of the exported kind, ready for its state to be loaded.

  Built for real: the initialisers draw with numpy, which is faster than nnx.eval_shape here.
  """
  from evalign_jax.trainers import alignment   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import ssmer   # pylint: disable=g-import-not-at-top
  kind = config.get("model")
  if kind == "ssmer":
    return ssmer.build_model(config)
  if kind in alignment.MODELS:
    shape = np.zeros((config["num_landmarks"], 2), np.float32)   # the real one is in the state
    return alignment.build_model(kind, shape, config)
  raise ValueError(f"unknown model kind {kind!r} in the exported config")


def export_dir(path: str) -> str:
  """A stage workdir or an export folder -> the export folder."""
  path = os.path.expanduser(path)
  candidate = os.path.join(path, EXPORT_DIR)
  return candidate if os.path.isdir(candidate) else path


def exported_config(path: str) -> dict:
  with open(os.path.join(export_dir(path), "config.json")) as f:
    return json.load(f)
