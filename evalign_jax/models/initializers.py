"""Parameter initialisers that mimic the official PyTorch init and build fast outside `jit`.

Why not `jax.nn.initializers` directly: constructing a model eagerly compiles one random kernel per
distinct parameter shape (~0.1-1 s each on a small CPU, ~80 shapes for CMFA), and a jitted init of
the whole model spends 10-20 s compiling hundreds of threefry calls. These initialisers draw the
numbers with numpy when the key is concrete (eager construction: milliseconds) and fall back to
`jax.random` when traced (`jax.jit`, `nnx.eval_shape`, sharded init), so they work everywhere.
Both paths are deterministic in the key; they draw different numbers from the same distribution.

Kernel layouts are (..., in, out) as in Flax (Conv HWIO, Dense (in, out)); fans count the receptive
field, as PyTorch does.
"""

from collections.abc import Callable
import math

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]


def _numpy_rng(key) -> np.random.Generator | None:
  """A numpy generator seeded from a concrete key, or None when the key is traced."""
  if isinstance(key, jax.core.Tracer):
    return None
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.default_rng(np.asarray(key).astype(np.uint64).ravel().tolist())


def _fans(shape) -> tuple[int, int]:
  if len(shape) < 2:
    return int(np.prod(shape)), int(np.prod(shape))
  receptive = int(np.prod(shape[:-2]))
  return receptive * shape[-2], receptive * shape[-1]


def normal(stddev: float) -> Initializer:
  """N(0, stddev^2)."""

  def init(key, shape, dtype=jnp.float32):
    rng = _numpy_rng(key)
    if rng is None:
      return stddev * jax.random.normal(key, shape, dtype)
    return jnp.asarray(rng.normal(0.0, stddev, shape), dtype)

  return init


def uniform(bound: float) -> Initializer:
  """U(-bound, bound)."""

  def init(key, shape, dtype=jnp.float32):
    rng = _numpy_rng(key)
    if rng is None:
      return jax.random.uniform(key, shape, dtype, -bound, bound)
    return jnp.asarray(rng.uniform(-bound, bound, shape), dtype)

  return init


def xavier_uniform(fan_in: int | None = None, fan_out: int | None = None) -> Initializer:
  """PyTorch `xavier_uniform_`: U(+-sqrt(6 / (fan_in + fan_out))), fans from the shape by default.

  Explicit fans reproduce PyTorch where its tensor has another shape than ours (the stacked q/k/v
  in-projection (3d, d) of `nn.MultiheadAttention`, or a (1, K, d) embedding).
  """

  def init(key, shape, dtype=jnp.float32):
    f_in, f_out = _fans(shape)
    bound = math.sqrt(6.0 / ((fan_in or f_in) + (fan_out or f_out)))
    return uniform(bound)(key, shape, dtype)

  return init


def torch_default_kernel() -> Initializer:
  """PyTorch's default Conv/Linear weight init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in))."""

  def init(key, shape, dtype=jnp.float32):
    return uniform(1.0 / math.sqrt(_fans(shape)[0]))(key, shape, dtype)

  return init


def torch_default_bias(fan_in: int) -> Initializer:
  """PyTorch's default Conv/Linear bias init: U(+-1/sqrt(fan_in))."""
  return uniform(1.0 / math.sqrt(fan_in))


def constant(value: float) -> Initializer:
  """A constant (BatchNorm / LayerNorm scale 1, bias 0)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    # A host constant: no per-shape device kernel to compile when built eagerly.
    return jnp.asarray(np.full(shape, value), dtype)

  return init


zeros = constant(0.0)
ones = constant(1.0)
