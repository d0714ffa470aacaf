"""Representation -> 3-channel model image mappings, checked by hand."""

import jax
import numpy as np
import pytest

from evalign_jax.events import images
from evalign_jax.events import representations as ref


def test_frame_image_by_hand():
  frame = np.zeros((2, 1, 4), np.float32)
  frame[1, 0, 0] = 2      # ON, half of count_clip 4
  frame[0, 0, 1] = 9      # OFF, saturated
  frame[:, 0, 2] = 4      # both, saturated
  img = np.asarray(images.frame_image(frame, count_clip=4.0))
  np.testing.assert_allclose(img[0, 0], [0.5, 0.5, 1.0])   # light blue
  np.testing.assert_allclose(img[0, 1], [1.0, 0.0, 0.0])   # red
  np.testing.assert_allclose(img[0, 2], [0.0, 0.0, 0.0])
  np.testing.assert_allclose(img[0, 3], [1.0, 1.0, 1.0])   # no events: white


def test_fold_bins_by_hand_and_mass():
  voxel = np.arange(5, dtype=np.float32).reshape(5, 1, 1) + 1.0   # bins 1..5
  folded = np.asarray(images.fold_bins(voxel, 3))[:, 0, 0]
  # Bin positions 0, .5, 1, 1.5, 2: channel 0 = b0 + b1/2, 1 = b1/2 + b2 + b3/2, 2 = b3/2 + b4.
  np.testing.assert_allclose(folded, [1 + 1, 1 + 3 + 2, 2 + 5])
  rng = np.random.default_rng(0)
  for b in (2, 3, 4, 7, 10):
    v = rng.normal(size=(b, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(images.fold_bins(v)).sum(0), v.sum(0), rtol=1e-5)
  np.testing.assert_allclose(images.fold_bins(voxel[:3]), voxel[:3])   # B = 3 is identity


def test_voxel_and_time_surface_images():
  voxel = np.zeros((3, 1, 3), np.float32)
  voxel[:, 0, 1] = [1.0, -4.0, 0.0]
  img = np.asarray(images.voxel_image(voxel, voxel_clip=2.0))
  np.testing.assert_allclose(img[0, 0], [0.5, 0.5, 0.5])      # nothing: mid-grey
  np.testing.assert_allclose(img[0, 1], [0.75, 0.0, 0.5])
  ts = np.zeros((2, 1, 2), np.float32)
  ts[0, 0, 0], ts[1, 0, 0], ts[1, 0, 1] = 0.2, 0.6, 1.0
  img = np.asarray(images.time_surface_image(ts))
  np.testing.assert_allclose(img[0], [[0.2, 0.4, 0.6], [0.0, 0.5, 1.0]])


@pytest.mark.parametrize("kind", images.KINDS)
def test_render_image_matches_reference_pipeline(random_events, kind):
  config = images.RenderConfig(kind=kind, num_bins=4, tau_us=8_000.0)
  ev = random_events(3_000, (12, 16), seed=11)
  rep = {"frame": lambda: ref.event_frame(ev),
         "voxel": lambda: ref.voxel_grid(ev, 4, "e2vid"),
         "time_surface": lambda: ref.time_surface(ev, tau_us=8_000.0)}[kind]()
  want = np.asarray(images.representation_image(rep.astype(np.float32), config))
  batch = jax.tree.map(lambda a: np.stack([a, a]), ev.pad(4_000))
  got = jax.jit(jax.vmap(lambda e: images.render_image(e, (12, 16), config)))(batch)
  assert got.shape == (2, 12, 16, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got[1], want, atol=1e-5)
  assert 0.0 <= float(got.min()) and float(got.max()) <= 1.0


def test_render_config_rejects_bad_values():
  with pytest.raises(ValueError, match="kind"):
    images.RenderConfig(kind="histogram")
  with pytest.raises(ValueError, match="positive"):
    images.RenderConfig(tau_us=0.0)
