"""SLPT (sparse local patch transformer), the landmark aligner CMFA builds on; NHWC, Flax NNX.

SLPT regresses 98 (K) landmarks in [0, 1] crop coordinates, (x, y), in three coarse-to-fine stages:

  1. anchors = mean shape (stage 1) or the last decoder layer of the previous stage (stop-gradient);
  2. around each anchor, a window of half-size 8 / 4 / 2 cells of a 64-cell grid (clamped to [0, 1])
     is sampled on a 7x7 grid, bilinearly with the align-corners convention, from the backbone's
     (H/4, W/4, 256) feature map; a 7x7 conv (one matmul over the flattened patch) makes one token
     per landmark;
  3. a 6-layer pre-norm decoder with learned landmark queries attends to the tokens (plus a learned
     structure encoding on the keys); LayerNorm + Linear(256 -> 2) of every layer's output is an
     offset inside the window: landmark = window_min + window_size * offset.

All stage weights are shared. SLPT's decoder layer is [self-attn, cross-attn, FFN]; with
`cross_modal=True` (CMFA's event branch, `cmfa.py`) it prepends a "modal" attention to the frozen
RGB branch's tokens (keys + RGB structure encoding): [modal-attn, self-attn, cross-attn, FFN].

Parameter layout. `SLPT` has `backbone`, `patch_embed`, `structure_encoding`, `decoder`, `out_layer`
and the non-trainable `mean_shape`. `RGBBranch` holds the first three (the tokeniser CMFA freezes),
`SparsePatchAligner` all five trainable ones. The decoder layers are stacked along a leading axis
of size num_layers and applied with `nnx.scan`.

Modes: `model.train()` / `model.eval()` (NNX's standard mechanism) switch dropout (`deterministic`)
and BatchNorm (`use_running_average`). Fresh models are in train mode, as NNX modules are.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from evalign_jax.models import initializers as inits
from evalign_jax.models.hrnet import BN_MOMENTUM
from evalign_jax.models.hrnet import HRNet
from evalign_jax.models.hrnet import hrnet_kernel_init
from evalign_jax.models.hrnet import torch_default_kernel_init

Dtype = jnp.dtype | type

LN_EPS = 1e-5
# How the decoder's landmark states start: "zeros" (the official SLPT), or "tokens": each
# landmark's own patch token (in CMFA, the frozen RGB branch's token).
DECODER_STATES = ("zeros", "tokens")
# HRNet conv init: "official" N(0, 0.001) (SLPT's `init_weights`) or "torch" (PyTorch's default).
BACKBONE_INITS = ("official", "torch")


class Buffer(nnx.Variable):
  """Non-trainable model state saved with checkpoints (a PyTorch buffer), e.g. the mean shape."""


# --------------------------------------------------------------------------------------------------
# Sparse local patches.
# --------------------------------------------------------------------------------------------------


def roi_sample_points(anchors: jax.Array, half_size: float, *, grid_size: int = 64,
                      sample_num: int = 7) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The sampling grid of each landmark's window.

  Args:
    anchors: (B, K, 2) window centres, (x, y) in [0, 1].
    half_size: half the window side in cells of a `grid_size` grid (8, 4, 2 in SLPT).
    grid_size: the grid the half size counts in (64: the feature map of a 256 crop).
    sample_num: samples per window side (7).

  Returns:
    points: (B, K, S, S, 2) sample positions (x, y) in [0, 1]; axis 2 runs along y, axis 3 along x
      (image orientation: the official patch after its (0, 3, 2, 1) permute).
    window_min: (B, K, 2) the window's lower corner after clamping to [0, 1].
    window_size: (B, K, 2) its side lengths after clamping.
  """
  half = half_size / grid_size
  lo = jnp.clip(anchors - half, 0.0, 1.0)
  hi = jnp.clip(anchors + half, 0.0, 1.0)
  size = hi - lo
  t = jnp.linspace(0.0, 1.0, sample_num, dtype=anchors.dtype)
  xs = lo[..., 0:1] + size[..., 0:1] * t  # (B, K, S)
  ys = lo[..., 1:2] + size[..., 1:2] * t
  s = sample_num
  points = jnp.stack([jnp.broadcast_to(xs[:, :, None, :], xs.shape[:2] + (s, s)),
                      jnp.broadcast_to(ys[:, :, :, None], ys.shape[:2] + (s, s))], axis=-1)
  return points, lo, size


