"""Supervised alignment stages: `rgb_slpt`, `slpt_event` and `cmfa` (config.model).

- rgb_slpt: SLPT on RGB crops; becomes CMFA's frozen RGB branch.
- slpt_event: the same SLPT on event images (the no-CMFA ablation).
- cmfa: the event SLPT whose decoder layers first attend to the frozen RGB branch's tokens.
  Its event backbone starts from an SSMER encoder (`init.event_from`), its RGB branch from an
  rgb_slpt or imported SLPT (`init.rgb_from`); `init.aligner_from` starts the trained aligner
  (an SLPT, or CMFA's event branch) from a trained SLPT, before `event_from` replaces the
  event backbone's body. Only the event branch is differentiated and updated (the optimizer
  and the gradient both take the trainable filter), and the frozen branch's BatchNorm runs in
  eval mode unless `rgb_bn_train` reproduces the official code.

Inputs are rendered on device inside the step (`device_augment.model_inputs`).
Loss: deep supervision over 3 stages x 6 layers, stage weights 0.2/0.3/0.5, each the mean
point error normalised by the eye distance of the dataset's layout. The model predicts the
dataset's points (its mean shape's, e.g. 98 or 5). Adam with step decay. Validation: the config's
evaluators (`config.evals`, the landmark evaluator on the validation split).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from data_pipelines import augment
from data_pipelines import datasets
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from data_pipelines import landmarks as lm
from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import models
from evalign_jax import sharding
from evalign_jax.evaluators import landmarks as landmark_eval
from evalign_jax.evaluators import registry as evaluators
from evalign_jax.events.images import RenderConfig
from evalign_jax.trainers import loop


# ---------------------------------------------------------------------------------------------
# Loss and schedule


def alignment_loss(preds: jax.Array, gt: jax.Array, mask: jax.Array,
                   stage_weights=(0.2, 0.3, 0.5)) -> jax.Array:
  """SLPT/CMFA deep-supervised loss.

  Args:
    preds: (B, S, L, K, 2) landmarks of every stage S and decoder layer L, any unit.
    gt: (B, K, 2) in the same unit.
    mask: (B,) 1 for real examples, 0 for padding.
    stage_weights: weight of each stage's loss.

  Returns:
    sum_s w_s * mean over (images, layers) of mean_k ||pred - gt|| / ||gt_a - gt_b||, a and b
    the layout's eyes (`landmarks.default_norm`: 60 and 72 of 98 points, 3 and 4 of 5).
  """
  _, (a, b) = lm.default_norm(gt.shape[-2])
  io = jnp.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
  err = jnp.linalg.norm(preds.astype(jnp.float32) - gt[:, None, None], axis=-1).mean(-1)
  per_image = err / jnp.maximum(io, 1e-6)[:, None, None]            # (B, S, L)
  per_stage = jnp.sum(per_image.mean(-1) * mask[:, None], 0) / jnp.maximum(mask.sum(), 1.0)
  return jnp.sum(per_stage * jnp.asarray(stage_weights, jnp.float32))


def step_decay(base_lr: float, steps_per_epoch: int, decay_epochs, factor: float = 0.1):
  """Multiplies the rate by `factor` at each epoch in `decay_epochs` (MultiStepLR)."""
  return optax.piecewise_constant_schedule(
      base_lr, {int(e * steps_per_epoch): factor for e in decay_epochs})


# ---------------------------------------------------------------------------------------------
# The step, the weights of earlier stages


def make_train_step(graphdef, kind: str, image_size: int, render, lr, wrt,
                    stage_weights=(0.2, 0.3, 0.5), *, accum_steps: int = 1, shardings=None):
  """jitted (state, batch) -> (state, {"loss", "lr"}) over nnx.split((model, optimizer)) state.

  The state is donated (updated in place on device). Only `wrt` is differentiated.
  `accum_steps` and `shardings`: see `loop.make_update_step`.
  """
  inputs = models.model_spec(kind).inputs

  def loss_fn(model, batch):
    preds = model(*da.model_inputs(batch, inputs, image_size, render))
    return alignment_loss(preds, batch["landmarks"] / image_size,
                          batch["example_mask"].astype(jnp.float32), stage_weights)

  return loop.make_update_step(graphdef, loss_fn, lr, wrt=wrt, accum_steps=accum_steps,
                               shardings=shardings)


def set_num_landmarks(config, num_points: int) -> None:
  """Records the dataset's number of points in `config.num_landmarks` (0: not set), which the
  export keeps to rebuild the model.

  Raises:
    config_utils.ConfigError: a config that asks for another number than the dataset has.
  """
  if config.num_landmarks not in (0, num_points):
    raise config_utils.ConfigError(
        f"num_landmarks={config.num_landmarks}, but {config.dataset} has {num_points} points "
        "(the model predicts the dataset's points: leave num_landmarks at 0)")
  config.num_landmarks = num_points


def check_init(kind: str, config) -> None:
  """Raises config_utils.ConfigError for cmfa without `init.rgb_from` (before any work)."""
  if kind == "cmfa" and not config.init.rgb_from:
    raise config_utils.ConfigError(
        "cmfa needs init.rgb_from: an rgb_slpt workdir of the same model size "
        "(--config.init.rgb_from=workdir/rgb_slpt) or an imported SLPT "
        "(python -m evalign_jax.tools.import_torch --kind=slpt ...)")


def init_branches(model, kind: str, config) -> None:
  """Copies weights from earlier stages into a fresh model (see the module docstring).

  Raises:
    config_utils.ConfigError: cmfa without `init.rgb_from`, or an init export of another kind.
    FileNotFoundError: an init path without an export.
  """
  if config.init.aligner_from:
    slpt, cfg = export.load(config.init.aligner_from)
    if cfg["model"] not in ("rgb_slpt", "slpt_event"):
      raise config_utils.ConfigError(
          f"init.aligner_from={config.init.aligner_from} holds a {cfg['model']!r} model, not "
          "an SLPT")
    models.aligner_from_slpt(model, slpt)
    print(f"{kind} initialised from the SLPT in {config.init.aligner_from}")
  if config.init.event_from and kind in ("cmfa", "slpt_event"):
    ssmer, cfg = export.load(config.init.event_from)
    if cfg["model"] != "ssmer":
      raise config_utils.ConfigError(
          f"init.event_from={config.init.event_from} holds a {cfg['model']!r} model, not an "
          "SSMER encoder")
    models.load_encoder_body(model.event.backbone if kind == "cmfa" else model.backbone, ssmer)
    print(f"event backbone initialised from the SSMER encoder in {config.init.event_from}")
  if kind == "cmfa":
    check_init(kind, config)
    slpt, cfg = export.load(config.init.rgb_from)
    if cfg["model"] not in ("rgb_slpt", "slpt_event"):
      raise config_utils.ConfigError(
          f"init.rgb_from={config.init.rgb_from} holds a {cfg['model']!r} model, not an SLPT")
    models.rgb_branch_from_slpt(model, slpt)
    print(f"frozen RGB branch initialised from the SLPT in {config.init.rgb_from}")


# ---------------------------------------------------------------------------------------------
# The stage


def train(config, workdir: str) -> dict:
  return loop.run_training(build_stage(config), config, workdir)


def build_stage(config) -> loop.Stage:
  """The model on the config's mesh, its optimizer, step, data and evaluators."""
  kind = config.model
  check_init(kind, config)
  mesh = sharding.make_mesh(config.mesh, global_batch=config.batch_size)
  datasets.prepare_dataset(config)
  size = config.image_size
  render = RenderConfig.from_config(config.render)
  data_dir = datasets.data_dir(config)
  train_source = ip.make_source(config.dataset, data_dir, "train")
  shape = datasets.mean_shape(config.dataset, data_dir, size)
  set_num_landmarks(config, len(shape))
  model = models.build_model(config, shape, config.seed)
  init_branches(model, kind, config)

  steps_per_epoch = max(1, len(train_source) // config.batch_size)
  total_steps = config.total_steps or int(config.num_epochs * steps_per_epoch)
  lr = step_decay(config.optimizer.lr, steps_per_epoch, config.optimizer.decay_epochs)
  wrt = models.model_spec(kind).trainable
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=wrt)
  graphdef, state = nnx.split((model, optimizer))
  state, shardings = loop.place_state(state, mesh, config)

  train_step = make_train_step(graphdef, kind, size, render, lr, wrt,
                               tuple(config.loss.stage_weights),
                               accum_steps=config.grad_accum_steps, shardings=shardings)
  train_ds = ip.make_dataset(train_source, task="cmfa", train=True,
                             global_batch_size=config.batch_size, seed=config.seed,
                             augment_config=augment.AlignmentAugment(out_size=size))

  model_graphdef = nnx.split(model)[0]

  def predict_for(batch_size):
    batch_sharding = sharding.batch_sharding(mesh, batch_size)
    return (landmark_eval.make_predict(model_graphdef, kind, size, render, batch_sharding),
            batch_sharding)

  stage = loop.Stage(
      name=kind, graphdef=graphdef, state=state, train_step=train_step,
      train_iter=ip.make_iterator(train_ds, config.num_workers), total_steps=total_steps,
      evaluators=evaluators.from_config(config.evals, predict_for, dataset=config.dataset,
                                        data_dir=data_dir, image_size=size, label=kind),
      best_metric=config.checkpoint.best_metric or None,
      export_model=lambda s: nnx.merge(graphdef, s)[0], batch_sharding=shardings.batch)
  print(f"[{kind}] {len(train_source)} training examples, batch {config.batch_size}, "
        f"{total_steps} steps ({total_steps / steps_per_epoch:.1f} epochs); "
        f"{_count(model, wrt) / 1e6:.2f} M trainable of {_count(model, nnx.Param) / 1e6:.2f} M "
        f"parameters; {sharding.describe(mesh)}", flush=True)
  return stage


def _count(model, wrt) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, wrt)))
