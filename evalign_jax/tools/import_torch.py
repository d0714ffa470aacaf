r"""Converts official PyTorch checkpoints (SLPT, CMFA, SSMER) into exports of our models.

    python -m evalign_jax.tools.import_torch --kind=slpt --checkpoint=WFLW_6_layer.pth \
        --mean_shape=init_98.npz --out=/ckpt/slpt_wflw
    python -m evalign_jax.tools.import_torch --kind=cmfa --checkpoint=cmfa_ss_fvt_frame.pth \
        --mean_shape=init_98.npz --out=/ckpt/cmfa
    python -m evalign_jax.tools.import_torch --kind=ssmer \
        --checkpoint=ssmer_frame_voxel_timesurface.pth.tar --out=/ckpt/ssmer

The output is an export (`evalign_jax/export.py`: the model state and a config.json saying how
to rebuild it), which `init.rgb_from` / `init.event_from`, the eval stage and `predict` take
like a stage's workdir; an SLPT is exported as an `rgb_slpt` model, and every model as the
official code ran it (256 px crops, frame events). Accepted inputs: a plain state dict, or one wrapped in
{"state_dict": ...} (SSMER's `.pth.tar`) or {"model": ...}; "module." prefixes (DataParallel) are
stripped.
SLPT/CMFA checkpoints do not hold the mean shape (the official code reads it from
`Config/init_98.npz`): pass `--mean_shape=FILE.npz` (key `init_face`, (K, 2) in pixels of the
`--image_size` crop; a .npy with (K, 2) works too).

Name mapping (the conversion core, `convert_state_dict`, is a pure function of a
{name: numpy array} dict; torch is only imported to read .pth files):
  Conv2d weight (O, I, kh, kw) -> kernel (kh, kw, I, O);  Linear weight (O, I) -> kernel (I, O)
  BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var
    (num_batches_tracked dropped)
  LayerNorm weight/bias -> scale/bias
  MultiheadAttention in_proj_weight/bias -> query/key/value kernels and biases; out_proj -> out
  decoder layers l = 0..L-1 -> stacked on a leading axis (our layers are scanned)
  `Sequential(Conv2d, BatchNorm2d[, ReLU])` -> ConvBN {conv, bn}; indices otherwise identical.
Ignored: SLPT's `feature_norm` (defined but unused by the official forward pass).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

KINDS = ("slpt", "cmfa", "ssmer")

# Official names that carry no state of ours.
_IGNORED = re.compile(r"(^|\.)num_batches_tracked$|^feature_norm\.")


class _Source:
  """A {name: array} dict that records which names were consumed."""

  def __init__(self, state_dict: Mapping[str, np.ndarray]):
    self.arrays = {k: np.asarray(v) for k, v in state_dict.items()}
    self.used: set[str] = set()

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.arrays:
      raise KeyError(f"official checkpoint lacks {name!r}")
    self.used.add(name)
    return self.arrays[name]

  def has(self, name: str) -> bool:
    return name in self.arrays

  def check_all_used(self) -> None:
    left = sorted(k for k in self.arrays if k not in self.used and not _IGNORED.search(k))
    if left:
      raise ValueError(f"{len(left)} official tensors have no place in our model: {left[:10]}"
                       + (" ..." if len(left) > 10 else ""))


def _conv(src, name):
  return {"kernel": src(name + ".weight").transpose(2, 3, 1, 0)}


def _conv_bias(src, name):
  return {**_conv(src, name), "bias": src(name + ".bias")}


def _linear(src, name, bias=True):
  out = {"kernel": src(name + ".weight").T}
  if bias:
    out["bias"] = src(name + ".bias")
  return out


def _bn(src, name, affine=True):
  out = {"mean": src(name + ".running_mean"), "var": src(name + ".running_var")}
  if affine:
    out.update(scale=src(name + ".weight"), bias=src(name + ".bias"))
  return out


def _layer_norm(src, name):
  return {"scale": src(name + ".weight"), "bias": src(name + ".bias")}


def _conv_bn(src, name):
  """`Sequential(Conv2d, BatchNorm2d[, ReLU])` at `name` -> ConvBN."""
  return {"conv": _conv(src, name + ".0"), "bn": _bn(src, name + ".1")}


# --------------------------------------------------------------------------------------------------
# HRNet.
# --------------------------------------------------------------------------------------------------


def hrnet_from_torch(src, prefix: str, *, width: int = 18, num_blocks: int = 4,
                     num_modules=(1, 1, 1), head: bool = True) -> dict[str, Any]:
  """The official HighResolutionNet's tensors under `prefix` -> our HRNet pure dict."""
  p = prefix
  out = {"conv1": _conv(src, p + "conv1"), "bn1": _bn(src, p + "bn1"),
         "conv2": _conv(src, p + "conv2"), "bn2": _bn(src, p + "bn2"), "layer1": {}}
  for i in range(num_blocks):
    q = f"{p}layer1.{i}."
    block = {f"{kind}{n}": fn(src, f"{q}{kind}{n}") for n in (1, 2, 3)
             for kind, fn in (("conv", _conv), ("bn", _bn))}
    if src.has(q + "downsample.0.weight"):
      block["downsample"] = _conv_bn(src, q + "downsample")
    out["layer1"][i] = block
  prev = [256]
  for k, n in enumerate((2, 3, 4), start=1):
    channels = [width * 2**i for i in range(n)]
    transition = {}
    for i, c in enumerate(channels):
      if i < len(prev):
        if prev[i] != c:
          transition[i] = _conv_bn(src, f"{p}transition{k}.{i}")
      else:
        transition[i] = {s: _conv_bn(src, f"{p}transition{k}.{i}.{s}")
                         for s in range(i + 1 - len(prev))}
    out[f"transition{k}"] = transition
    stage = {}
    for m in range(num_modules[k - 1]):
      q = f"{p}stage{k + 1}.{m}."
      branches = {
          i: {b: {name: fn(src, f"{q}branches.{i}.{b}.{name}")
                  for name, fn in (("conv1", _conv), ("bn1", _bn), ("conv2", _conv), ("bn2", _bn))}
              for b in range(num_blocks)} for i in range(n)}
      fuse = {}
      for i in range(n):
        row = {}
        for j in range(n):
          if j > i:
            row[j] = _conv_bn(src, f"{q}fuse_layers.{i}.{j}")
          elif j < i:
            row[j] = {s: _conv_bn(src, f"{q}fuse_layers.{i}.{j}.{s}") for s in range(i - j)}
        fuse[i] = row
      stage[m] = {"branches": branches, "fuse_layers": fuse}
    out[f"stage{k + 1}"] = stage
    prev = channels
  if head:
    out["head"] = hrnet_head_from_torch(src, p + "head")
  return out


