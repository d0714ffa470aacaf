"""On-device photometric augmentation of rendered images, for use inside jitted steps.

Images are (N, H, W, 3) float32 RGB in [0, 1]; every parameter has a leading N axis (one value
per image, drawn on the host by `augment.py`), so one compiled function serves every batch. All
ops are jit/vmap-safe and jitted themselves (eager calls compile once per shape).
`moco_photometric` also accepts extra leading axes, e.g. SSMER's (B, V, H, W, 3) views with
(B, V) parameters.

In a step (batch format in `input_pipeline.py`; render = jax.vmap of `images.render_image` over
the batch with t_start_us=0, t_end_us=window_us):
  CMFA:  x = render(to_padded_events(batch["events"]))
         x = grayscale(x, batch["event_grayscale"])
         x = imagenet_normalize(paint_occlusion(x, batch["event_occlusion"],
                                                batch["event_occlusion_colour"]))
  SSMER: view v of batch["views"] rendered as representation v, stacked to (B, V, H, W, 3);
         x = imagenet_normalize(moco_photometric(x, batch["photometric"]))

Colour conventions follow torchvision's tensor ops (ColorJitter, Grayscale, GaussianBlur), with
ITU-R 601 luma (0.299, 0.587, 0.114) as the one grayscale formula (the host side uses the same).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from data_pipelines.augment import PHOTOMETRIC_FIELDS
from evalign_jax.events import images
from evalign_jax.events.events import PaddedEvents

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)
# SimSiam/MoCo blur 224 px views with sigma up to 2; 23 taps reach 5.5 sigma at sigma = 2.
BLUR_KERNEL_SIZE = 23


def _per_image(values: jax.Array) -> jax.Array:
  """(N,) -> (N, 1, 1, 1), to broadcast against (N, H, W, 3)."""
  return jnp.asarray(values)[:, None, None, None]


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """(..., 3) in [0, 1] -> (x - mean) / std with ImageNet's per-channel statistics."""
  return (images - jnp.asarray(IMAGENET_MEAN, images.dtype)) / jnp.asarray(IMAGENET_STD,
                                                                         images.dtype)


def luminance(images: jax.Array) -> jax.Array:
  """(N, H, W, 3) -> (N, H, W, 1) ITU-R 601 luma."""
  return jnp.sum(images * jnp.asarray(LUMA, images.dtype), axis=-1, keepdims=True)


@jax.jit
def grayscale(images: jax.Array, flags: jax.Array) -> jax.Array:
  """Replaces images whose (N,) bool flag is set by their luma in all three channels."""
  return jnp.where(_per_image(flags), jnp.broadcast_to(luminance(images), images.shape), images)


@jax.jit
def paint_occlusion(images: jax.Array, boxes: jax.Array, colours: jax.Array) -> jax.Array:
  """Fills a rectangle per image with a solid colour.

  Args:
    images: (N, H, W, 3).
    boxes: (N, 4) half-open (x0, y0, x1, y1) in whole pixels: pixel (row i, column j) is
      painted iff x0 <= j < x1 and y0 <= i < y1. All zeros paints nothing.
    colours: (N, 3) RGB in [0, 1].
  """
  _, h, w, _ = images.shape
  boxes = jnp.asarray(boxes, jnp.float32)
  cols = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  rows = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
  inside = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
  return jnp.where(inside[..., None], jnp.asarray(colours, images.dtype)[:, None, None, :],
                   images)


