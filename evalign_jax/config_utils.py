"""Helpers for ml_collections configs: variant strings such as `configs/x.py:runlocal,seed=3`,
the fields the training stages share, and the three sizes every training config comes in:

  (default)  the paper's: full models, 256 px (224 for SSMER), the full dataset;
  runlocal   small enough for 2 CPU cores: synthetic_faces/small, 64 px crops, one block per
             HRNet branch, 5x5 patches, a 2-layer 64-wide decoder, and a start that learns in
             hundreds of steps (`RUNLOCAL_MODEL_SIZE`); clearly not the paper's model;
  tiny       the test size: synthetic_faces/tiny, 32 px, 2 steps of batch 2, the smallest
             models that still have every part (`TINY_MODEL_SIZE`, `TINY_SSMER_SIZE`).
"""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

# The runlocal variant's models. A 64 px crop gives a 16x16 feature map, on which the paper's
# 7x7 samples per window (6 of them inside one cell in stage 3) and 256-wide tokens would cost
# more than the backbone: 5x5 samples and 64-wide tokens keep the patch path in proportion.
# PyTorch's default backbone init (eval-mode BatchNorm then still sees the image) and decoder
# states that start as each landmark's own token (`models/slpt.py`: off SLPT's symmetric start,
# where every landmark moves alike) let a short run learn (tests/trainers/test_learning.py);
# the paper's sizes keep the official init and states.
RUNLOCAL_MODEL_SIZE = dict(d_model=64, num_heads=4, num_layers=2, ffn_dim=128, sample_num=5,
                           backbone_blocks=1, backbone_init="torch", decoder_state="tokens")
# The tiny variant's models: 2 decoder layers (so the layer stack is exercised), HRNet width 4.
TINY_MODEL_SIZE = dict(d_model=32, num_heads=2, num_layers=2, ffn_dim=32, backbone_width=4,
                       backbone_blocks=1)
TINY_SSMER_SIZE = dict(dim=32, pred_dim=16, backbone_width=4, backbone_blocks=1)


class ConfigError(ValueError):
  """A config that cannot run: a mistyped variant, a missing or wrong `init` export, ...

  The entry point prints its message as one line and exits non-zero.
  """


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config variant string into a locked ConfigDict of the given defaults.

  `"runlocal"` sets a boolean default to True; `"name=value"` sets any default, the value parsed
  as a Python literal when it is one. Unknown names raise with the list of valid ones, so a typo
  fails loudly.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, eq, raw = item.partition("=")
    if key not in defaults:
      raise ConfigError(f"unknown config variant {key!r}; valid: {sorted(defaults)}")
    if not eq:
      if not isinstance(defaults[key], bool):
        raise ConfigError(f"config variant {key!r} needs a value: {key}=...")
      value = True
    else:
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = raw
    out[key] = type(defaults[key])(value) if defaults[key] is not None else value
  out.lock()
  return out


