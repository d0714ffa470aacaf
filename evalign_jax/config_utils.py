"""Helpers for ml_collections configs: variant strings such as `configs/x.py:runlocal,seed=3`."""

from __future__ import annotations

import ast

import ml_collections


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
      raise ValueError(f"unknown config variant {key!r}; valid: {sorted(defaults)}")
    if not eq:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config variant {key!r} needs a value: {key}=...")
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
  c.eval_every = 500
  c.checkpoint = dict(every=500, keep=2)
  c.render = dict(kind="frame", num_bins=5, convention="e2vid", tau_us=30_000.0)
  return c


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads and locks `configs/<file>.py[:variant]` (relative to the repository) like --config."""
  import importlib.util   # pylint: disable=g-import-not-at-top
  import os   # pylint: disable=g-import-not-at-top
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


def alignment_training(stage: str, model: str, *, runlocal: bool, batch_size: int,
                       num_epochs: int, lr: float) -> ml_collections.ConfigDict:
  """The supervised alignment stages' config (rgb_slpt, cmfa, slpt_event).

  runlocal: the small dataset, 64 px crops and a reduced decoder and backbone (one block per
  HRNet branch, 2 decoder layers of width 128) so 2 CPU cores can train it; clearly not the
  paper's model.
  """
  c = training_base(stage)
  c.model = model
  c.num_landmarks = 98
  c.image_size = 256
  c.batch_size = batch_size
  c.eval_batch_size = 32
  c.num_epochs = num_epochs
  c.val_split = "validation"
  c.optimizer = dict(lr=lr, decay_epochs=(120, 140))
  c.loss = dict(stage_weights=(0.2, 0.3, 0.5))
  c.model_size = dict(d_model=256, num_heads=8, num_layers=6, ffn_dim=1024)
  c.rgb_bn_train = False
  # Workdirs or export folders of earlier stages (cmfa needs rgb_from; event_from is SSMER).
  c.init = dict(event_from="", rgb_from="")
  if runlocal:
    c.dataset = "synthetic_faces/small"
    c.image_size = 64
    c.model_size = dict(d_model=128, num_heads=4, num_layers=2, ffn_dim=256, backbone_blocks=1)
    c.batch_size, c.eval_batch_size = 8, 16
    c.total_steps = 150
    c.log_every, c.eval_every = 25, 150
    c.checkpoint.every = 150
    c.optimizer.lr = 1e-3
  return c