def _blend(a: jax.Array, b: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's _blend: clip(f a + (1 - f) b, 0, 1) with f per image."""
  f = _per_image(factor).astype(a.dtype)
  return jnp.clip(f * a + (1.0 - f) * b, 0.0, 1.0)


def rgb_to_hsv(images: jax.Array) -> jax.Array:
  """(..., 3) RGB in [0, 1] -> (..., 3) HSV in [0, 1] (torchvision's _rgb2hsv)."""
  r, g, b = images[..., 0], images[..., 1], images[..., 2]
  maxc = jnp.max(images, axis=-1)
  minc = jnp.min(images, axis=-1)
  grey = maxc == minc
  chroma = maxc - minc
  s = chroma / jnp.where(grey, 1.0, maxc)
  div = jnp.where(grey, 1.0, chroma)
  rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
  hr = jnp.where(maxc == r, bc - gc, 0.0)
  hg = jnp.where((maxc == g) & (maxc != r), 2.0 + rc - bc, 0.0)
  hb = jnp.where((maxc != g) & (maxc != r), 4.0 + gc - rc, 0.0)
  h = jnp.mod((hr + hg + hb) / 6.0 + 1.0, 1.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """(..., 3) HSV in [0, 1] -> (..., 3) RGB in [0, 1] (torchvision's _hsv2rgb)."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(jnp.int32) % 6
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  pick = lambda *opts: jnp.select([i == k for k in range(6)], opts)
  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)],
                   axis=-1)


def adjust_hue(images: jax.Array, hue: jax.Array) -> jax.Array:
  """Rotates hue by the (N,) shift in turns, [-0.5, 0.5]; a zero shift returns the input exactly."""
  hsv = rgb_to_hsv(images)
  shift = _per_image(hue)[..., 0]
  rotated = hsv_to_rgb(hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 1.0)))
  return jnp.where(_per_image(hue) == 0, images, rotated)


@jax.jit
def color_jitter(images: jax.Array, params: dict) -> jax.Array:
  """torchvision ColorJitter with drawn factors, applied in the fixed order below.

  torchvision draws a random order of the four per call; a fixed order changes the
  distribution only slightly and keeps one compiled graph.
    brightness b: clip(b x)
    contrast c:   clip(c x + (1 - c) mean(luma(x)))   (mean over the whole image)
    saturation s: clip(s x + (1 - s) luma(x))
    hue h:        hue rotated by h turns in HSV
  Identity is b = c = s = 1, h = 0.

  Args:
    images: (N, H, W, 3) in [0, 1].
    params: brightness, contrast, saturation, hue, each (N,).
  """
  x = _blend(images, 0.0, params["brightness"])
  mean = jnp.mean(luminance(x), axis=(1, 2, 3), keepdims=True)
  x = _blend(x, mean, params["contrast"])
  x = _blend(x, luminance(x), params["saturation"])
  return adjust_hue(x, params["hue"])


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def gaussian_blur(images: jax.Array, sigmas: jax.Array,
                  kernel_size: int = BLUR_KERNEL_SIZE) -> jax.Array:
  """Separable Gaussian blur with a per-image sigma in pixels; sigma <= 0 leaves it unchanged.

  A fixed `kernel_size` (odd) window, weights normalised to sum 1, reflect padding (torchvision
  F.gaussian_blur's), so a constant image stays constant.
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  radius = kernel_size // 2
  sigmas = jnp.asarray(sigmas, jnp.float32)
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  safe = jnp.maximum(sigmas, 1e-6)[:, None]
  weights = jnp.exp(-0.5 * (offsets[None, :] / safe) ** 2)
  weights = weights / jnp.sum(weights, axis=1, keepdims=True)
  weights = jnp.where(sigmas[:, None] > 0, weights, (offsets == 0)[None, :].astype(jnp.float32))
  weights = weights.astype(images.dtype)

  def blur_axis(x, axis):
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="reflect")
    out = jnp.zeros_like(x)
    # Sum of shifted copies: XLA fuses it into one pass; no per-image conv kernels needed.
    for k in range(kernel_size):
      out = out + _per_image(weights[:, k]) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
    return out

  return blur_axis(blur_axis(images, 1), 2)


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def moco_photometric(images: jax.Array, params: dict,
                     kernel_size: int = BLUR_KERNEL_SIZE) -> jax.Array:
  """The MoCo-v2 photometric chain: jitter (if jitter_apply) -> grayscale -> blur.

  Output stays in [0, 1]; ImageNet normalisation is left to the caller.

  Args:
    images: (..., H, W, 3) float in [0, 1], any number of leading axes.
    params: `augment.PHOTOMETRIC_FIELDS`, each shaped like the leading axes (e.g. a batch's
      (B, V) `photometric` dict).
  """
  lead = images.shape[:-3]
  x = images.reshape((-1,) + images.shape[-3:])
  p = {k: jnp.reshape(params[k], (-1,)) for k in PHOTOMETRIC_FIELDS}
  x = jnp.where(_per_image(p["jitter_apply"]), color_jitter(x, p), x)
  x = grayscale(x, p["grayscale"])
  x = gaussian_blur(x, p["blur_sigma"], kernel_size)
  return x.reshape(lead + x.shape[1:])


# --- Batches -> model inputs, inside the jitted step ----------------------------------------


def render_batch(events, window_us: jax.Array, size: int,
                 config: images.RenderConfig) -> jax.Array:
  """(B, C) padded events -> (B, size, size, 3) images in [0, 1], over each (0, window_us]."""
  render = lambda e, t1: images.render_image(e, (size, size), config, t_start_us=0,
                                             t_end_us=t1)
  return jax.vmap(render)(events, window_us)


def cmfa_event_images(batch: dict, size: int, config: images.RenderConfig) -> jax.Array:
  """A CMFA batch's events -> (B, size, size, 3) normalised model input (see module docs)."""
  x = render_batch(to_padded_events(batch["events"]), batch["window_us"], size, config)
  x = grayscale(x, batch["event_grayscale"])
  x = paint_occlusion(x, batch["event_occlusion"], batch["event_occlusion_colour"])
  return imagenet_normalize(x)


def ssmer_view_images(batch: dict, size: int,
                      configs: tuple[images.RenderConfig, ...]) -> jax.Array:
  """An SSMER batch -> (B, V, size, size, 3) normalised views; view v rendered by configs[v]."""
  events = to_padded_events(batch["views"])
  views = [render_batch(jax.tree.map(lambda a, v=v: a[:, v], events), batch["window_us"], size,
                        c) for v, c in enumerate(configs)]
  return imagenet_normalize(moco_photometric(jnp.stack(views, axis=1), batch["photometric"]))


def model_inputs(batch: dict, inputs: tuple[str, ...], size: int,
                 render: images.RenderConfig) -> tuple[jax.Array, ...]:
  """An alignment batch -> the model's positional inputs, by name (`models.ModelSpec.inputs`).

  "rgb": the batch's RGB crop in [0, 1], ImageNet-normalised; "events": its events rendered by
  `render` and augmented (`cmfa_event_images`). Each (B, size, size, 3) float32.
  """
  makers = {"rgb": lambda: imagenet_normalize(batch["image"].astype(jnp.float32) / 255.0),
            "events": lambda: cmfa_event_images(batch, size, render)}
  unknown = [name for name in inputs if name not in makers]
  if unknown:
    raise ValueError(f"no alignment input {unknown}; valid: {sorted(makers)}")
  return tuple(makers[name]() for name in inputs)


def to_padded_events(events: dict) -> PaddedEvents:
  """A batch's `events` (or `views`) dict -> PaddedEvents with int32 t/x/y/p, bool valid.

  Works on numpy and on jax arrays (inside jit); shapes are kept, e.g. (B, C) or (B, V, C).
  """
  i32 = lambda a: a.astype(jnp.int32)
  return PaddedEvents(t=i32(events["t"]), x=i32(events["x"]), y=i32(events["y"]),
                      p=i32(events["p"]), valid=events["valid"].astype(bool))
