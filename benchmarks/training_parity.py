r"""Training dynamics of our SLPT vs the official PyTorch SLPT, from identical weights.

  python benchmarks/training_parity.py --slpt_dir=PATH [--steps=60] [--lr=1e-3]

PATH is a checkout of the official SLPT code (`Jiahao-UTS/SLPT_Training`; never vendored). The
official model is built with its own initialisation, converted with `import_torch` into ours, and
both are trained with Adam on the same fixed batch of real crops (synthetic_faces/small, 64 px,
built on first use) with dropout off and BatchNorm in train mode. Prints both loss curves side by
side: forward parity (`parity_torch.py`) says the models compute the same function; this says
their gradients and updates make them learn the same way, including how slowly.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import parity_torch as pt


def real_batch(data_dir: str, size: int, batch: int):
  """(images NHWC normalised, landmarks in [0, 1], mean shape) of one augmented training batch."""
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top

  from data_pipelines import augment   # pylint: disable=g-import-not-at-top
  from data_pipelines import datasets   # pylint: disable=g-import-not-at-top
  from data_pipelines import device_augment as da   # pylint: disable=g-import-not-at-top
  from data_pipelines import input_pipeline as ip   # pylint: disable=g-import-not-at-top
  from data_pipelines.build import ensure_built   # pylint: disable=g-import-not-at-top

  name = "synthetic_faces/small"
  ensure_built(name, data_dir)
  source = ip.make_source(name, data_dir, "train")
  ds = ip.make_dataset(source, task="cmfa", train=True, global_batch_size=batch, seed=0,
                       augment_config=augment.AlignmentAugment(out_size=size))
  b = ip.split_host_fields(next(iter(ds)))[0]
  images = np.asarray(da.imagenet_normalize(jnp.asarray(b["image"], jnp.float32) / 255.0))
  return (images, np.asarray(b["landmarks"], np.float32) / size,
          datasets.mean_shape(name, data_dir, size))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slpt_dir", required=True)
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--data_dir", default="~/evalign_data")
  args = parser.parse_args()
  pt._stub_third_party()   # pylint: disable=protected-access
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  import optax   # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  from flax import nnx   # pylint: disable=g-import-not-at-top

  from evalign_jax.tools import import_torch   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import alignment   # pylint: disable=g-import-not-at-top

  images, gt, mean = real_batch(os.path.expanduser(args.data_dir), args.image_size, args.batch)
  init_path, _ = pt._mean_shape_file(98, 0, mean)   # pylint: disable=protected-access
  with pt._official_imports(args.slpt_dir):   # pylint: disable=protected-access
    from Config import cfg   # pylint: disable=g-import-not-at-top,import-error
    import model as official   # pylint: disable=g-import-not-at-top,import-error
    cfg.MODEL.INIT_WEIGHTS = False
    torch.manual_seed(0)
    net = official.Sparse_alignment_network(98, 256, True, True, False, 8, 1024, init_path, cfg)
  for m in net.modules():
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  converted = import_torch.convert_state_dict(
      "slpt", pt._to_numpy_state(net), import_torch.load_mean_shape(init_path))   # pylint: disable=protected-access
  ours = pt._ours("slpt", converted)   # pylint: disable=protected-access
  ours.decoder.dropout = 0.0

  x, y = torch.tensor(images.transpose(0, 3, 1, 2)), torch.tensor(gt)
  opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr)
  net.train()
  theirs = []
  for _ in range(args.steps):
    loss = sum(w * pt.official_alignment_loss(p, y) for w, p in zip((0.2, 0.3, 0.5), net(x)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    theirs.append(loss.item())

  optimizer = nnx.Optimizer(ours, optax.adam(args.lr), wrt=nnx.Param)
  mask = jnp.ones(args.batch)

  @nnx.jit
  def step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(
        lambda m: alignment.alignment_loss(m(x), y, mask, (0.2, 0.3, 0.5)))(model)
    optimizer.update(model, grads)
    return loss

  ours.train()
  xj, yj = jnp.asarray(images), jnp.asarray(gt)
  mine = [float(step(ours, optimizer, xj, yj)) for _ in range(args.steps)]
  print(f"SLPT (d_model 256, 6 layers), {args.image_size} px, batch {args.batch}, Adam "
        f"{args.lr:g}, one fixed batch; loss = 0.2/0.3/0.5-weighted NME (fraction)")
  print("step | official | ours")
  for i in sorted(set(range(0, args.steps, max(1, args.steps // 12))) | {args.steps - 1}):
    print(f"{i + 1:4d} | {theirs[i]:.4f}   | {mine[i]:.4f}")
  tail = max(1, args.steps // 5)
  print(f"mean of the last {tail} steps: official {np.mean(theirs[-tail:]):.4f}, "
        f"ours {np.mean(mine[-tail:]):.4f}")


if __name__ == "__main__":
  main()