def bilinear_sample(feature_map: jax.Array, points: jax.Array) -> jax.Array:
  """Bilinear lookup of feature vectors at normalised positions (the official interpolation_layer).

  A position p in [0, 1] maps to p * (size - 1) cells (align-corners), clamped to the map; the four
  corners are floor/ceil of that. Implemented as ONE gather of the 4 corner rows of a flattened
  (B*H*W, C) map, so the backward pass is one scatter-add of (B, N, 4, C) rows, in float32.

  Args:
    feature_map: (B, H, W, C).
    points: (B, N, 2) positions (x, y) in [0, 1] (outside values are clamped).

  Returns:
    (B, N, C) in the feature map's dtype.
  """
  b, h, w, c = feature_map.shape
  size = jnp.array([w - 1, h - 1], jnp.float32)
  xy = jnp.clip(points.astype(jnp.float32) * size, 0.0, size)
  lo = jnp.floor(xy)
  hi = jnp.ceil(xy)
  fx, fy = (xy - lo)[..., 0], (xy - lo)[..., 1]
  lo, hi = lo.astype(jnp.int32), hi.astype(jnp.int32)
  x0, y0, x1, y1 = lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]
  corners = jnp.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=-1)
  corners = corners + (jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None]
  weights = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
  # float32 rows: the backward pass scatter-adds up to ~50 contributions per cell, which bfloat16
  # would round at every add. Indices are clamped above, so the bounds check can go.
  rows = feature_map.astype(jnp.float32).reshape(b * h * w, c).at[corners].get(
      mode="promise_in_bounds")
  # Multiply-and-reduce (one fused loop), not a dot with a contraction of 4.
  out = jnp.sum(rows * weights[..., None], axis=2)
  return out.astype(feature_map.dtype)


def sample_patches(feature_map: jax.Array, points: jax.Array) -> jax.Array:
  """(B, H, W, C) map, (B, K, S, S, 2) points -> (B, K, S, S, C) patches."""
  b, k, s = points.shape[:3]
  return bilinear_sample(feature_map, points.reshape(b, k * s * s, 2)).reshape(b, k, s, s, -1)


