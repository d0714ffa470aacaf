r"""Numerical parity of our JAX models with the official PyTorch code, through `import_torch`.

    python benchmarks/parity_torch.py --official_dir=/path/to/CMFA-SSMER [--slpt_dir=/path/to/SLPT]

Builds the official CMFA (`CMFA/model.py::Sparse_alignment_network`), SSMER (`SSMER/simsiam/
builder.py::HRNetSimSiam` with its HRNet) and, if `--slpt_dir` (SLPT_Training) is given, SLPT, from
the given checkouts (torchvision is stubbed, and yacs when missing; their configs come from their
own Config/default.py). The weights are randomised (every parameter, incl. BatchNorm/LayerNorm
affine and attention biases) and every BatchNorm gets non-trivial running statistics from one
train-mode pass on random data with momentum 1. The state dicts go through
`import_torch.convert_state_dict` into our models, and both run on the same random inputs in float32
on CPU: CMFA / SLPT landmarks (all stages and layers, eval mode), SSMER z and p (eval mode, and
train mode, i.e. batch statistics). Prints the max abs differences and ends with

    max_abs_diff cmfa=<v> ssmer=<v>

exiting non-zero if either is >= 1e-4 (or SLPT's, when run). Needs torch; nothing else of theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import types

import numpy as np

TOLERANCE = 1e-4


def _stub_third_party() -> None:
  """torchvision (PyPI's does not import beside torch 2.13) and yacs (only for their configs)."""
  if "torchvision" not in sys.modules:
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models._utils = types.ModuleType("torchvision.models._utils")
    tv.models._utils.IntermediateLayerGetter = object
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models,
                        "torchvision.models._utils": tv.models._utils,
                        "torchvision.transforms": tv.transforms})
  try:
    import yacs.config  # noqa: F401
  except ImportError:

    class CfgNode(dict):
      """Attribute access over a dict: all their default.py files need."""

      def __getattr__(self, name):
        try:
          return self[name]
        except KeyError as e:
          raise AttributeError(name) from e

      def __setattr__(self, name, value):
        self[name] = value

      def defrost(self):
        pass

      def freeze(self):
        pass

    yacs = types.ModuleType("yacs")
    yacs.config = types.ModuleType("yacs.config")
    yacs.config.CfgNode = CfgNode
    sys.modules.update({"yacs": yacs, "yacs.config": yacs.config})


@contextlib.contextmanager
def _official_imports(root: str):
  """Imports from `root` as the official scripts do (cwd-relative top-level packages), then drops
  those modules so another checkout with the same package names (utils, Config, ...) can load."""
  before = set(sys.modules)
  sys.path.insert(0, root)
  cwd = os.getcwd()
  os.chdir(root)
  try:
    yield
  finally:
    os.chdir(cwd)
    sys.path.remove(root)
    for name in set(sys.modules) - before:
      module = sys.modules[name]
      origin = os.path.abspath(getattr(module, "__file__", None) or "/")
      if origin.startswith(os.path.abspath(root)):
        del sys.modules[name]


