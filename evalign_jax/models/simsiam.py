"""SSMER: SimSiam pretraining of the event HRNet on several event representations of one time slice.

Model (official `SSMER/simsiam/builder.py::HRNetSimSiam`):
  encoder   = HRNet with a 270 -> 2048 head conv, then global average pooling -> (B, 2048)
              (computed pool-then-conv: equal, and it skips a 270 x 2048 matmul per pixel)
  projector = BN - ReLU - Linear(2048, 2048, no bias) - BN - ReLU - Linear(2048, 2048)
              - BN(no affine)
  predictor = Linear(2048, 512, no bias) - BN - ReLU - Linear(512, 2048)
Officially the projector is appended to `encoder.head` (state-dict names `encoder.head.1..7`);
here it is the `projector` attribute. The bias of the projector's last Linear is frozen at its
init value (SimSiam's "hack": it is followed by a BatchNorm): it is a `FrozenParam`, not an
`nnx.Param`, so an optimiser built with `wrt=nnx.Param` never touches it while checkpoints keep it.
The 1-D BatchNorms use PyTorch's default momentum 0.1 (Flax 0.9); the HRNet's 2-D ones 0.01 (0.99).
The encoder starts from PyTorch's default conv init (`HRNetSimSiam` never calls `init_weights`).

Loss: `simsiam_loss` over the pairs (frame, voxel), (voxel, time surface), (frame, time surface),
with each view encoded once (3 passes; the official code runs 6, one per pair member, which gives
the same loss and gradients because each pass normalises a view with that view's own batch
statistics; only the BatchNorm running averages see each view once instead of twice per step).

Transfer to CMFA: `encoder_body_state(model)` is the encoder without its head; `load_encoder_body`
writes it into an `HRNet(head_channels=256)` (CMFA's event backbone), whose head is trained afresh.
"""

from collections.abc import Sequence
import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from evalign_jax.models import batchnorm
from evalign_jax.models import initializers as inits
from evalign_jax.models.hrnet import HRNet, body_filter, torch_default_kernel_init

Dtype = jnp.dtype | type

BN1D_MOMENTUM = 0.9  # PyTorch's default 0.1.


class FrozenParam(nnx.Variable):
  """A parameter kept at its initial value (not an `nnx.Param`, so optimisers skip it)."""


def _bn1d(features: int, *, affine: bool = True, dtype, param_dtype, rngs) -> nnx.BatchNorm:
  return batchnorm.BatchNorm(features, momentum=BN1D_MOMENTUM, epsilon=1e-5, use_bias=affine,
                             use_scale=affine, use_fast_variance=False, scale_init=inits.ones,
                             bias_init=inits.zeros, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)


def _linear(din: int, dout: int, use_bias: bool, *, dtype, param_dtype, rngs) -> nnx.Linear:
  # PyTorch nn.Linear default init.
  return nnx.Linear(din, dout, use_bias=use_bias, kernel_init=inits.torch_default_kernel(),
                    bias_init=inits.torch_default_bias(din), dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs)


