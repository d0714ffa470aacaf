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
from evalign_jax import models
from evalign_jax.evaluators import metrics as metrics_lib
from evalign_jax.trainers import common

MODELS = ("rgb_slpt", "slpt_event", "cmfa")


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
                    stage_weights=(0.2, 0.3, 0.5)):
  """jitted (state, batch) -> (state, {"loss", "lr"}) over nnx.split((model, optimizer)) state.

  The state is donated (updated in place on device). Only `wrt` is differentiated.
  """

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    inputs = model_inputs(kind, batch, image_size, render)
    gt = batch["landmarks"] / image_size

    def loss_fn(model):
      preds = model(*inputs)
      return common.alignment_loss(preds, gt, batch["example_mask"].astype(jnp.float32),
                                   stage_weights)

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss, "lr": lr(optimizer.step[...] - 1)}

  return train_step


def make_predict(graphdef, kind: str, image_size: int, render):
  """jitted (model state, batch) -> (B, K, 2) last stage, last layer landmarks in crop px.

  `graphdef` and the state come from `nnx.split(model)` (the model alone, so validation during
  training and the eval stage compile the same program, which the compilation cache reuses).
  """

  @jax.jit
  def predict(state, batch):
    model = nnx.merge(graphdef, state)
    model.eval()
    out = model(*model_inputs(kind, batch, image_size, render))
    return out[:, -1, -1].astype(jnp.float32) * image_size

  return predict


def predict_split(predict, state, dataset) -> dict:
  """Runs `predict` over an evaluation dataset (padded batches): numpy predictions + labels."""
  out = {k: [] for k in ("pred", "gt", "clip_id", "frame_index", "subset", "image")}
  for batch in dataset:
    device, host = ip.split_host_fields(batch)
    pred = np.asarray(predict(state, device))
    keep = np.asarray(batch["example_mask"])
    out["pred"].append(pred[keep])
    out["gt"].append(np.asarray(batch["landmarks"])[keep])
    out["image"].append(np.asarray(batch["image"])[keep])
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
  kind = config.model
  common.prepare_dataset(config)
  size = config.image_size
  render = common.render_config(config)
  train_source = ip.make_source(config.dataset, common.data_dir(config), "train")
  shape = common.mean_shape(train_source, size)
  model = build_model(kind, shape, config, config.seed)
  init_branches(model, kind, config)

  steps_per_epoch = max(1, len(train_source) // config.batch_size)
  total_steps = config.total_steps or int(config.num_epochs * steps_per_epoch)
  lr = common.step_decay(config.optimizer.lr, steps_per_epoch, config.optimizer.decay_epochs)
  wrt = trainable_filter(kind)
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=wrt)
  graphdef, state = nnx.split((model, optimizer))

  train_step = make_train_step(graphdef, kind, size, render, lr, wrt,
                               tuple(config.loss.stage_weights))

  train_ds = ip.make_dataset(train_source, task="cmfa", train=True,
                             global_batch_size=config.batch_size, seed=config.seed,
                             augment_config=augment.AlignmentAugment(out_size=size))
  val_ds = eval_dataset(config, size, ip.make_source(config.dataset, common.data_dir(config),
                                                     config.val_split))
  model_graphdef = nnx.split(model)[0]
  predict = make_predict(model_graphdef, kind, size, render)

  def evaluate(state):
    res = predict_split(predict, nnx.state(nnx.merge(graphdef, state)[0]), val_ds)
    nme = metrics_lib.per_image_nme(res["pred"], res["gt"],
                                    metrics_lib.normalizer(res["gt"], "inter_ocular"))
    return {"val_nme": float(np.mean(nme) * 100)}

  stage = common.Stage(
      name=kind, graphdef=graphdef, state=state, train_step=train_step,
      train_iter=ip.make_iterator(train_ds, config.num_workers), total_steps=total_steps,
      evaluate=evaluate, export_model=lambda s: nnx.merge(graphdef, s)[0])
  print(f"[{kind}] {len(train_source)} training examples, batch {config.batch_size}, "
        f"{total_steps} steps ({total_steps / steps_per_epoch:.1f} epochs); "
        f"{_count(model, wrt) / 1e6:.2f} M trainable of {_count(model, nnx.Param) / 1e6:.2f} M "
        f"parameters", flush=True)
  return common.run_training(stage, config, workdir)


def _count(model, wrt) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, wrt)))
