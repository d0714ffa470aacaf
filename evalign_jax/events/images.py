"""From events to the 3-channel images the models take.

The models see every modality as an (H, W, 3) float image in [0, 1] (then ImageNet-normalised,
like RGB). Each representation has one documented mapping:

- frame: red/blue polarity on white, as in the paper's figures. With on = min(ON count / c, 1)
  and off = min(OFF count / c, 1), c = `count_clip`:
  (R, G, B) = (1 - on, 1 - min(on + off, 1), 1 - off): ON pixels turn blue, OFF pixels red.
- voxel: the B bins are folded onto 3 channels with the same triangle kernel the voxel grid uses
  in time (bin b sits at channel position 2 b / (B - 1); mass is conserved), then mapped around
  mid-grey: 0.5 + 0.5 clip(v / `voxel_clip`, -1, 1). Mid-grey means no net polarity.
- time_surface: (R, G, B) = (OFF surface, mean of both, ON surface) on black: recent events are
  bright, red for OFF, blue for ON.

`RenderConfig` gathers every parameter; it is hashable, so it can be a static jit argument, and
`render_image` goes from padded events to the image in one traced function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from evalign_jax.events import representations_jax as rj
from evalign_jax.events.events import PaddedEvents

KINDS = ("frame", "voxel", "time_surface")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """How a window of events becomes a model image.

  Attributes:
    kind: "frame", "voxel" or "time_surface".
    num_bins: voxel bins B.
    convention: voxel time convention, "e2vid" or "tonic".
    tau_us: time-surface decay constant in µs.
    count_clip: events per pixel that saturate the frame image.
    voxel_clip: |voxel value| that saturates the voxel image.
  """

  kind: str = "frame"
  num_bins: int = 5
  convention: str = "e2vid"
  tau_us: float = 30_000.0
  count_clip: float = 4.0
  voxel_clip: float = 2.0

  @classmethod
  def from_config(cls, render: Mapping, **overrides) -> RenderConfig:
    """The RenderConfig of a config's `render` entry (a mapping), with `overrides`.

    Fields the mapping lacks keep their defaults; entries that are not fields (e.g. a demo's
    event `capacity`) are ignored. E.g. `RenderConfig.from_config(config.render, kind="voxel")`.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{**{k: render[k] for k in names if k in render}, **overrides})

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    if self.count_clip <= 0 or self.voxel_clip <= 0 or self.tau_us <= 0:
      raise ValueError(f"count_clip, voxel_clip and tau_us must be positive: {self}")


def frame_image(frame: jax.Array, count_clip: float = 4.0) -> jax.Array:
  """(2, H, W) OFF/ON counts -> (H, W, 3) red/blue-on-white image in [0, 1]."""
  off = jnp.minimum(frame[0] / count_clip, 1.0)
  on = jnp.minimum(frame[1] / count_clip, 1.0)
  return jnp.stack([1.0 - on, 1.0 - jnp.minimum(on + off, 1.0), 1.0 - off], axis=-1)


def fold_bins(voxel: jax.Array, channels: int = 3) -> jax.Array:
  """(B, H, W) -> (channels, H, W) by linear interpolation of bin positions; sums are kept."""
  b = voxel.shape[0]
  if b == 1:
    return jnp.broadcast_to(voxel, (channels,) + voxel.shape[1:])
  pos = jnp.arange(b) * (channels - 1) / (b - 1)
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(pos[None, :] - jnp.arange(channels)[:, None]))
  return jnp.einsum("cb,bhw->chw", weights.astype(voxel.dtype), voxel)


def voxel_image(voxel: jax.Array, voxel_clip: float = 2.0) -> jax.Array:
  """(B, H, W) signed voxel grid -> (H, W, 3) image around mid-grey in [0, 1]."""
  folded = fold_bins(voxel, 3)
  return jnp.moveaxis(0.5 + 0.5 * jnp.clip(folded / voxel_clip, -1.0, 1.0), 0, -1)


def time_surface_image(surface: jax.Array) -> jax.Array:
  """(2, H, W) OFF/ON time surface -> (H, W, 3) image in [0, 1]."""
  off, on = surface[0], surface[1]
  return jnp.stack([off, 0.5 * (off + on), on], axis=-1)


def representation_image(rep: jax.Array, config: RenderConfig) -> jax.Array:
  """A rendered representation -> its (H, W, 3) model image, per `config.kind`."""
  if config.kind == "frame":
    return frame_image(rep, config.count_clip)
  if config.kind == "voxel":
    return voxel_image(rep, config.voxel_clip)
  return time_surface_image(rep)


def render_representation(events: PaddedEvents, sensor_size: tuple[int, int],
                          config: RenderConfig, *, t_start_us=None,
                          t_end_us=None) -> jax.Array:
  """Padded events -> the (C, H, W) representation named by `config.kind`.

  t_start_us / t_end_us (relative like `events.t`) fix the window; the voxel grid uses both,
  the time surface t_end_us, the frame neither.
  """
  if config.kind == "frame":
    return rj.event_frame(events, sensor_size)
  if config.kind == "voxel":
    return rj.voxel_grid(events, sensor_size, config.num_bins, config.convention,
                         t_start_us=t_start_us, t_end_us=t_end_us)
  return rj.time_surface(events, sensor_size, config.tau_us, t_end_us=t_end_us)


def render_image(events: PaddedEvents, sensor_size: tuple[int, int], config: RenderConfig, *,
                 t_start_us=None, t_end_us=None) -> jax.Array:
  """Padded events -> (H, W, 3) float32 model image in [0, 1]. jit/vmap-safe."""
  rep = render_representation(events, sensor_size, config, t_start_us=t_start_us,
                              t_end_us=t_end_us)
  return representation_image(rep, config)