def hrnet_head_from_torch(src, name: str) -> dict[str, Any]:
  """`Sequential(Conv2d, BatchNorm2d, ReLU, Conv2d)` -> HRNetHead."""
  return {"conv1": _conv_bias(src, name + ".0"), "bn": _bn(src, name + ".1"),
          "conv2": _conv_bias(src, name + ".3")}


# --------------------------------------------------------------------------------------------------
# Transformers.
# --------------------------------------------------------------------------------------------------


def _attention(src, name):
  w, b = src(name + ".in_proj_weight"), src(name + ".in_proj_bias")
  d = w.shape[1]
  out = {part: {"kernel": w[i * d:(i + 1) * d].T, "bias": b[i * d:(i + 1) * d]}
         for i, part in enumerate(("query", "key", "value"))}
  out["out"] = _linear(src, name + ".out_proj")
  return out


def _stack(trees: list[dict]) -> dict:
  """Identically structured nested dicts -> one with leaves stacked on a new axis 0."""
  if isinstance(trees[0], dict):
    return {k: _stack([t[k] for t in trees]) for k in trees[0]}
  return np.stack(trees)


def decoder_from_torch(src, prefix: str, *, cross_modal: bool) -> dict[str, Any]:
  """Official `Transformer` / `Transformer_event` at `prefix` -> LandmarkDecoder (+ its
  structure encoding, returned separately under 'structure_encoding')."""
  block = prefix + "Transformer_block."
  num_layers = 1 + max(int(m.group(1)) for k in src.arrays
                       if (m := re.match(re.escape(block) + r"layers\.(\d+)\.", k)))
  # Official norm numbering -> our names (see slpt.DecoderLayer).
  if cross_modal:
    norms = {"modal_norm": "norm1", "self_norm": "norm2", "cross_norm": "norm3",
             "ffn_norm": "norm4"}
  else:
    norms = {"self_norm": "norm1", "cross_norm": "norm2", "ffn_norm": "norm3"}
  attns = {"self_attn": "self_attn", "cross_attn": "multihead_attn"}
  if cross_modal:
    attns["modal_attn"] = "modal_attn"
  layers = []
  for l in range(num_layers):
    q = f"{block}layers.{l}."
    layer = {ours: _layer_norm(src, q + theirs) for ours, theirs in norms.items()}
    layer.update({ours: _attention(src, q + theirs) for ours, theirs in attns.items()})
    layer["linear1"] = _linear(src, q + "linear1")
    layer["linear2"] = _linear(src, q + "linear2")
    layers.append(layer)
  return {"landmark_query": src(prefix + "landmark_query")[0], "layers": _stack(layers),
          "norm": _layer_norm(src, block + "norm")}