class Projector(nnx.Module):
  """BN-ReLU-fc1 (no bias)-BN-ReLU-fc2 (frozen bias)-BN (no affine): (B, D) -> (B, D)."""

  def __init__(self, dim: int = 2048, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.bn0 = _bn1d(dim, **kw)
    self.fc1 = _linear(dim, dim, False, **kw)
    self.bn1 = _bn1d(dim, **kw)
    self.fc2 = _linear(dim, dim, True, **kw)
    self.fc2.bias = FrozenParam(self.fc2.bias[...])
    self.bn2 = _bn1d(dim, affine=False, **kw)

  def __call__(self, x, use_running_average=None):
    ura = use_running_average
    x = self.fc1(jax.nn.relu(self.bn0(x, use_running_average=ura)))
    x = self.fc2(jax.nn.relu(self.bn1(x, use_running_average=ura)))
    return self.bn2(x, use_running_average=ura)


class Predictor(nnx.Module):
  """fc1 (no bias) - BN - ReLU - fc2: (B, D) -> (B, D) through a pred_dim bottleneck."""

  def __init__(self, dim: int = 2048, pred_dim: int = 512, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = _linear(dim, pred_dim, False, **kw)
    self.bn1 = _bn1d(pred_dim, **kw)
    self.fc2 = _linear(pred_dim, dim, True, **kw)

  def __call__(self, x, use_running_average=None):
    return self.fc2(jax.nn.relu(self.bn1(self.fc1(x), use_running_average=use_running_average)))


class SimSiam(nnx.Module):
  """SSMER's SimSiam: HRNet encoder + average pool + projector (-> z) + predictor (-> p)."""

  def __init__(self, *, dim: int = 2048, pred_dim: int = 512, backbone_width: int = 18,
               backbone_blocks: int = 4, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the model.

    Args:
      dim: embedding size (2048), also the HRNet head's output channels.
      pred_dim: predictor bottleneck (512).
      backbone_width, backbone_blocks: HRNet size (18, 4; smaller only for tests).
      dtype: computation dtype (e.g. jnp.bfloat16); z and p are returned in float32.
      param_dtype: parameter dtype.
      rngs: init keys.
    """
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.encoder = HRNet(dim, width=backbone_width, num_blocks=backbone_blocks,
                         kernel_init=torch_default_kernel_init, **kw)
    self.projector = Projector(dim, **kw)
    self.predictor = Predictor(dim, pred_dim, **kw)

  def __call__(self, x: jax.Array, use_running_average: bool | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """(B, H, W, 3) normalised view -> (z, p), each (B, dim) float32.

    z is returned without stop-gradient; `simsiam_loss` applies it.
    """
    pooled = self.encoder(x, use_running_average, global_pool=True)
    z = self.projector(pooled, use_running_average)
    p = self.predictor(z, use_running_average)
    return z.astype(jnp.float32), p.astype(jnp.float32)


def negative_cosine(p: jax.Array, z: jax.Array, eps: float = 1e-8) -> jax.Array:
  """-mean_b cos(p_b, stop_gradient(z_b)); (B, D) each. eps as torch.nn.CosineSimilarity."""
  z = jax.lax.stop_gradient(z)
  p_norm = jnp.maximum(jnp.linalg.norm(p, axis=-1), eps)
  z_norm = jnp.maximum(jnp.linalg.norm(z, axis=-1), eps)
  return -jnp.mean(jnp.sum(p * z, axis=-1) / (p_norm * z_norm))


DEFAULT_PAIRS = ((0, 1), (1, 2), (0, 2))  # (frame, voxel), (voxel, time surface), (frame, ts).


def simsiam_loss(p_views, z_views, pairs: Sequence[tuple[int, int]] | None = None) -> jax.Array:
  """SSMER loss: sum over view pairs of the symmetric SimSiam loss, each view encoded once.

  L(a, b) = -(cos(p_a, sg(z_b)) + cos(p_b, sg(z_a))) / 2, each cosine averaged over the batch.

  Args:
    p_views: predictor outputs per view, in representation order (frame, voxel, time surface):
      a sequence of (B, D) arrays, or one (B, V, D) array with the views on axis 1.
    z_views: projector outputs, in the same form.
    pairs: view index pairs; default (0,1), (1,2), (0,2) for three views (the official trio), all
      pairs otherwise (one pair for two views).

  Returns:
    Scalar loss in [-len(pairs), len(pairs)] (-3 at perfect agreement of three views).
  """
  if not isinstance(p_views, (list, tuple)):
    p_views = [p_views[:, v] for v in range(p_views.shape[1])]
  if not isinstance(z_views, (list, tuple)):
    z_views = [z_views[:, v] for v in range(z_views.shape[1])]
  if pairs is None:
    pairs = DEFAULT_PAIRS if len(p_views) == 3 else tuple(
        itertools.combinations(range(len(p_views)), 2))
  total = 0.0
  for a, b in pairs:
    total = total + 0.5 * (negative_cosine(p_views[a], z_views[b]) +
                           negative_cosine(p_views[b], z_views[a]))
  return total


def encoder_body_state(model: SimSiam) -> nnx.State:
  """The encoder's variables except its head (params and BatchNorm statistics)."""
  return nnx.state(model.encoder, body_filter)


def load_encoder_body(backbone: HRNet, source: SimSiam | nnx.State) -> None:
  """Writes an SSMER encoder body into `backbone` (e.g. `cmfa.event.backbone`); its head is kept.

  Args:
    backbone: an HRNet of the same width / blocks, any head size.
    source: a SimSiam model or the state from `encoder_body_state`.
  """
  state = encoder_body_state(source) if isinstance(source, SimSiam) else source
  nnx.update(backbone, state)