class PatchEmbed(nnx.Module):
  """The 7x7 'feature_extractor' conv (no bias) on each patch, as one (S*S*C, D) matmul.

  `kernel` is (S, S, C, D) = (y, x, in, out), i.e. HWIO of a conv over the patch in image
  orientation.
  """

  def __init__(self, channels: int, d_model: int, sample_num: int = 7, *,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.kernel = nnx.Param(inits.xavier_uniform()(
        rngs.params(), (sample_num, sample_num, channels, d_model), param_dtype))
    self.dtype = dtype

  def __call__(self, patches: jax.Array) -> jax.Array:
    """(B, K, S, S, C) -> (B, K, D)."""
    b, k = patches.shape[:2]
    kernel = self.kernel[...].astype(self.dtype)
    flat = patches.astype(self.dtype).reshape(b, k, -1)
    return jnp.dot(flat, kernel.reshape(-1, kernel.shape[-1]))


def _embedding(rngs: nnx.Rngs, num_points: int, d_model: int, param_dtype) -> nnx.Param:
  # PyTorch xavier on the official (1, K, D) tensor: fan_in = K * D, fan_out = D.
  init = inits.xavier_uniform(fan_in=num_points * d_model, fan_out=d_model)
  return nnx.Param(init(rngs.params(), (num_points, d_model), param_dtype))


# --------------------------------------------------------------------------------------------------
# Decoder.
# --------------------------------------------------------------------------------------------------


def _dropout_masks(key: jax.Array, rate: float, shapes) -> list[jax.Array]:
  """Boolean keep-masks (P(keep) = 1 - rate) for several tensors from ONE random-bits draw.

  One draw per decoder layer instead of one per dropout site: far fewer RNG kernels to compile
  and launch. 16-bit uniforms resolve the keep probability to 1.5e-5.
  """
  sizes = [int(np.prod(s)) for s in shapes]
  bits = jax.random.bits(key, (sum(sizes),), jnp.uint16)
  keep = bits < np.uint16(min(round((1.0 - rate) * 65536), 65535))
  masks, start = [], 0
  for shape, size in zip(shapes, sizes):
    masks.append(keep[start:start + size].reshape(shape))
    start += size
  return masks


def _dropout(x: jax.Array, rate: float, keep: jax.Array | None) -> jax.Array:
  if keep is None:
    return x
  return jnp.where(keep, x * (1.0 / (1.0 - rate)), 0).astype(x.dtype)


class MultiHeadAttention(nnx.Module):
  """`torch.nn.MultiheadAttention` semantics, batch-first, with separate q/k/v projections.

  Dropout acts on the attention weights, as in PyTorch. Logits and softmax are float32.
  """

  def __init__(self, d_model: int, num_heads: int, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    # Xavier over PyTorch's stacked (3D, D) in-projection, biases zero, as nn.MultiheadAttention.
    qkv = dict(kernel_init=inits.xavier_uniform(fan_in=d_model, fan_out=3 * d_model),
               bias_init=inits.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.query = nnx.Linear(d_model, d_model, **qkv)
    self.key = nnx.Linear(d_model, d_model, **qkv)
    self.value = nnx.Linear(d_model, d_model, **qkv)
    self.out = nnx.Linear(d_model, d_model, kernel_init=inits.xavier_uniform(),
                          bias_init=inits.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.num_heads = num_heads
    self.dtype = dtype

  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array, *,
               dropout_rate: float = 0.0, dropout_mask: jax.Array | None = None) -> jax.Array:
    """(B, Lq, D), (B, Lk, D), (B, Lk, D) -> (B, Lq, D); weights are (B, heads, Lq, Lk).

    `dropout_mask` is a (B, heads, Lq, Lk) keep-mask for the attention weights, or None.
    """
    b, lq, d = query.shape
    h = self.num_heads
    q = self.query(query).reshape(b, lq, h, d // h)
    k = self.key(key).reshape(b, -1, h, d // h)
    v = self.value(value).reshape(b, -1, h, d // h)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits / np.sqrt(d // h), axis=-1)
    weights = _dropout(weights, dropout_rate, dropout_mask).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, lq, d)
    return self.out(out)


class DecoderLayer(nnx.Module):
  """One pre-norm decoder layer: [modal-attn (CMFA only)], self-attn, cross-attn, FFN.

  Sub-layer names (official numbering in brackets, SLPT / CMFA): modal_norm + modal_attn (- / norm1,
  modal_attn), self_norm + self_attn (norm1 / norm2, self_attn), cross_norm + cross_attn (norm2 /
  norm3, multihead_attn), ffn_norm + linear1 + linear2 (norm3 / norm4).
  """

  def __init__(self, d_model: int, num_heads: int, ffn_dim: int, *, cross_modal: bool,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    norm = lambda: nnx.LayerNorm(d_model, epsilon=LN_EPS, scale_init=inits.ones,
                                 bias_init=inits.zeros, **kw)
    if cross_modal:
      self.modal_norm = norm()
      self.modal_attn = MultiHeadAttention(d_model, num_heads, **kw)
    self.self_norm = norm()
    self.self_attn = MultiHeadAttention(d_model, num_heads, **kw)
    self.cross_norm = norm()
    self.cross_attn = MultiHeadAttention(d_model, num_heads, **kw)
    self.ffn_norm = norm()
    self.linear1 = nnx.Linear(d_model, ffn_dim, kernel_init=inits.xavier_uniform(),
                              bias_init=inits.torch_default_bias(d_model), **kw)
    self.linear2 = nnx.Linear(ffn_dim, d_model, kernel_init=inits.xavier_uniform(),
                              bias_init=inits.torch_default_bias(ffn_dim), **kw)
    self.cross_modal = cross_modal

  def __call__(self, tgt, query_pos, memory, memory_pos, ref=None, ref_pos=None, *,
               dropout_rate: float = 0.0, key: jax.Array | None = None):
    """Updates the (B, K, D) landmark states `tgt`.

    Args:
      tgt: (B, K, D) landmark states.
      query_pos: (1, K, D) landmark queries, added to every attention query.
      memory: (B, K, D) patch tokens (keys and values of the cross-attention).
      memory_pos: (1, K, D) structure encoding added to the memory keys.
      ref: (B, K, D) RGB patch tokens (CMFA's modal attention), else None.
      ref_pos: (1 or B, K, D) RGB structure encoding.
      dropout_rate: dropout probability; 0 or key None disables it.
      key: PRNG key for this layer's dropout masks.
    """
    b, k, d = tgt.shape
    heads = self.self_attn.num_heads
    # Sites in call order: [modal weights, modal out,] self weights, self out, cross weights,
    # cross out, FFN hidden, FFN out.
    shapes = ([(b, heads, k, ref.shape[1]), (b, k, d)] if self.cross_modal else []) + [
        (b, heads, k, k), (b, k, d), (b, heads, k, memory.shape[1]), (b, k, d),
        (b, k, self.linear1.out_features), (b, k, d)]
    masks = [None] * len(shapes) if key is None else _dropout_masks(key, dropout_rate, shapes)
    drop = lambda x: _dropout(x, dropout_rate, masks.pop(0))
    attn_kw = lambda: dict(dropout_rate=dropout_rate, dropout_mask=masks.pop(0))
    if self.cross_modal:
      x = self.modal_norm(tgt)
      tgt = tgt + drop(self.modal_attn(x + query_pos, ref + ref_pos, ref, **attn_kw()))
    x = self.self_norm(tgt)
    q = x + query_pos
    tgt = tgt + drop(self.self_attn(q, q, x, **attn_kw()))
    x = self.cross_norm(tgt)
    tgt = tgt + drop(self.cross_attn(x + query_pos, memory + memory_pos, memory, **attn_kw()))
    x = self.ffn_norm(tgt)
    x = self.linear2(drop(jax.nn.relu(self.linear1(x))))
    return tgt + drop(x)


def _stack_modules(modules: Sequence[nnx.Module]) -> nnx.Module:
  """One module whose variables are the given identical modules' variables stacked on axis 0."""
  graphdef, first = nnx.split(modules[0])
  states = [first] + [nnx.state(m) for m in modules[1:]]
  concrete = not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(states))
  stack = (lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs]))) if concrete else (
      lambda *xs: jnp.stack(xs))  # Host stacking: no per-shape device kernel when eager.
  return nnx.merge(graphdef, jax.tree.map(stack, *states))


class LandmarkDecoder(nnx.Module):
  """Learned landmark queries + a stack of pre-norm DecoderLayers + a final LayerNorm.

  The landmark queries are the query positional embedding. The content query (the landmark
  states) starts at zero as in the official SLPT (`decoder_state="zeros"`), or as each
  landmark's own patch token (`"tokens"`; in CMFA the RGB token): from zero states and the tiny
  Xavier queries, every landmark's first attention is uniform over all tokens, so a model
  trained from scratch first moves all landmarks together, for hundreds of steps. The final
  norm is applied to every layer's output (deep supervision, `return_intermediate=True`).
  """

  def __init__(self, num_points: int, d_model: int = 256, num_heads: int = 8, num_layers: int = 6,
               ffn_dim: int = 1024, dropout: float = 0.1, *, cross_modal: bool = False,
               decoder_state: str = "zeros", dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    if decoder_state not in DECODER_STATES:
      raise ValueError(f"decoder_state must be one of {DECODER_STATES}, got {decoder_state!r}")
    self.decoder_state = decoder_state
    self.landmark_query = _embedding(rngs, num_points, d_model, param_dtype)
    self.layers = _stack_modules([
        DecoderLayer(d_model, num_heads, ffn_dim, cross_modal=cross_modal, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs) for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(d_model, epsilon=LN_EPS, scale_init=inits.ones, bias_init=inits.zeros,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dropout_rng = rngs.dropout.fork()
    self.dropout = dropout
    self.num_layers = num_layers
    self.deterministic = False  # Set by model.train() / model.eval().
    self.dtype = dtype

  def __call__(self, tokens: jax.Array, structure_encoding: jax.Array, ref: jax.Array | None = None,
               ref_structure_encoding: jax.Array | None = None) -> jax.Array:
    """Decodes the landmark states.

    Args:
      tokens: (B, K, D) patch tokens.
      structure_encoding: (K, D) added to the token keys.
      ref: (B, K, D) RGB tokens for the cross-modal attention (CMFA), else None.
      ref_structure_encoding: (K, D) added to the RGB token keys.

    Returns:
      (B, num_layers, K, D) normalised outputs of every layer.
    """
    dt = self.dtype
    tokens = tokens.astype(dt)
    query_pos = self.landmark_query[...].astype(dt)[None]
    memory_pos = structure_encoding.astype(dt)[None]
    if ref is not None:
      ref, ref_structure_encoding = ref.astype(dt), ref_structure_encoding.astype(dt)[None]
    if self.decoder_state == "zeros":
      tgt = jnp.zeros(tokens.shape, dt)
    else:
      # CMFA starts from the frozen, trained RGB branch's tokens: its event tokens come from a
      # backbone that starts from SSMER or from scratch, not from what the decoder was taught.
      tgt = tokens if ref is None else ref
    rate = 0.0 if self.deterministic else self.dropout
    context = (query_pos, tokens, memory_pos, ref, ref_structure_encoding)

    if rate > 0.0:
      keys = jax.random.split(self.dropout_rng(), self.num_layers)

      @nnx.scan(in_axes=(nnx.Carry, 0, 0, None), out_axes=(nnx.Carry, 0))
      def run(x, layer, key, ctx):
        x = layer(x, *ctx, dropout_rate=rate, key=key)
        return x, x

      _, outs = run(tgt, self.layers, keys, context)
    else:

      @nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=(nnx.Carry, 0))
      def run(x, layer, ctx):
        x = layer(x, *ctx)
        return x, x

      _, outs = run(tgt, self.layers, context)
    return jnp.moveaxis(self.norm(outs), 0, 1)


# --------------------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------------------


def backbone_kernel_init(name: str):
  """The HRNet conv init called `name` (see BACKBONE_INITS).

  "official" (N(0, 0.001), then BatchNorm) makes the pre-BN activations tiny while the running
  variance starts at 1 and moves at momentum 0.01: for the first few hundred steps, eval mode
  then gives every image the same features. PyTorch's default init has no such lag.
  """
  if name not in BACKBONE_INITS:
    raise ValueError(f"backbone_init must be one of {BACKBONE_INITS}, got {name!r}")
  return hrnet_kernel_init if name == "official" else torch_default_kernel_init


class RGBBranch(nnx.Module):
  """CMFA's frozen RGB tokeniser: the SLPT backbone, patch conv and structure encoding."""

  def __init__(self, num_points: int, d_model: int = 256, sample_num: int = 7, *,
               backbone_width: int = 18, backbone_blocks: int = 4,
               backbone_init: str = "official", bn_momentum: float = BN_MOMENTUM,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.backbone = HRNet(d_model, width=backbone_width, num_blocks=backbone_blocks,
                          kernel_init=backbone_kernel_init(backbone_init),
                          bn_momentum=bn_momentum, **kw)
    self.patch_embed = PatchEmbed(d_model, d_model, sample_num, **kw)
    self.structure_encoding = _embedding(rngs, num_points, d_model, param_dtype)


class SparsePatchAligner(RGBBranch):
  """Backbone + patch tokens + landmark decoder + offset head: SLPT without its mean shape.

  CMFA's trainable event branch is one of these with `cross_modal=True`.
  """

  def __init__(self, num_points: int, d_model: int = 256, num_heads: int = 8, num_layers: int = 6,
               ffn_dim: int = 1024, dropout: float = 0.1, sample_num: int = 7, *,
               cross_modal: bool = False, backbone_width: int = 18, backbone_blocks: int = 4,
               backbone_init: str = "official", bn_momentum: float = BN_MOMENTUM,
               decoder_state: str = "zeros", dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    super().__init__(num_points, d_model, sample_num, backbone_width=backbone_width,
                     backbone_blocks=backbone_blocks, backbone_init=backbone_init,
                     bn_momentum=bn_momentum, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.decoder = LandmarkDecoder(num_points, d_model, num_heads, num_layers, ffn_dim, dropout,
                                   cross_modal=cross_modal, decoder_state=decoder_state,
                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # Offsets in float32: a bf16 offset would quantise landmarks to ~1e-3 of the window.
    self.out_layer = nnx.Linear(d_model, 2, kernel_init=inits.xavier_uniform(),
                                bias_init=inits.torch_default_bias(d_model), dtype=jnp.float32,
                                param_dtype=param_dtype, rngs=rngs)

  def offsets(self, tokens, ref=None, ref_structure_encoding=None) -> jax.Array:
    """(B, K, D) tokens -> (B, num_layers, K, 2) float32 offsets in window units."""
    feats = self.decoder(tokens, self.structure_encoding[...], ref, ref_structure_encoding)
    return self.out_layer(feats.astype(jnp.float32))


def mean_shape_buffer(mean_shape) -> Buffer:
  mean_shape = np.asarray(mean_shape, np.float32) if not isinstance(mean_shape, jax.Array) else (
      mean_shape.astype(jnp.float32))
  if mean_shape.ndim != 2 or mean_shape.shape[1] != 2:
    raise ValueError(f"mean_shape must be (num_points, 2) in [0, 1], got {mean_shape.shape}")
  return Buffer(jnp.asarray(mean_shape))


class SLPT(SparsePatchAligner):
  """SLPT: sparse local patch transformer, 3 stages x num_layers predictions of K landmarks.

  Used for RGB face alignment (the frozen branch CMFA builds on) and, on event images, as the
  event-only baseline.
  """

  def __init__(self, mean_shape, *, d_model: int = 256, num_heads: int = 8, num_layers: int = 6,
               ffn_dim: int = 1024, dropout: float = 0.1, half_sizes: Sequence[float] = (8, 4, 2),
               grid_size: int = 64, sample_num: int = 7, backbone_width: int = 18,
               backbone_blocks: int = 4, backbone_init: str = "official",
               bn_momentum: float = BN_MOMENTUM, decoder_state: str = "zeros",
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds SLPT.

    Args:
      mean_shape: (K, 2) initial landmarks, (x, y) in [0, 1] of the crop (the trainers compute it
        from the training labels). Stored as a non-trainable `Buffer`, so it is checkpointed.
      d_model, num_heads, num_layers, ffn_dim, dropout: decoder size (256, 8, 6, 1024, 0.1).
      half_sizes: window half-size per stage, in cells of `grid_size` (8, 4, 2).
      grid_size: the grid the half sizes count in (64).
      sample_num: samples per window side (7).
      backbone_width, backbone_blocks: HRNet size (18, 4; smaller only for tests).
      backbone_init: HRNet conv init, "official" or "torch" (`backbone_kernel_init`).
      bn_momentum: the backbone's BatchNorm momentum (Flax terms; `HRNet`).
      decoder_state: how the landmark states start, "zeros" (official) or "tokens"
        (`LandmarkDecoder`).
      dtype: computation dtype (e.g. jnp.bfloat16); landmarks are always float32.
      param_dtype: parameter dtype.
      rngs: `params` (init) and `dropout` streams (either falls back to `default`).
    """
    mean = mean_shape_buffer(mean_shape)
    super().__init__(mean.shape[0], d_model, num_heads, num_layers, ffn_dim, dropout, sample_num,
                     cross_modal=False, backbone_width=backbone_width,
                     backbone_blocks=backbone_blocks, backbone_init=backbone_init,
                     bn_momentum=bn_momentum, decoder_state=decoder_state, dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.mean_shape = mean
    self.half_sizes = tuple(float(h) for h in half_sizes)
    self.grid_size = grid_size
    self.sample_num = sample_num

  def __call__(self, image: jax.Array) -> jax.Array:
    """(B, H, W, 3) normalised crop -> (B, stages, num_layers, K, 2) float32 landmarks in [0, 1]."""
    feature_map = self.backbone(image)
    anchors = jnp.broadcast_to(self.mean_shape[...], (image.shape[0],) + self.mean_shape.shape)
    stages = []
    for half in self.half_sizes:  # Unrolled: 3 stages with shared weights.
      points, lo, size = roi_sample_points(jax.lax.stop_gradient(anchors), half,
                                           grid_size=self.grid_size, sample_num=self.sample_num)
      tokens = self.patch_embed(sample_patches(feature_map, points))
      landmarks = lo[:, None] + size[:, None] * self.offsets(tokens)
      stages.append(landmarks)
      anchors = landmarks[:, -1]
    return jnp.stack(stages, axis=1)