# --------------------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------------------


def slpt_from_torch(state_dict: Mapping[str, np.ndarray], mean_shape: np.ndarray) -> dict:
  """Official SLPT `Sparse_alignment_network` (SLPT_Training / -master) -> our SLPT pure dict."""
  src = _Source(state_dict)
  out = {"backbone": hrnet_from_torch(src, "backbone."),
         "patch_embed": _conv(src, "feature_extractor"),
         "structure_encoding": src("Transformer.structure_encoding")[0],
         "decoder": decoder_from_torch(src, "Transformer.", cross_modal=False),
         "out_layer": _linear(src, "out_layer"),
         "mean_shape": np.asarray(mean_shape, np.float32)}
  src.check_all_used()
  return out


def cmfa_from_torch(state_dict: Mapping[str, np.ndarray], mean_shape: np.ndarray) -> dict:
  """Official CMFA `Sparse_alignment_network` -> our CMFA pure dict."""
  src = _Source(state_dict)
  out = {
      "rgb": {"backbone": hrnet_from_torch(src, "backbone."),
              "patch_embed": _conv(src, "feature_extractor"),
              "structure_encoding": src("Transformer.structure_encoding")[0]},
      "event": {"backbone": hrnet_from_torch(src, "backbone_event."),
                "patch_embed": _conv(src, "feature_extractor_event"),
                "structure_encoding": src("Transformer_event.structure_encoding")[0],
                "decoder": decoder_from_torch(src, "Transformer_event.", cross_modal=True),
                "out_layer": _linear(src, "out_layer_event")},
      "mean_shape": np.asarray(mean_shape, np.float32)}
  src.check_all_used()
  return out


def ssmer_from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Official SSMER `HRNetSimSiam` (encoder.* incl. the projector in encoder.head.1-7, predictor.*)
  -> our SimSiam pure dict."""
  src = _Source(state_dict)
  encoder = hrnet_from_torch(src, "encoder.", head=False)
  encoder["head"] = hrnet_head_from_torch(src, "encoder.head.0")
  out = {
      "encoder": encoder,
      "projector": {"bn0": _bn(src, "encoder.head.1"),
                    "fc1": _linear(src, "encoder.head.3", bias=False),
                    "bn1": _bn(src, "encoder.head.4"),
                    "fc2": _linear(src, "encoder.head.6"),
                    "bn2": _bn(src, "encoder.head.7", affine=False)},
      "predictor": {"fc1": _linear(src, "predictor.0", bias=False),
                    "bn1": _bn(src, "predictor.1"),
                    "fc2": _linear(src, "predictor.3")}}
  src.check_all_used()
  return out


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Plain {name: array} from a raw / {"state_dict"} / {"model"} checkpoint, "module." stripped."""
  for key in ("state_dict", "model"):
    if key in checkpoint and isinstance(checkpoint[key], Mapping):
      checkpoint = checkpoint[key]
      break
  out = {}
  for k, v in checkpoint.items():
    if hasattr(v, "detach"):  # A torch tensor.
      v = v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
    if isinstance(v, np.ndarray) or np.isscalar(v):
      out[k[len("module."):] if k.startswith("module.") else k] = np.asarray(v)
  return out


def convert_state_dict(kind: str, state_dict: Mapping[str, Any],
                       mean_shape: np.ndarray | None = None) -> dict:
  """The conversion core: official {name: array} -> our model's pure state dict (int list keys).

  Args:
    kind: 'slpt', 'cmfa' or 'ssmer'.
    state_dict: official tensors as numpy arrays (any wrapping / "module." prefix is handled).
    mean_shape: (K, 2) in [0, 1]; required for slpt and cmfa.
  """
  state_dict = unwrap_state_dict(state_dict)
  if kind == "ssmer":
    return ssmer_from_torch(state_dict)
  if kind not in ("slpt", "cmfa"):
    raise ValueError(f"unknown kind {kind!r}; valid: {KINDS}")
  if mean_shape is None:
    raise ValueError(f"--kind={kind} needs the mean shape: official checkpoints do not contain it "
                     "(pass --mean_shape=init_98.npz, key init_face, in crop pixels)")
  return (slpt_from_torch if kind == "slpt" else cmfa_from_torch)(state_dict, mean_shape)


