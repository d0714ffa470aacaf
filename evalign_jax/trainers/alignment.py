"""Supervised alignment stages: `rgb_slpt`, `slpt_event` and `cmfa` (config.model).

- rgb_slpt: SLPT on RGB crops; becomes CMFA's frozen RGB branch.
- slpt_event: the same SLPT on event images (the no-CMFA ablation).
- cmfa: the event SLPT whose decoder layers first attend to the frozen RGB branch's tokens.
  Its event backbone starts from an SSMER encoder (`init.event_from`), its RGB branch from an
  rgb_slpt or imported SLPT (`init.rgb_from`); only the event branch is differentiated and
  updated (the optimizer and the gradient both take the trainable filter), and the frozen
  branch's BatchNorm runs in eval mode unless `rgb_bn_train` reproduces the official code.

Inputs are rendered on device inside the step (`device_augment.cmfa_event_images`).
Loss: deep supervision over 3 stages x 6 layers, stage weights 0.2/0.3/0.5, each the mean
inter-ocular-normalised point error. Adam with step decay.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines import augment
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from evalign_jax import distributed
from evalign_jax import models
from evalign_jax import sharding
from evalign_jax.evaluators import metrics as metrics_lib
from evalign_jax.evaluators import plots
from evalign_jax.trainers import common

MODELS = ("rgb_slpt", "slpt_event", "cmfa")
NUM_PICTURES = 8   # validation examples drawn at each evaluation


def build_model(kind: str, mean_shape: np.ndarray, config: dict, seed: int = 0):
  """A fresh model of `kind` ("rgb_slpt" and "slpt_event" are both an SLPT)."""
  if kind not in MODELS:
    raise ValueError(f"model must be one of {MODELS}, got {kind!r}")
  kw = dict(dtype=common.compute_dtype(config["dtype"]), rngs=nnx.Rngs(seed),
            **dict(config.get("model_size") or {}))
  if kind == "cmfa":
    return models.CMFA(mean_shape, rgb_bn_train=config["rgb_bn_train"], **kw)
  return models.SLPT(mean_shape, **kw)


def model_inputs(kind: str, batch: dict, image_size: int, render) -> tuple:
  """The model's positional inputs from a (device) batch, normalised like ImageNet."""
  rgb = lambda: da.imagenet_normalize(batch["image"].astype(jnp.float32) / 255.0)
  events = lambda: da.cmfa_event_images(batch, image_size, render)
  if kind == "rgb_slpt":
    return (rgb(),)
  if kind == "slpt_event":
    return (events(),)
  return (rgb(), events())


def trainable_filter(kind: str):
  return models.CMFA.trainable_filter if kind == "cmfa" else nnx.Param


def make_train_step(graphdef, kind: str, image_size: int, render, lr, wrt,
                    stage_weights=(0.2, 0.3, 0.5), *, accum_steps: int = 1, shardings=None):
  """jitted (state, batch) -> (state, {"loss", "lr"}) over nnx.split((model, optimizer)) state.

  The state is donated (updated in place on device). Only `wrt` is differentiated.
  `accum_steps` and `shardings`: see `common.make_update_step`.
  """

  def loss_fn(model, batch):
    preds = model(*model_inputs(kind, batch, image_size, render))
    return common.alignment_loss(preds, batch["landmarks"] / image_size,
                                 batch["example_mask"].astype(jnp.float32), stage_weights)

  return common.make_update_step(graphdef, loss_fn, lr, wrt=wrt, accum_steps=accum_steps,
                                 shardings=shardings)


def make_predict(graphdef, kind: str, image_size: int, render, batch_sharding=None):
  """jitted (model state, batch) -> (B, K, 2) last stage, last layer landmarks in crop px.

  `graphdef` and the state come from `nnx.split(model)` (the model alone, so validation during
  training and the eval stage compile the same program, which the compilation cache reuses).
  `batch_sharding`: the predictions keep the batch's sharding, so each process can read its
  own rows back (`sharding.host_local`).
  """

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def predict(state, batch):
    model = nnx.merge(graphdef, state)
    model.eval()
    out = model(*model_inputs(kind, batch, image_size, render))
    return out[:, -1, -1].astype(jnp.float32) * image_size

  return distributed.CompiledTogether(predict, "predict")


def predict_split(predict, state, dataset, batch_sharding=None,
                  num_images: int | None = None) -> dict:
  """Runs `predict` over an evaluation dataset (padded batches): numpy predictions + labels.

  With `batch_sharding` each process's batches become global arrays and it gets back the
  predictions of its own examples (of its shard of the split). `num_images` keeps the crops of
  only the first that many examples (None: all), so validation does not hold every image.
  """
  out = {k: [] for k in ("pred", "gt", "clip_id", "frame_index", "subset", "image")}
  kept_images = 0
  for batch in dataset:
    device, host = ip.split_host_fields(batch)
    if batch_sharding is not None:
      device = sharding.global_batch(device, batch_sharding)
    pred = sharding.host_local(predict(state, device))
    keep = np.asarray(batch["example_mask"])
    out["pred"].append(pred[keep])
    out["gt"].append(np.asarray(batch["landmarks"])[keep])
    if num_images is None or kept_images < num_images:
      images = np.asarray(batch["image"])[keep]
      out["image"].append(images if num_images is None else images[:num_images - kept_images])
      kept_images += len(out["image"][-1])
    for k in ("clip_id", "frame_index", "subset"):
      out[k].append(np.asarray(host[k])[keep])
  return {k: np.concatenate(v) for k, v in out.items()}