def _randomise(torch, model, *, seed: int, calibrate) -> None:
  """Random weights everywhere, then BatchNorm statistics from one momentum-1 train pass."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.dim() >= 2 and p.dim() != 3:  # Convs, linears, in_proj.
        fan_in = p[0].numel()
        p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
      elif p.dim() == 3:  # (1, K, D) structure encodings / landmark queries.
        p.copy_(torch.randn(p.shape, generator=gen))
      elif name.endswith("weight"):  # BatchNorm / LayerNorm scales.
        p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
      else:
        p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for name, module in model.named_modules():
      if name.endswith("out_layer_event") or name.endswith("out_layer"):
        # Offsets near the window centre, so later stages sample inside the map.
        module.weight.mul_(0.05)
        module.bias.fill_(0.5)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
  momenta = [m.momentum for m in bns]
  for m in bns:
    m.momentum = 1.0
  model.train()
  with torch.no_grad():
    calibrate()
  for m, mom in zip(bns, momenta):
    m.momentum = mom
  model.eval()


def _diverse_images(torch, gen, batch: int, size: int):
  """NCHW noise with a per-image contrast and per-channel offset: with i.i.d. noise a random net
  maps every image to nearly the same pooled features, and the 1-D BatchNorms then divide by tiny
  batch spreads, amplifying float32 rounding beyond any tolerance."""
  scale = 0.5 + 2.0 * torch.rand(batch, 1, 1, 1, generator=gen)
  offset = torch.randn(batch, 3, 1, 1, generator=gen)
  return torch.randn(batch, 3, size, size, generator=gen) * scale + offset


def _to_numpy_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _mean_shape_file(num_points: int, seed: int, mean=None) -> tuple[str, np.ndarray]:
  """An official init.npz (crop pixels of a 256 crop) of `mean` in [0, 1], random if None."""
  if mean is None:
    mean = np.random.default_rng(seed).uniform(0.25, 0.75, (num_points, 2))
  path = os.path.join(tempfile.mkdtemp(), "init.npz")
  np.savez(path, init_face=np.asarray(mean, np.float64) * 256.0)
  return path, mean


def _ours(kind: str, converted: dict):
  """Our model of `kind`, sized from and loaded with the converted official state."""
  from evalign_jax.models import checkpoint_io
  from evalign_jax.tools import import_torch

  model = import_torch.build_model(kind, converted)
  checkpoint_io.update_from_pure_dict(model, converted)
  model.eval()
  return model


def check_cmfa(torch, official_dir: str, batch: int, size: int, seed: int) -> float:
  from flax import nnx
  import jax.numpy as jnp

  from evalign_jax.tools import import_torch

  init_path, _ = _mean_shape_file(98, seed)
  with _official_imports(os.path.join(official_dir, "CMFA")):
    from Config import cfg  # pylint: disable=import-error
    import model as official  # pylint: disable=import-error
    cfg.MODEL.INIT_WEIGHTS = False
    net = official.Sparse_alignment_network(98, 256, True, True, False, 8, 1024, init_path, cfg)
  gen = torch.Generator().manual_seed(seed)
  rgb = _diverse_images(torch, gen, batch, size)
  ev = _diverse_images(torch, gen, batch, size)
  calib = _diverse_images(torch, gen, 2 * batch, size)
  _randomise(torch, net, seed=seed, calibrate=lambda: net(calib, calib.flip(0)))
  with torch.no_grad():
    theirs = torch.stack(net(rgb, ev), dim=1).numpy()
  mean = import_torch.load_mean_shape(init_path)
  converted = import_torch.convert_state_dict("cmfa", _to_numpy_state(net), mean)
  model = _ours("cmfa", converted)
  nhwc = lambda t: jnp.asarray(t.numpy().transpose(0, 2, 3, 1))
  ours = np.asarray(nnx.jit(lambda m, a, b: m(a, b))(model, nhwc(rgb), nhwc(ev)))
  diff = float(np.max(np.abs(ours - theirs)))
  per_stage = np.max(np.abs(ours - theirs), axis=(0, 2, 3, 4))
  print(f"CMFA  landmarks {theirs.shape}: max |diff| {diff:.3g} (per stage {per_stage}); "
        f"landmark range [{theirs.min():.3f}, {theirs.max():.3f}]")
  return diff


def check_slpt(torch, slpt_dir: str, batch: int, size: int, seed: int) -> float:
  from flax import nnx
  import jax.numpy as jnp

  from evalign_jax.tools import import_torch

  init_path, _ = _mean_shape_file(98, seed + 1)
  with _official_imports(slpt_dir):
    from Config import cfg  # pylint: disable=import-error
    import model as official  # pylint: disable=import-error
    cfg.MODEL.INIT_WEIGHTS = False
    net = official.Sparse_alignment_network(98, 256, True, True, False, 8, 1024, init_path, cfg)
  gen = torch.Generator().manual_seed(seed + 1)
  image = _diverse_images(torch, gen, batch, size)
  calib = _diverse_images(torch, gen, 2 * batch, size)
  _randomise(torch, net, seed=seed + 1, calibrate=lambda: net(calib))
  with torch.no_grad():
    theirs = torch.stack(net(image), dim=1).numpy()
  mean = import_torch.load_mean_shape(init_path)
  converted = import_torch.convert_state_dict("slpt", _to_numpy_state(net), mean)
  model = _ours("slpt", converted)
  nhwc = jnp.asarray(image.numpy().transpose(0, 2, 3, 1))
  ours = np.asarray(nnx.jit(lambda m, a: m(a))(model, nhwc))
  diff = float(np.max(np.abs(ours - theirs)))
  print(f"SLPT  landmarks {theirs.shape}: max |diff| {diff:.3g}")
  return diff


def check_ssmer(torch, official_dir: str, batch: int, size: int, seed: int) -> tuple[float, bool]:
  """Eval-mode max |diff| of z and p, and whether train mode is within torch's own float32 noise."""
  import copy

  from flax import nnx
  import jax.numpy as jnp

  from evalign_jax.tools import import_torch

  with _official_imports(os.path.join(official_dir, "SSMER")):
    from models.hrnet.hrnet import HighResolutionNet  # pylint: disable=import-error
    from simsiam import builder  # pylint: disable=import-error
    net = builder.HRNetSimSiam(HighResolutionNet, dim=2048, pred_dim=512)
  gen = torch.Generator().manual_seed(seed + 2)
  x = _diverse_images(torch, gen, batch, size)
  calib = _diverse_images(torch, gen, batch, size)
  _randomise(torch, net, seed=seed + 2, calibrate=lambda: net(calib, x))
  # The 1-D BatchNorms after the global pool: a random net's pooled features barely vary between
  # images, so calibrated variances are tiny and dividing by them amplifies float32 rounding (torch
  # float32 then misses its own float64 result by ~1e-4). Random O(1) statistics test the
  # conversion just as well.
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm1d):
        m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
  converted = import_torch.convert_state_dict("ssmer", _to_numpy_state(net))
  model = _ours("ssmer", converted)
  net64 = copy.deepcopy(net).double()
  xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  results = {}
  for mode in ("eval", "train"):
    for n in (net, net64):
      getattr(n, mode)()
    with torch.no_grad():
      z = net.encoder(x)
      p = net.predictor(z)
      z64 = net64.encoder(x.double())
      p64 = net64.predictor(z64)
    ura = mode == "eval"
    z_ours, p_ours = nnx.jit(lambda m, a: m(a, use_running_average=ura))(model, xj)
    for name, ours, ref, ref64 in (("z", z_ours, z, z64), ("p", p_ours, p, p64)):
      ours = np.asarray(ours, np.float64)
      results[mode, name] = (float(np.max(np.abs(ours - ref.numpy()))),
                             float(np.max(np.abs(ours - ref64.numpy()))),
                             float(np.max(np.abs(ref.double().numpy() - ref64.numpy()))))
      d, d64, noise = results[mode, name]
      print(f"SSMER {mode:5s} {name} {tuple(ref.shape)} (max |{name}| {ref.abs().max():.2f}): "
            f"max |ours - torch| {d:.3g}; vs torch float64: ours {d64:.3g}, "
            f"torch float32 {noise:.3g}")
  eval_diff = max(results["eval", "z"][0], results["eval", "p"][0])
  # Train mode normalises by the spread of 8 images (ill-conditioned for a random net): require
  # ours to be about as close to the float64 result as torch's own float32 run is.
  train_ok = all(results["train", n][1] <= 2 * results["train", n][2] + TOLERANCE for n in "zp")
  print(f"SSMER train mode within torch float32 noise: {train_ok}")
  return eval_diff, train_ok


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--official_dir", required=True, help="CMFA-SSMER checkout (CMFA/, SSMER/).")
  parser.add_argument("--slpt_dir", default=None, help="SLPT_Training checkout (optional).")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--size", type=int, default=256, help="CMFA / SLPT input size.")
  parser.add_argument("--ssmer_batch", type=int, default=8)
  parser.add_argument("--ssmer_size", type=int, default=224)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  os.environ.setdefault("MPLBACKEND", "Agg")  # Their utils import matplotlib.pyplot.
  import jax

  jax.config.update("jax_default_matmul_precision", "highest")  # Parity, not speed.
  import torch

  torch.manual_seed(args.seed)
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  _stub_third_party()
  t0 = time.time()
  cmfa = check_cmfa(torch, args.official_dir, args.batch, args.size, args.seed)
  ssmer, ssmer_train_ok = check_ssmer(torch, args.official_dir, args.ssmer_batch, args.ssmer_size,
                                      args.seed)
  slpt = None
  if args.slpt_dir:
    slpt = check_slpt(torch, args.slpt_dir, args.batch, args.size, args.seed)
  print(f"({time.time() - t0:.0f} s)")
  if slpt is not None:
    print(f"max_abs_diff slpt={slpt:.3g}")
  print(f"max_abs_diff cmfa={cmfa:.3g} ssmer={ssmer:.3g}")
  failed = (cmfa >= TOLERANCE or ssmer >= TOLERANCE or not ssmer_train_ok
            or (slpt is not None and slpt >= TOLERANCE))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())


