"""Models by name: what `config.model` selects, how a config sizes it and what it takes as input.

A config (a stage's ConfigDict, or the `config.json` of an export) names the model in `model`,
its sizes in `model_size` (keyword arguments of the class, e.g. d_model, num_layers,
backbone_blocks) and the compute dtype in `dtype` ("float32" or "bfloat16"; parameters stay
float32). `build_model(config, mean_shape)` makes a fresh one; a new variant is added by
registering it here, not by editing the trainers.

Imports only jax and flax, so models build where no data stack is installed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from evalign_jax.models.cmfa import CMFA
from evalign_jax.models.simsiam import SimSiam
from evalign_jax.models.slpt import SLPT

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model.

  Attributes:
    build: (mean_shape, config, dtype, rngs) -> a fresh nnx.Module; mean_shape is None for
      models without one.
    inputs: the model's positional inputs, by name: "rgb" (the ImageNet-normalised RGB crop),
      "events" (the rendered event image of the same crop) or "views" (SSMER's event views).
    landmarks: whether it predicts (B, stages, layers, K, 2) landmarks in [0, 1] of the crop.
    trainable: the nnx filter of what training differentiates and updates.
  """

  build: Callable[..., nnx.Module]
  inputs: tuple[str, ...]
  landmarks: bool = True
  trainable: object = nnx.Param


def _sizes(config: Mapping) -> dict:
  return dict(config.get("model_size") or {})


def _slpt(mean_shape, config, dtype, rngs):
  return SLPT(mean_shape, dtype=dtype, rngs=rngs, **_sizes(config))


def _cmfa(mean_shape, config, dtype, rngs):
  return CMFA(mean_shape, rgb_bn_train=config["rgb_bn_train"], dtype=dtype, rngs=rngs,
              **_sizes(config))


def _simsiam(mean_shape, config, dtype, rngs):
  del mean_shape
  return SimSiam(dtype=dtype, rngs=rngs, **_sizes(config))


MODELS: dict[str, ModelSpec] = {
    # SLPT on RGB crops: CMFA's frozen branch.
    "rgb_slpt": ModelSpec(_slpt, inputs=("rgb",)),
    # The same SLPT on event images: the no-CMFA ablation.
    "slpt_event": ModelSpec(_slpt, inputs=("events",)),
    "cmfa": ModelSpec(_cmfa, inputs=("rgb", "events"), trainable=CMFA.trainable_filter),
    # SSMER's SimSiam: an event encoder, no landmarks.
    "ssmer": ModelSpec(_simsiam, inputs=("views",), landmarks=False),
}

LANDMARK_MODELS = tuple(name for name, spec in MODELS.items() if spec.landmarks)


def model_spec(name: str) -> ModelSpec:
  """The registered model `name`; an unknown name raises with the valid ones."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
  return MODELS[name]


def compute_dtype(name: str):
  """"float32" or "bfloat16" -> the jnp dtype."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"unknown dtype {name!r}; valid: {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def build_model(config: Mapping, mean_shape: np.ndarray | None = None,
                seed: int = 0) -> nnx.Module:
  """A fresh model of `config["model"]`, sized by `config["model_size"]`, computing in
  `config["dtype"]`.

  Args:
    config: a stage config or an exported config.json (a mapping).
    mean_shape: (K, 2) initial landmarks in [0, 1] of the crop, for the landmark models (an
      export's real one is in its state: loading passes zeros of the right shape).
    seed: of the initialisers and dropout.
  """
  spec = model_spec(config["model"])
  if spec.landmarks and mean_shape is None:
    raise ValueError(f"a {config['model']} model needs a mean shape")
  return spec.build(mean_shape, config, compute_dtype(config.get("dtype", "float32")),
                    nnx.Rngs(seed))