def eval_dataset(config, image_size: int, source):
  """The unaugmented evaluation pass (1.2 x box crop, padded last batch) over `source`."""
  return ip.make_dataset(source, task="cmfa", train=False,
                         global_batch_size=config.eval_batch_size,
                         augment_config=augment.AlignmentAugment(out_size=image_size))


def init_branches(model, kind: str, config) -> None:
  """Copies weights from earlier stages into a fresh model (see the module docstring)."""
  if config.init.event_from and kind in ("cmfa", "slpt_event"):
    ssmer, cfg = common.load_exported(config.init.event_from)
    if cfg["model"] != "ssmer":
      raise ValueError(f"init.event_from={config.init.event_from} holds a {cfg['model']!r} "
                       "model, not an SSMER encoder")
    models.load_encoder_body(model.event.backbone if kind == "cmfa" else model.backbone, ssmer)
    print(f"event backbone initialised from the SSMER encoder in {config.init.event_from}")
  if kind == "cmfa":
    if not config.init.rgb_from:
      raise ValueError("cmfa needs init.rgb_from: an rgb_slpt workdir or an imported SLPT "
                       "(python -m evalign_jax.tools.import_torch --kind=slpt ...)")
    slpt, cfg = common.load_exported(config.init.rgb_from)
    if cfg["model"] not in ("rgb_slpt", "slpt_event"):
      raise ValueError(f"init.rgb_from={config.init.rgb_from} holds a {cfg['model']!r} model, "
                       "not an SLPT")
    models.rgb_branch_from_slpt(model, slpt)
    print(f"frozen RGB branch initialised from the SLPT in {config.init.rgb_from}")


def train(config, workdir: str) -> dict:
  return common.run_training(build_stage(config), config, workdir)


def build_stage(config) -> common.Stage:
  """The model on the config's mesh, its optimizer, step, data and validation."""
  kind = config.model
  mesh = sharding.make_mesh(config.mesh, global_batch=config.batch_size)
  common.prepare_dataset(config)
  size = config.image_size
  render = common.render_config(config)
  train_source = ip.make_source(config.dataset, common.data_dir(config), "train")
  shape = common.mean_shape(config.dataset, common.data_dir(config), size)
  model = build_model(kind, shape, config, config.seed)
  init_branches(model, kind, config)

  steps_per_epoch = max(1, len(train_source) // config.batch_size)
  total_steps = config.total_steps or int(config.num_epochs * steps_per_epoch)
  lr = common.step_decay(config.optimizer.lr, steps_per_epoch, config.optimizer.decay_epochs)
  wrt = trainable_filter(kind)
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=wrt)
  graphdef, state = nnx.split((model, optimizer))
  state, shardings = common.place_state(state, mesh, config)

  train_step = make_train_step(graphdef, kind, size, render, lr, wrt,
                               tuple(config.loss.stage_weights),
                               accum_steps=config.grad_accum_steps, shardings=shardings)

  train_ds = ip.make_dataset(train_source, task="cmfa", train=True,
                             global_batch_size=config.batch_size, seed=config.seed,
                             augment_config=augment.AlignmentAugment(out_size=size))
  val_ds = eval_dataset(config, size, ip.make_source(config.dataset, common.data_dir(config),
                                                     config.val_split))
  model_graphdef = nnx.split(model)[0]
  eval_sharding = sharding.batch_sharding(mesh, config.eval_batch_size)
  predict = make_predict(model_graphdef, kind, size, render, eval_sharding)

  def evaluate(state):
    res = predict_split(predict, nnx.state(nnx.merge(graphdef, state)[0]), val_ds,
                        eval_sharding, num_images=NUM_PICTURES)
    nme = metrics_lib.per_image_nme(res["pred"], res["gt"],
                                    metrics_lib.normalizer(res["gt"], "inter_ocular"))
    # NME over every process's examples; the picture shows the first validation examples.
    return ({"val_nme": distributed.global_mean(nme) * 100},
            {"val_predictions": prediction_picture(res)})

  stage = common.Stage(
      name=kind, graphdef=graphdef, state=state, train_step=train_step,
      train_iter=ip.make_iterator(train_ds, config.num_workers), total_steps=total_steps,
      evaluate=evaluate, export_model=lambda s: nnx.merge(graphdef, s)[0],
      batch_sharding=shardings.batch)
  print(f"[{kind}] {len(train_source)} training examples, batch {config.batch_size}, "
        f"{total_steps} steps ({total_steps / steps_per_epoch:.1f} epochs); "
        f"{_count(model, wrt) / 1e6:.2f} M trainable of {_count(model, nnx.Param) / 1e6:.2f} M "
        f"parameters; {sharding.describe(mesh)}", flush=True)
  return stage


def prediction_picture(res: dict, count: int = NUM_PICTURES) -> np.ndarray:
  """(., ., 3) uint8 RGB grid of the first `count` examples of a `predict_split` result: the
  crop, ground truth green, prediction red, the image's inter-ocular NME (%) above it."""
  n = min(count, len(res["pred"]))
  pred, gt = res["pred"][:n], res["gt"][:n]
  nme = metrics_lib.per_image_nme(pred, gt, metrics_lib.normalizer(gt, "inter_ocular"))
  return plots.prediction_grid(res["image"][:n], pred, gt,
                               titles=[f"{100 * e:.1f}%" for e in nme])


def _count(model, wrt) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, wrt)))