def load_mean_shape(path: str, image_size: float = 256.0) -> np.ndarray:
  """(K, 2) mean shape in [0, 1] from an .npz (key init_face) or .npy in pixels of the crop."""
  data = np.load(path)
  if isinstance(data, np.lib.npyio.NpzFile):
    if "init_face" not in data:
      raise ValueError(f"{path} has no init_face array (keys: {list(data.keys())})")
    data = data["init_face"]
  return np.asarray(data, np.float64).reshape(-1, 2) / image_size


# Our registered model of each official kind.
MODEL_OF_KIND = {"slpt": "rgb_slpt", "cmfa": "cmfa", "ssmer": "ssmer"}


def export_config(kind: str, converted: dict, image_size: int = 256) -> dict:
  """The config a converted model is exported with: its registered name and sizes (read from
  the converted arrays), float32, and the crop size and event rendering it expects."""
  from evalign_jax.events.images import RenderConfig

  if kind == "ssmer":
    sizes = dict(dim=converted["predictor"]["fc2"]["kernel"].shape[1],
                 pred_dim=converted["predictor"]["fc1"]["kernel"].shape[1])
  else:
    decoder = converted["decoder"] if kind == "slpt" else converted["event"]["decoder"]
    num_layers, d_model, ffn = decoder["layers"]["linear1"]["kernel"].shape
    sizes = dict(d_model=d_model, num_layers=num_layers, ffn_dim=ffn)
  config = {"model": MODEL_OF_KIND[kind], "model_size": {k: int(v) for k, v in sizes.items()},
            "dtype": "float32", "rgb_bn_train": False, "image_size": int(image_size),
            "render": dataclasses.asdict(RenderConfig())}
  if kind != "ssmer":
    config["num_landmarks"] = int(np.shape(converted["mean_shape"])[0])
  return config


def build_model(kind: str, converted: dict):
  """A model of the right size for `converted` (`checkpoint_io.update_from_pure_dict` then
  checks its layout and loads it).

  Built eagerly: with our numpy-drawn initialisers that takes a second or two, while
  `nnx.eval_shape` of these models is slow (flax's RNG counter updates under tracing).
  """
  from evalign_jax import models

  return models.build_model(export_config(kind, converted), converted.get("mean_shape"))


def main(argv):
  del argv
  from absl import app
  from absl import flags

  from evalign_jax import export
  from evalign_jax.models import checkpoint_io

  f = flags.FLAGS
  if os.path.exists(f.out):
    raise app.UsageError(f"--out={f.out} exists; give a new folder")
  import torch  # Only to read the .pth file.

  checkpoint = torch.load(f.checkpoint, map_location="cpu", weights_only=False)
  mean = load_mean_shape(f.mean_shape, f.image_size) if f.mean_shape else None
  converted = convert_state_dict(f.kind, checkpoint, mean)
  model = build_model(f.kind, converted)
  # Raises, naming the entries, if the converted state does not fit the model.
  checkpoint_io.update_from_pure_dict(model, converted)
  export.export(model, export_config(f.kind, converted, int(f.image_size)), f.out)
  print(f"wrote the {f.kind} model to {os.path.abspath(f.out)} (an export: state/, config.json)")


if __name__ == "__main__":
  from absl import app
  from absl import flags

  flags.DEFINE_enum("kind", None, list(KINDS), "Which official model the checkpoint holds.")
  flags.DEFINE_string("checkpoint", None, "Official .pth / .pth.tar file.")
  flags.DEFINE_string("out", None, "Output export folder (must not exist).")
  flags.DEFINE_string("mean_shape", None,
                      "npz (key init_face) or npy with the (K, 2) mean shape in crop pixels; "
                      "required for slpt and cmfa.")
  flags.DEFINE_float("image_size", 256.0, "The model's crop size, which the mean shape pixels "
                     "refer to.")
  flags.mark_flags_as_required(["kind", "checkpoint", "out"])
  app.run(main)
