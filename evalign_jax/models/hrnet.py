"""The reduced HRNet-W18 backbone of SLPT / CMFA / SSMER, NHWC.

Architecture (as the official `backbone/HRnet.py` with its default config): a stride-4 stem,
layer1 = 4 Bottlenecks (64 -> 256 channels), then stages 2/3/4 with ONE high-resolution module each
(4 BASIC blocks per branch, branch widths w, 2w, 4w, 8w with w = 18, SUM fusion with bilinear
upsampling), and a head that upsamples every branch to 1/4 resolution, concatenates them
(15w = 270 channels), and applies conv1x1 270->270 + BN + ReLU and conv1x1 270->`head_channels`.
A 256x256 input gives a (64, 64, head_channels) feature map.

The module tree mirrors the official `nn.Sequential` nesting, so a PyTorch state-dict name maps to
an NNX state path by index: a `Sequential(Conv2d, BatchNorm2d[, ReLU])` is a `ConvBN` (`.0` ->
`conv`, `.1` -> `bn`), and `None` entries of the official `ModuleList`s are `None` here as well
(see `evalign_jax.tools.import_torch`).

Train / eval mode: the standard NNX mechanism. `model.train()` / `model.eval()` set every
BatchNorm's `use_running_average` attribute; `HRNet.__call__(x, use_running_average=...)` overrides
it for one call (CMFA uses that to keep a frozen backbone in eval mode while the rest of the model
trains).
BatchNorm momentum is 0.99 in Flax terms (PyTorch 0.01), eps 1e-5. One known difference: PyTorch
updates `running_var` with the unbiased batch variance, Flax with the biased one (a factor n/(n-1),
n = batch x height x width >= 512 at 256 px: at most 0.2 %, on the 8x8 branch of a batch of 8).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from evalign_jax.models import batchnorm
from evalign_jax.models import initializers as inits

Dtype = jnp.dtype | type
Initializer = Callable[..., jax.Array]

BN_MOMENTUM = 0.99  # PyTorch momentum 0.01.
BN_EPS = 1e-5

# Official `init_weights`: every conv N(0, 0.001), BatchNorm (1, 0).
hrnet_kernel_init = inits.normal(0.001)
# PyTorch's default conv init; SSMER trains its encoder from it (`HRNetSimSiam` never calls
# `init_weights`).
torch_default_kernel_init = inits.torch_default_kernel()


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) weights of 1-D linear resizing with half-pixel centres, as PyTorch
  `F.interpolate(mode='bilinear', align_corners=False)`: source = (i + 0.5) * in / out - 0.5,
  clamped at 0 below and to the last sample above."""
  src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, size_in - 1)
  frac = src - lo
  m = np.zeros((size_out, size_in))
  np.add.at(m, (np.arange(size_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(size_out), hi), frac)
  return m


def upsample_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of (B, h, w, C) to (B, height, width, C) as PyTorch (align_corners=False).

  Two small constant matmuls (separable weights): exact PyTorch semantics for any scale, and a
  much smaller graph to compile than `jax.image.resize`.
  """
  if x.shape[1:3] == (height, width):
    return x
  rows = jnp.asarray(bilinear_matrix(x.shape[1], height), x.dtype)
  cols = jnp.asarray(bilinear_matrix(x.shape[2], width), x.dtype)
  return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` (NHWC, HWIO) with 1x1 stride-1 convolutions as a channel matmul.

  Same result; but XLA:CPU computes a 1x1 convolution's weight gradient about 10x slower than
  the equivalent dot, and HRNet's bottlenecks, fuse layers and head are mostly 1x1.
  """
  plain = lambda v: v is None or all(d == 1 for d in v)
  no_pad = padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding)
  if (rhs.shape[:2] == (1, 1) and all(s == 1 for s in window_strides) and no_pad
      and plain(lhs_dilation) and plain(rhs_dilation) and feature_group_count == 1):
    kwargs.pop("out_sharding", None)
    return jnp.dot(lhs, rhs[0, 0], precision=precision, **kwargs)
  return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      precision=precision, **kwargs)


