"""Stage `ssmer`: SimSiam pretraining of the event backbone on multiple event representations.

Each training example gives three independently augmented views of the same events (host:
random resized crop + flip of coordinates), rendered on device as frame, voxel grid and time
surface, then photometrically augmented (MoCo-v2) on device. Each view is encoded once (3
encoder passes per step, where the official code runs 6 for its 3 pairs; the loss is the same):
loss = sum over pairs (frame, voxel), (voxel, time surface), (frame, time surface) of the
symmetric negative cosine with stop-gradient on the projections. SGD (momentum 0.9, weight
decay 1e-4), lr 0.05 x batch / 256 with SimSiam's per-epoch cosine. The export holds the whole
SimSiam model; `cmfa` takes its encoder body.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

from data_pipelines import augment
from data_pipelines import datasets
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from evalign_jax import models
from evalign_jax import sharding
from evalign_jax.events.images import RenderConfig
from evalign_jax.trainers import loop


def epoch_cosine(base_lr: float, steps_per_epoch: int, num_epochs: int):
  """SimSiam's schedule: lr * (1 + cos(pi * epoch / epochs)) / 2, constant within an epoch."""
  def schedule(step):
    epoch = jnp.floor(step / steps_per_epoch)
    return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / num_epochs))
  return schedule


def view_configs(config) -> tuple[RenderConfig, ...]:
  """The config's render settings, once per representation (the SimSiam views)."""
  return tuple(RenderConfig.from_config(config.render, kind=k) for k in config.representations)


def make_train_step(graphdef, image_size: int, views, lr, *, accum_steps: int = 1,
                    shardings=None):
  """jitted (state, batch) -> (state, {"loss", "lr"}) over nnx.split((model, optimizer)).

  `accum_steps` and `shardings`: see `loop.make_update_step`.
  """

  def loss_fn(model, batch):
    x = da.ssmer_view_images(batch, image_size, views)               # (B, V, H, W, 3)
    # One encoder pass per view (not per pair), each over its own batch so BatchNorm sees
    # the same statistics as the official per-pair passes: the loss is identical.
    zs, ps = zip(*(model(x[:, v]) for v in range(x.shape[1])))
    return models.simsiam_loss(ps, zs)

  return loop.make_update_step(graphdef, loss_fn, lr, accum_steps=accum_steps,
                                 shardings=shardings)


def train(config, workdir: str) -> dict:
  return loop.run_training(build_stage(config), config, workdir)


def build_stage(config) -> loop.Stage:
  """The model on the config's mesh, its optimizer, step and data."""
  mesh = sharding.make_mesh(config.mesh, global_batch=config.batch_size)
  datasets.prepare_dataset(config)
  # SSMER never looks at the RGB: skip its JPEG decoding, most of the host cost.
  source = ip.make_source(config.dataset, datasets.data_dir(config), "train",
                          decode_image=False)
  size = config.image_size
  views = view_configs(config)
  model = models.build_model(config, seed=config.seed)

  steps_per_epoch = max(1, len(source) // config.batch_size)
  total_steps = config.total_steps or int(config.num_epochs * steps_per_epoch)
  base_lr = config.optimizer.lr * config.batch_size / 256
  lr = epoch_cosine(base_lr, steps_per_epoch, max(1, total_steps // steps_per_epoch))
  tx = optax.chain(optax.add_decayed_weights(config.optimizer.weight_decay),
                   optax.sgd(lr, momentum=config.optimizer.momentum))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  state, shardings = loop.place_state(state, mesh, config)

  train_step = make_train_step(graphdef, size, views, lr, accum_steps=config.grad_accum_steps,
                               shardings=shardings)

  ds = ip.make_dataset(source, task="ssmer", train=True, global_batch_size=config.batch_size,
                       seed=config.seed, augment_config=augment.SsmerAugment(
                           out_size=size, num_views=len(views)))
  stage = loop.Stage(
      name="ssmer", graphdef=graphdef, state=state, train_step=train_step,
      train_iter=ip.make_iterator(ds, config.num_workers), total_steps=total_steps,
      export_model=lambda s: nnx.merge(graphdef, s)[0], batch_sharding=shardings.batch)
  print(f"[ssmer] {len(source)} unlabelled windows, views {tuple(config.representations)}, "
        f"batch {config.batch_size}, {total_steps} steps; {sharding.describe(mesh)}",
        flush=True)
  return stage
