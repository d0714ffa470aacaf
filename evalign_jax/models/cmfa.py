"""CMFA (cross-modal fusion attention): an event SLPT whose decoder first attends to RGB tokens.

Two branches on a pair of spatially aligned crops (same 98 (K) landmarks, same coarse-to-fine
stages and windows as SLPT, `slpt.py`):

- `rgb`: an `RGBBranch` (backbone, patch conv, structure encoding: the same names as in SLPT,
  so `rgb_branch_from_slpt` copies a trained SLPT's), frozen: its tokens and structure encoding
  are stop-gradient, and its BatchNorm runs in eval mode unless `rgb_bn_train`;
- `event`: a `SparsePatchAligner` with a cross-modal decoder, whose every layer is
  [modal-attn to the RGB tokens (+ RGB structure encoding on the keys), self-attn, cross-attn to
  the event tokens, FFN].

`CMFA.frozen_filter` selects `rgb`; `CMFA.trainable_filter` is every other Param (what the
optimiser updates). `mean_shape` is a non-trainable `Buffer`, as in SLPT.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from evalign_jax.models.hrnet import BN_MOMENTUM
from evalign_jax.models.slpt import SLPT
from evalign_jax.models.slpt import Dtype
from evalign_jax.models.slpt import RGBBranch
from evalign_jax.models.slpt import SparsePatchAligner
from evalign_jax.models.slpt import mean_shape_buffer
from evalign_jax.models.slpt import roi_sample_points
from evalign_jax.models.slpt import sample_patches


def _in_rgb_branch(path, _) -> bool:
  return bool(path) and path[0] == "rgb"


class CMFA(nnx.Module):
  """CMFA: an event-image SLPT whose decoder layers first attend to a frozen RGB SLPT's tokens."""

  # NNX filters: everything in the frozen RGB branch (params and BatchNorm statistics), and the
  # params the optimiser updates. E.g. nnx.Optimizer(model, tx, wrt=CMFA.trainable_filter).
  frozen_filter = staticmethod(_in_rgb_branch)
  trainable_filter = nnx.All(nnx.Param, nnx.Not(_in_rgb_branch))

  def __init__(self, mean_shape, *, d_model: int = 256, num_heads: int = 8, num_layers: int = 6,
               ffn_dim: int = 1024, dropout: float = 0.1, half_sizes: Sequence[float] = (8, 4, 2),
               grid_size: int = 64, sample_num: int = 7, backbone_width: int = 18,
               backbone_blocks: int = 4, backbone_init: str = "official",
               bn_momentum: float = BN_MOMENTUM, decoder_state: str = "zeros",
               rgb_bn_train: bool = False,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds CMFA.

    Args:
      mean_shape: (K, 2) initial landmarks in [0, 1] (see SLPT).
      rgb_bn_train: False (default, clean): the frozen RGB backbone's BatchNorm always runs in eval
        mode. True reproduces the official code, where the "frozen" backbone stays in train mode in
        training: batch statistics normalise and the running statistics keep updating.
      Other args: as SLPT; they apply to both branches.
    """
    mean = mean_shape_buffer(mean_shape)
    k = mean.shape[0]
    kw = dict(backbone_width=backbone_width, backbone_blocks=backbone_blocks,
              backbone_init=backbone_init, bn_momentum=bn_momentum, dtype=dtype,
              param_dtype=param_dtype, rngs=rngs)
    self.rgb = RGBBranch(k, d_model, sample_num, **kw)
    self.event = SparsePatchAligner(k, d_model, num_heads, num_layers, ffn_dim, dropout, sample_num,
                                    cross_modal=True, decoder_state=decoder_state, **kw)
    self.mean_shape = mean
    self.half_sizes = tuple(float(h) for h in half_sizes)
    self.grid_size = grid_size
    self.sample_num = sample_num
    self.rgb_bn_train = rgb_bn_train

  def __call__(self, rgb: jax.Array, events: jax.Array) -> jax.Array:
    """Aligns landmarks on a pair of spatially aligned crops.

    Args:
      rgb: (B, H, W, 3) normalised RGB crop.
      events: (B, H, W, 3) normalised event-representation image of the same crop.

    Returns:
      (B, stages, num_layers, K, 2) landmarks, (x, y) in [0, 1] of the crop, float32.
    """
    rgb_map = self.rgb.backbone(rgb, use_running_average=None if self.rgb_bn_train else True)
    event_map = self.event.backbone(events)
    # The RGB branch is frozen: gradients stop at its tokens and structure encoding, so no
    # backward pass runs through it whatever the caller differentiates.
    rgb_pos = jax.lax.stop_gradient(self.rgb.structure_encoding[...])
    anchors = jnp.broadcast_to(self.mean_shape[...], (rgb.shape[0],) + self.mean_shape.shape)
    stages = []
    for half in self.half_sizes:
      points, lo, size = roi_sample_points(jax.lax.stop_gradient(anchors), half,
                                           grid_size=self.grid_size, sample_num=self.sample_num)
      rgb_tokens = jax.lax.stop_gradient(self.rgb.patch_embed(sample_patches(rgb_map, points)))
      event_tokens = self.event.patch_embed(sample_patches(event_map, points))
      offsets = self.event.offsets(event_tokens, rgb_tokens, rgb_pos)
      landmarks = lo[:, None] + size[:, None] * offsets
      stages.append(landmarks)
      anchors = landmarks[:, -1]
    return jnp.stack(stages, axis=1)


def rgb_branch_from_slpt(cmfa: CMFA, slpt: SLPT) -> None:
  """Copies an (RGB-trained) SLPT's backbone, patch conv and structure encoding into `cmfa.rgb`.

  Includes the backbone's BatchNorm statistics. The SLPT decoder is not used (the official CMFA
  does not load it either: its layer names differ).
  """
  nnx.update(cmfa.rgb.backbone, nnx.state(slpt.backbone))
  nnx.update(cmfa.rgb.patch_embed, nnx.state(slpt.patch_embed))
  cmfa.rgb.structure_encoding[...] = slpt.structure_encoding[...]


def aligner_from_slpt(target: SLPT | CMFA, slpt: SLPT) -> None:
  """Starts a trainable aligner from a trained SLPT (e.g. the RGB SLPT CMFA is built on).

  SLPT: every weight but the mean shape (the target keeps its own dataset's). CMFA's event
  branch: the backbone, patch conv, structure encoding, landmark queries, decoder and offset
  head. Each layer's modal attention (to the RGB tokens) starts as the SLPT's cross-attention
  (to its own tokens, RGB ones for an RGB SLPT), and the output projection of the
  cross-attention to the event tokens starts at zero: with `decoder_state="tokens"` the fresh
  CMFA then predicts about what the SLPT predicts from the RGB crop (the layer's attentions
  run in another order), and training teaches it what the events add.
  """
  if isinstance(target, SLPT):
    mean = target.mean_shape[...]
    nnx.update(target, nnx.state(slpt))
    target.mean_shape[...] = mean
    return
  event = target.event
  for name in ("backbone", "patch_embed", "out_layer"):
    nnx.update(getattr(event, name), nnx.state(getattr(slpt, name)))
  event.structure_encoding[...] = slpt.structure_encoding[...]
  decoder, source = event.decoder, slpt.decoder
  decoder.landmark_query[...] = source.landmark_query[...]
  nnx.update(decoder.norm, nnx.state(source.norm))
  for name in ("self_norm", "self_attn", "cross_norm", "cross_attn", "ffn_norm", "linear1",
               "linear2"):
    nnx.update(getattr(decoder.layers, name), nnx.state(getattr(source.layers, name)))
  nnx.update(decoder.layers.modal_norm, nnx.state(source.layers.cross_norm))
  nnx.update(decoder.layers.modal_attn, nnx.state(source.layers.cross_attn))
  out = decoder.layers.cross_attn.out
  out.kernel[...] = jnp.zeros_like(out.kernel[...])
  out.bias[...] = jnp.zeros_like(out.bias[...])