def official_models(official_dir: str, device: str = "cpu"):
  """(CMFA, SSMER SimSiam, SimSiam's cosine criterion) of the official code, default-initialised,
  on `device`; for timing them beside ours (benchmarks/train_step.py)."""
  import torch   # pylint: disable=g-import-not-at-top
  _stub_third_party()
  init_path, _ = _mean_shape_file(98, 0)
  with _official_imports(os.path.join(official_dir, "CMFA")):
    from Config import cfg  # pylint: disable=import-error
    import model as official  # pylint: disable=import-error
    cfg.MODEL.INIT_WEIGHTS = False
    cmfa = official.Sparse_alignment_network(98, 256, True, True, False, 8, 1024, init_path, cfg)
  with _official_imports(os.path.join(official_dir, "SSMER")):
    from models.hrnet.hrnet import HighResolutionNet  # pylint: disable=import-error
    from simsiam import builder  # pylint: disable=import-error
    simsiam = builder.HRNetSimSiam(HighResolutionNet, dim=2048, pred_dim=512)
  # The frozen RGB branch, as the official train.py freezes it.
  for name, p in cmfa.named_parameters():
    if name.startswith(("backbone.", "feature_extractor.", "Transformer.")):
      p.requires_grad_(False)
  return cmfa.to(device), simsiam.to(device), torch.nn.CosineSimilarity(dim=1).to(device)


def official_alignment_loss(pred, gt):
  """The official Alignment_Loss of one stage: pred (B, L, K, 2), gt (B, K, 2)."""
  io = (gt[:, 60] - gt[:, 72]).norm(dim=-1)
  err = (pred - gt[:, None]).norm(dim=-1).mean(-1)
  return (err / io[:, None]).mean()
