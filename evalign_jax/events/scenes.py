"""A procedural moving scene for exercising the simulator: benchmarks, demos and tests.

`moving_texture_video` renders a band-limited random texture that drifts, rotates slightly and
flickers in brightness, with a bright disc crossing it: edges at many orientations and speeds,
so the simulator emits a realistic event load (thousands of events per frame at 256x256).
"""

from __future__ import annotations

import cv2
import numpy as np


def moving_texture_video(height: int, width: int, num_frames: int, *, fps: float = 30.0,
                         speed_px: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Renders the scene.

  Args:
    height, width: frame size in pixels.
    num_frames: T.
    fps: frame rate; timestamps are round(k * 1e6 / fps) µs.
    speed_px: texture drift per frame in pixels.
    seed: texture and motion seed.

  Returns:
    frames: (T, H, W) uint8 gray.
    timestamps_us: (T,) int64, strictly increasing.
  """
  rng = np.random.default_rng(seed)
  pad = int(speed_px * num_frames) + max(height, width) // 2 + 8
  big_h, big_w = height + 2 * pad, width + 2 * pad
  noise = rng.normal(size=(big_h // 8 + 1, big_w // 8 + 1)).astype(np.float32)
  texture = cv2.resize(noise, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
  texture = cv2.GaussianBlur(texture, (0, 0), 2.0)
  texture = (texture - texture.mean()) / (texture.std() + 1e-6)
  direction = rng.uniform(0, 2 * np.pi)
  frames = np.empty((num_frames, height, width), np.uint8)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  for k in range(num_frames):
    cx = big_w / 2 + speed_px * k * np.cos(direction)
    cy = big_h / 2 + speed_px * k * np.sin(direction)
    angle = 0.5 * k  # degrees
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (width / 2 - cx, height / 2 - cy)
    view = cv2.warpAffine(texture, m, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    brightness = 110 + 6 * np.sin(2 * np.pi * k / 45)   # slow global flicker
    img = brightness + 30 * view
    # A bright disc sweeping across: a strong moving edge.
    dx = xx - (0.1 + 0.8 * k / max(num_frames - 1, 1)) * width
    dy = yy - 0.5 * height
    img = np.where(dx * dx + dy * dy < (0.15 * min(height, width)) ** 2, img + 80, img)
    frames[k] = np.clip(img, 0, 255).astype(np.uint8)
  timestamps_us = np.round(np.arange(num_frames) * 1e6 / fps).astype(np.int64)
  return frames, timestamps_us