def Conv(*args, **kwargs) -> nnx.Conv:   # pylint: disable=invalid-name
  return nnx.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)


def _bn(features: int, *, dtype, param_dtype, rngs) -> nnx.BatchNorm:
  # Two-pass variance: robust for activations whose mean is large relative to their spread.
  return batchnorm.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                             use_fast_variance=False, scale_init=inits.ones,
                             bias_init=inits.zeros, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)


class ConvBN(nnx.Module):
  """Conv (no bias, 'same' zero padding k//2) + BatchNorm (+ ReLU): one official Sequential."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
               relu: bool = True, *, kernel_init: Initializer = hrnet_kernel_init,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    pad = kernel_size // 2
    # Explicit symmetric padding: 'SAME' would pad (0, 1) at stride 2 and shift the grid vs PyTorch.
    self.conv = Conv(in_channels, out_channels, (kernel_size, kernel_size), strides=stride,
                         padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=kernel_init,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.bn = _bn(out_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    x = self.bn(self.conv(x), use_running_average=use_running_average)
    return jax.nn.relu(x) if self.relu else x


def _apply_chain(modules, x, use_running_average):
  for m in modules:
    x = m(x, use_running_average)
  return x


class BasicBlock(nnx.Module):
  """Two 3x3 ConvBNs with an identity residual (widths never change inside HRNet branches)."""

  def __init__(self, channels: int, *, kernel_init, dtype, param_dtype, rngs):
    kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    pad = ((1, 1), (1, 1))
    self.conv1 = Conv(channels, channels, (3, 3), padding=pad, use_bias=False, **kw)
    self.bn1 = _bn(channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv2 = Conv(channels, channels, (3, 3), padding=pad, use_bias=False, **kw)
    self.bn2 = _bn(channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x, use_running_average=None):
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=use_running_average))
    y = self.bn2(self.conv2(y), use_running_average=use_running_average)
    return jax.nn.relu(y + x)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 -> 1x1 (x4 expansion) with a projection shortcut when the width changes."""

  def __init__(self, in_channels: int, planes: int, *, kernel_init, dtype, param_dtype, rngs):
    kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    out = planes * 4
    self.conv1 = Conv(in_channels, planes, (1, 1), use_bias=False, **kw)
    self.bn1 = _bn(planes, **bkw)
    self.conv2 = Conv(planes, planes, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, **kw)
    self.bn2 = _bn(planes, **bkw)
    self.conv3 = Conv(planes, out, (1, 1), use_bias=False, **kw)
    self.bn3 = _bn(out, **bkw)
    self.downsample = (ConvBN(in_channels, out, 1, 1, relu=False, **kw)
                       if in_channels != out else None)

  def __call__(self, x, use_running_average=None):
    ura = use_running_average
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=ura))
    y = self.bn3(self.conv3(y), use_running_average=ura)
    shortcut = x if self.downsample is None else self.downsample(x, ura)
    return jax.nn.relu(y + shortcut)


class HighResolutionModule(nnx.Module):
  """Parallel BASIC-block branches followed by the all-to-all SUM fusion.

  `fuse_layers[i][j]` maps branch j to branch i's resolution and width: j > i is a 1x1 ConvBN at j's
  (lower) resolution followed by bilinear upsampling; j < i is a chain of i - j stride-2 3x3 ConvBNs
  (ReLU between them, none after the last); j == i is the identity (None).
  """

  def __init__(self, channels: Sequence[int], num_blocks: int, *, kernel_init, dtype, param_dtype,
               rngs):
    kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    n = len(channels)
    self.branches = nnx.List([
        nnx.List([BasicBlock(c, **kw) for _ in range(num_blocks)]) for c in channels])
    fuse = []
    for i in range(n):
      row = []
      for j in range(n):
        if j > i:
          row.append(ConvBN(channels[j], channels[i], 1, 1, relu=False, **kw))
        elif j == i:
          row.append(None)
        else:
          steps = [ConvBN(channels[j], channels[j], 3, 2, relu=True, **kw)
                   for _ in range(i - j - 1)]
          steps.append(ConvBN(channels[j], channels[i], 3, 2, relu=False, **kw))
          row.append(nnx.List(steps))
      fuse.append(nnx.List(row))
    self.fuse_layers = nnx.List(fuse)

  def __call__(self, xs: list[jax.Array], use_running_average=None) -> list[jax.Array]:
    ura = use_running_average
    xs = [_apply_chain(blocks, x, ura) for blocks, x in zip(self.branches, xs)]
    out = []
    for i, row in enumerate(self.fuse_layers):
      h, w = xs[i].shape[1:3]
      y = None
      for j, layer in enumerate(row):
        if j == i:
          t = xs[j]
        elif j > i:
          t = upsample_bilinear(layer(xs[j], ura), h, w)
        else:
          t = _apply_chain(layer, xs[j], ura)
        y = t if y is None else y + t
      out.append(jax.nn.relu(y))
    return out