def training_base(stage: str, *, dataset: str = "synthetic_faces") -> ml_collections.ConfigDict:
  """Fields every training stage has (data, devices, logging, checkpoints, precision)."""
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.dataset = dataset                  # name or name/config; built on first use if absent
  c.data_dir = "~/evalign_data"
  c.seed = 0
  c.num_workers = 0                    # grain worker processes
  # Mixed precision: "bfloat16" runs convolutions, matmuls and activations in bf16 while the
  # parameters, their gradients and the optimizer state stay float32 (BatchNorm statistics,
  # attention softmax and the loss are float32 too). "float32" everywhere is the default.
  c.dtype = "float32"
  # Devices: axes `data` (batch split) and `fsdp` (batch split + parameters and optimizer state
  # split); -1 is "the devices the other axis leaves". See evalign_jax/sharding.py.
  c.mesh = dict(data=-1, fsdp=1)
  # batch_size is the global batch (all processes); with grad_accum_steps = A each step runs A
  # passes of batch_size / A examples and applies their mean gradient once (BatchNorm then sees
  # the smaller batches).
  c.grad_accum_steps = 1
  c.total_steps = 0                    # 0: num_epochs x steps per epoch
  c.log_every = 20
  # The latest `keep` steps are kept, and the best by `best_metric` (a logged evaluator
  # metric, lower is better; "" for none) in best/, which is also what the stage exports.
  c.checkpoint = dict(every=500, keep=2, best_metric="")
  # Evaluators, run every `every` steps and at the end (see evalign_jax/evaluators/registry.py).
  c.evals = ml_collections.ConfigDict()
  c.render = dict(kind="frame", num_bins=5, convention="e2vid", tau_us=30_000.0)
  return c


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads and locks `configs/<file>.py[:variant]` (relative to the repository) like --config."""
  path, _, variant = spec.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{spec}: no such config file")
  module_spec = importlib.util.spec_from_file_location("_evalign_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant or None)
  config.lock()   # as --config does: a mistyped field is an error
  return config


def alignment_training(stage: str, model: str, *, size: str, batch_size: int,
                       num_epochs: int, lr: float) -> ml_collections.ConfigDict:
  """The supervised alignment stages' config (rgb_slpt, cmfa, slpt_event).

  size: "paper", "runlocal" or "tiny" (see the module docstring).
  """
  c = training_base(stage)
  c.model = model
  c.num_landmarks = 0                  # 0: the dataset's (98 WFLW, 5 E-SIE / FES), set by training
  c.image_size = 256
  c.batch_size = batch_size
  c.num_epochs = num_epochs
  c.optimizer = dict(lr=lr, decay_epochs=(120, 140))
  c.loss = dict(stage_weights=(0.2, 0.3, 0.5))
  c.model_size = dict(d_model=256, num_heads=8, num_layers=6, ffn_dim=1024)
  c.rgb_bn_train = False
  # Workdirs or export folders of earlier stages, or shipped weights ("pretrained:<name>",
  # evalign_jax/pretrained/): rgb_from, the frozen RGB SLPT (cmfa needs it); event_from, an
  # SSMER encoder for the event backbone; aligner_from, an SLPT whose weights start the
  # trained aligner (the whole SLPT, or CMFA's event branch: `models.aligner_from_slpt`).
  c.init = dict(event_from="", rgb_from="", aligner_from="")
  # Validation: NME on the validation split, and a picture of the first crops' predictions.
  c.evals.val = dict(type="landmarks", split="validation", every=500, batch_size=32,
                     norm="auto", paper_variant=False, pictures=("predictions",),
                     num_pictures=8)
  c.checkpoint.best_metric = "val_nme"
  if size in ("runlocal", "tiny"):
    c.dataset = "synthetic_faces/small"
    c.image_size = 64
    c.model_size = dict(RUNLOCAL_MODEL_SIZE)
    c.batch_size = 8
    c.evals.val.batch_size = 16
    c.total_steps = 150
    c.log_every = 25
    c.evals.val.every = c.checkpoint.every = 150
    c.optimizer.lr = 1e-3
  if size == "tiny":
    shrink_to_tiny(c)
  return c


def shrink_to_tiny(c: ml_collections.ConfigDict) -> None:
  """Sets a training config to the tiny size (see the module docstring), in place."""
  c.dataset = "synthetic_faces/tiny"
  c.image_size = 32
  c.batch_size = 2
  c.total_steps = 2
  c.log_every = 1
  c.checkpoint.every = 2
  c.model_size = dict(TINY_SSMER_SIZE if c.model == "ssmer" else TINY_MODEL_SIZE)
  for entry in c.evals.values():
    entry.batch_size, entry.every = 2, 2


def size_variant(arg) -> str:
  """The size a parsed variant asks for: "tiny", "runlocal" or "paper"."""
  if arg.runlocal and arg.tiny:
    raise ConfigError("choose one of the variants runlocal and tiny")
  return "tiny" if arg.tiny else "runlocal" if arg.runlocal else "paper"
