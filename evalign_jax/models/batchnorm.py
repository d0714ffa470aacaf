"""BatchNorm whose running-statistics update traces in constant time.

`nnx.BatchNorm` writes its statistics with `stat[...] = new`. For such a full replace, flax
compares the new value's `.sharding` with the old one's; on a tracer that attribute raises an
error (caught by flax) whose message JAX builds by walking everything traced so far, so tracing
a network of N BatchNorms in training mode costs O(N^2): SSMER's tiny train step took 12.2 s to
trace, 2.8 s with statistics that skip the comparison. Under tracing, a statistic's sharding is
the jitted function's business anyway; outside it the flax path runs unchanged.
"""

import jax
from flax import nnx


class RunningStat(nnx.BatchStat):
  """A BatchNorm statistic: a traced full replace rebinds the value without flax's check."""

  def __setitem__(self, key, value) -> None:
    if key is Ellipsis and isinstance(value, jax.core.Tracer):
      old = self.get_value()
      if value.shape == old.shape and value.dtype == old.dtype:
        self.set_value(value)
        return
    super().__setitem__(key, value)


def BatchNorm(features: int, **kwargs) -> nnx.BatchNorm:   # pylint: disable=invalid-name
  """`nnx.BatchNorm(features, **kwargs)` with `RunningStat` statistics (same state paths)."""
  bn = nnx.BatchNorm(features, **kwargs)
  bn.mean = RunningStat(bn.mean.get_value())
  bn.var = RunningStat(bn.var.get_value())
  return bn