class HRNetHead(nnx.Module):
  """Concat of all branches at 1/4 resolution -> conv1x1 + BN + ReLU -> conv1x1 (both with bias).

  `conv1` is applied to each branch at its own resolution (slices of the one 270x270 kernel)
  before upsampling: a 1x1 conv commutes with bilinear upsampling (weights sum to one), so the
  result equals conv-after-concat while the big 270->270 matmul runs on 1/4 .. 1/64 of the pixels.
  """

  def __init__(self, branch_channels: Sequence[int], out_channels: int, *, kernel_init, dtype,
               param_dtype, rngs):
    c = sum(branch_channels)
    self.branch_channels = tuple(branch_channels)
    self.conv1 = Conv(c, c, (1, 1), use_bias=True, kernel_init=kernel_init,
                          bias_init=inits.torch_default_bias(c), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    self.bn = _bn(c, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv2 = Conv(c, out_channels, (1, 1), use_bias=True, kernel_init=kernel_init,
                          bias_init=inits.torch_default_bias(c), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    self.dtype = dtype

  def __call__(self, xs: list[jax.Array], use_running_average=None,
               global_pool: bool = False) -> jax.Array:
    """Branches -> (B, H/4, W/4, out), or (B, out) spatial means if `global_pool`.

    Pooling before `conv2` equals pooling after it (a 1x1 conv is linear) and skips the
    270 -> out matmul over every pixel: for SSMER's 2048 channels that matmul would cost more than
    the rest of the network.
    """
    h, w = xs[0].shape[1:3]
    kernel = self.conv1.kernel[...].astype(self.dtype)[0, 0]  # (C_in, C_out)
    y, start = None, 0
    for x, c in zip(xs, self.branch_channels):
      t = upsample_bilinear(jnp.dot(x.astype(self.dtype), kernel[start:start + c]), h, w)
      y = t if y is None else y + t
      start += c
    y = y + self.conv1.bias[...].astype(self.dtype)
    y = jax.nn.relu(self.bn(y, use_running_average=use_running_average))
    if global_pool:
      pooled = jnp.mean(y.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
      return self.conv2(pooled[:, None, None, :])[:, 0, 0, :]
    return self.conv2(y)


class HRNet(nnx.Module):
  """Reduced HRNet-W18: (B, H, W, 3) -> (B, H/4, W/4, head_channels), NHWC.

  Attributes mirror the official module names: conv1/bn1/conv2/bn2 (stem), layer1, transition1..3,
  stage2..4 (lists of HighResolutionModule, one each), head. `transition{k}[i]` is None where a
  branch passes through unchanged, a ConvBN where only the width changes, and a list of stride-2
  ConvBNs that creates a new branch.
  """

  def __init__(self, head_channels: int = 256, *, width: int = 18, num_blocks: int = 4,
               num_modules: Sequence[int] = (1, 1, 1),
               kernel_init: Initializer = hrnet_kernel_init, bn_momentum: float = BN_MOMENTUM,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the network.

    Args:
      head_channels: output channels of the final 1x1 conv (256 for SLPT/CMFA, 2048 for SSMER).
      width: channels of the highest-resolution branch; branches are (w, 2w, 4w, 8w).
      num_blocks: residual blocks per stage: layer1's Bottlenecks and each branch's BASIC blocks
        (4 for both officially; 1 makes a small, fast-compiling net for tests).
      num_modules: high-resolution modules in stages 2, 3, 4.
      kernel_init: conv kernel init (official N(0, 0.001); SSMER uses PyTorch's default).
      bn_momentum: every BatchNorm's running-statistics momentum, in Flax terms (0.99, the
        official 0.01 in PyTorch's; 0.9 is PyTorch's default 0.1).
      dtype: computation dtype (e.g. jnp.bfloat16); BatchNorm statistics are computed in float32.
      param_dtype: parameter dtype.
      rngs: parameter init keys.
    """
    kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dtype = dtype
    self.conv1 = Conv(3, 64, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False, **kw)
    self.bn1 = _bn(64, **bkw)
    self.conv2 = Conv(64, 64, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False, **kw)
    self.bn2 = _bn(64, **bkw)
    self.layer1 = nnx.List([Bottleneck(64 if i == 0 else 256, 64, **kw) for i in range(num_blocks)])

    stage_channels = [[width * 2**i for i in range(n)] for n in (2, 3, 4)]
    prev = [256]
    for k, (channels, modules) in enumerate(zip(stage_channels, num_modules), start=1):
      transition = []
      for i, c in enumerate(channels):
        if i < len(prev):
          transition.append(ConvBN(prev[i], c, 3, 1, relu=True, **kw) if prev[i] != c else None)
        else:  # A new, lower-resolution branch from the previous lowest one (always one step here).
          steps = [ConvBN(prev[-1], prev[-1], 3, 2, relu=True, **kw)
                   for _ in range(i - len(prev))]
          steps.append(ConvBN(prev[-1], c, 3, 2, relu=True, **kw))
          transition.append(nnx.List(steps))
      setattr(self, f"transition{k}", nnx.List(transition))
      setattr(self, f"stage{k + 1}", nnx.List([
          HighResolutionModule(channels, num_blocks, **kw) for _ in range(modules)]))
      prev = channels
    self.head = HRNetHead(prev, head_channels, **kw)
    for _, module in nnx.iter_modules(self):
      if isinstance(module, nnx.BatchNorm):
        module.momentum = bn_momentum

  def features(self, x: jax.Array, use_running_average: bool | None = None) -> list[jax.Array]:
    """The four branch outputs, (B, H/4, W/4, w) ... (B, H/32, W/32, 8w)."""
    ura = use_running_average
    x = x.astype(self.dtype)
    x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    x = jax.nn.relu(self.bn2(self.conv2(x), use_running_average=ura))
    x = _apply_chain(self.layer1, x, ura)
    xs = [x]
    for transition, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                              (self.transition3, self.stage4)):
      inputs = []
      for i, t in enumerate(transition):
        if t is None:
          inputs.append(xs[i])
        elif isinstance(t, ConvBN):
          inputs.append(t(xs[i], ura))
        else:
          inputs.append(_apply_chain(t, xs[-1], ura))
      xs = inputs
      for module in stage:
        xs = module(xs, ura)
    return xs

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               global_pool: bool = False) -> jax.Array:
    """(B, H, W, 3) normalised image -> (B, H/4, W/4, head_channels) in the compute dtype.

    Args:
      x: input images, NHWC.
      use_running_average: overrides every BatchNorm's mode for this call; None uses the modules'
        `use_running_average` attributes (set by `model.train()` / `model.eval()`).
      global_pool: return the spatial mean of the output, (B, head_channels), computed cheaply
        (see HRNetHead).
    """
    return self.head(self.features(x, use_running_average), use_running_average, global_pool)


def body_filter(path, _) -> bool:
  """NNX filter: every HRNet variable outside the head (the part SSMER transfers to CMFA)."""
  return not path or path[0] != "head"
