"""The grain input pipeline: format, determinism, sharding, eval padding, checkpointing, tfds."""

import sys
import textwrap

import cv2
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import augment
from data_pipelines import registry
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from data_pipelines import schema
from evalign_jax.events import Events, PaddedEvents, RenderConfig, event_frame_jax, render_image

STORED, CAPACITY, K = 64, 256, 5
SPEC = schema.CropSpec(image_size=STORED, crop_scale=1.5, event_capacity=CAPACITY)
CMFA = augment.AlignmentAugment(out_size=32)
SSMER = augment.SsmerAugment(out_size=24)


def synthetic_window(i):
  """A random 120x100 frame, face box, landmarks and events: crop_example's inputs."""
  rng = np.random.default_rng(i)
  frame = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
  box = np.array([40, 30, 80, 70], np.float32) + rng.uniform(-5, 5, 4).astype(np.float32)
  lms = rng.uniform(45, 70, (K, 2))
  n = 300
  ev = Events(np.sort(rng.integers(1_001, 11_000, n)), rng.integers(0, 120, n),
              rng.integers(0, 100, n), rng.integers(0, 2, n), (100, 120))
  return frame, lms, box, ev


def make_examples(n):
  """Stored examples as tfds.data_source returns them: decoded RGB, bytes texts."""
  out = []
  for i in range(n):
    frame, lms, box, ev = synthetic_window(i)
    ex = schema.crop_example(frame, lms, box, ev, 1_000, 11_000, SPEC, clip_id=f"clip{i:03d}",
                             subject_id=f"s{i % 3}", subset="train", frame_index=i)
    ex["image"] = cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    for k in ("clip_id", "subject_id", "subset"):
      ex[k] = ex[k].encode()
    out.append(ex)
  return out


@pytest.fixture(scope="module")
def examples():
  return make_examples(12)


def cmfa(source, **kw):
  kw.setdefault("train", True)
  kw.setdefault("global_batch_size", 4)
  return ip.make_dataset(source, task="cmfa", augment_config=CMFA, **kw)


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def clip_ids(batches, masked=True):
  ids = []
  for b in batches:
    keep = b["example_mask"] if masked else np.ones(len(b["clip_id"]), bool)
    ids += [c.decode() for c in b["clip_id"][keep]]
  return ids


def test_cmfa_batch_format(examples):
  ds = cmfa(examples)
  shapes = None
  for i in range(4):
    b = ds[i]
    got = jax.tree.map(lambda a: (a.shape, a.dtype), b)
    shapes = shapes or got
    assert got == shapes                                        # fixed shapes
  ev = {k: (v[0], v[1].name) for k, v in shapes["events"].items()}
  assert ev == {"x": ((4, CAPACITY), "int16"), "y": ((4, CAPACITY), "int16"),
                "t": ((4, CAPACITY), "int32"), "p": ((4, CAPACITY), "uint8"),
                "valid": ((4, CAPACITY), "bool")}
  assert shapes["image"] == ((4, 32, 32, 3), np.uint8)
  assert shapes["landmarks"] == ((4, K, 2), np.float32)
  assert shapes["window_us"] == ((4,), np.int32)
  assert shapes["event_grayscale"] == ((4,), np.bool_)
  assert shapes["event_occlusion"] == ((4, 4), np.float32)
  assert shapes["event_occlusion_colour"] == ((4, 3), np.float32)
  assert shapes["example_mask"] == ((4,), np.bool_)
  assert shapes["frame_index"] == ((4,), np.int32)
  assert all(shapes[k][0] == (4,) and shapes[k][1].kind == "S"
             for k in ("clip_id", "subject_id", "subset"))
  b = ds[0]
  assert b["example_mask"].all() and (b["window_us"] == 10_000).all()
  ev = b["events"]
  assert np.all(ev["x"][ev["valid"]] < 32) and np.all(ev["x"] >= 0)


def test_ssmer_batch_format(examples):
  ds = ip.make_dataset(examples, task="ssmer", train=True, global_batch_size=4,
                       augment_config=SSMER)
  b = ds[0]
  assert {k: (v.shape, v.dtype.name) for k, v in b["views"].items()} == {
      "x": ((4, 3, CAPACITY), "int16"), "y": ((4, 3, CAPACITY), "int16"),
      "t": ((4, 3, CAPACITY), "int32"), "p": ((4, 3, CAPACITY), "uint8"),
      "valid": ((4, 3, CAPACITY), "bool")}
  assert set(b["photometric"]) == set(augment.PHOTOMETRIC_FIELDS)
  assert all(v.shape == (4, 3) for v in b["photometric"].values())
  assert b["window_us"].shape == (4,) and b["example_mask"].all()


def test_deterministic_per_seed(examples):
  a = [cmfa(examples, seed=5)[i] for i in range(3)]
  b = [cmfa(examples, seed=5)[i] for i in range(3)]
  c = [cmfa(examples, seed=6)[i] for i in range(3)]
  for x, y in zip(a, b):
    assert_trees_equal(x, y)
  assert clip_ids(a) != clip_ids(c)
  assert not np.array_equal(a[0]["landmarks"], c[0]["landmarks"])
  # Epochs are reshuffled and re-augmented: batches 0-2 and 3-5 cover the 12 clips twice.
  ds = cmfa(examples, seed=5)
  first, second = clip_ids([ds[i] for i in range(3)]), clip_ids([ds[i] for i in range(3, 6)])
  assert sorted(first) == sorted(second) == [f"clip{i:03d}" for i in range(12)]
  assert first != second


def test_process_sharding(examples):
  seen = []
  for pi in range(2):
    ds = cmfa(examples, num_epochs=1, global_batch_size=4, process_index=pi, process_count=2)
    assert len(ds) == 3                                   # 6 examples per process, local batch 2
    seen.append(clip_ids(ds[i] for i in range(len(ds))))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == [f"clip{i:03d}" for i in range(12)]
  with pytest.raises(ValueError, match="divisible"):
    cmfa(examples, global_batch_size=5, process_index=0, process_count=2)


def test_eval_keeps_every_example(examples):
  ten = examples[:10]
  ds = cmfa(ten, train=False, global_batch_size=4)
  batches = [ds[i] for i in range(len(ds))]
  assert len(batches) == 3
  np.testing.assert_array_equal(np.concatenate([b["example_mask"] for b in batches]),
                                [True] * 10 + [False] * 2)
  assert clip_ids(batches) == [f"clip{i:03d}" for i in range(10)]    # in order, each once
  # Eval batches are the deterministic eval transform of each example.
  ref = augment.alignment_example(ten[5], None, CMFA, train=False)
  np.testing.assert_array_equal(batches[1]["image"][1], ref["image"])
  np.testing.assert_array_equal(batches[1]["events"]["x"][1], ref["events"]["x"])
  # Two processes: the same number of batches each, every example exactly once overall.
  per_process = [cmfa(ten, train=False, global_batch_size=4, process_index=pi,
                      process_count=2) for pi in range(2)]
  assert [len(d) for d in per_process] == [3, 3]                     # 5 examples -> 3 x 2
  ids = [clip_ids(d[i] for i in range(3)) for d in per_process]
  assert sorted(ids[0] + ids[1]) == [f"clip{i:03d}" for i in range(10)]


def checkpoint_round_trip(tmp_path, source, num_workers):
  ds = cmfa(source, seed=2, global_batch_size=2)
  it = ip.make_iterator(ds, num_workers)
  for _ in range(3):
    next(it)
  mngr = ocp.CheckpointManager(
      tmp_path / "ckpt", item_names=("state", "data_iter"),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data_iter": grain.checkpoint.CheckpointHandler()})
  mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": np.array(3, np.int32)}),
                                       data_iter=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = [next(it) for _ in range(4)]                 # crosses the epoch boundary (6 / epoch)
  fresh = ip.make_iterator(ds, num_workers)
  restored = mngr.restore(3, args=ocp.args.Composite(
      state=ocp.args.StandardRestore({"step": np.array(0, np.int32)}),
      data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  assert int(restored.state["step"]) == 3
  for want in expected:
    assert_trees_equal(next(fresh), want)
  # And the same batches as random access to the dataset (batches 3..6).
  assert_trees_equal(expected[0], ds[3])
  for i in (it, fresh):
    i.close()
  mngr.close()


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_iterator_checkpoint_round_trip(tmp_path, examples, num_workers):
  checkpoint_round_trip(tmp_path, examples, num_workers)


def test_to_padded_events_feeds_the_renderer(examples):
  b = cmfa(examples)[0]
  pe = da.to_padded_events(b["events"])
  assert isinstance(pe, PaddedEvents)
  assert all(getattr(pe, f).dtype == np.int32 for f in ("t", "x", "y", "p"))
  frames = jax.vmap(lambda e: event_frame_jax(e, (32, 32)))(pe)
  np.testing.assert_array_equal(np.asarray(frames).sum(axis=(1, 2, 3)),
                                b["events"]["valid"].sum(axis=1))
  ev = b["events"]
  i = int(np.argmax(ev["valid"][0]))
  assert frames[0, ev["p"][0, i], ev["y"][0, i], ev["x"][0, i]] >= 1
  # The device recipe: render, then the example's own grayscale flag and occlusion.
  cfg = RenderConfig("voxel")
  x = np.asarray(jax.jit(da.cmfa_event_images, static_argnums=(1, 2))(
      ip.split_host_fields(b)[0], 32, cfg))
  assert x.shape == (4, 32, 32, 3) and np.isfinite(x).all()
  for i in range(4):
    e = jax.tree.map(lambda a: a[i], pe)
    want = np.array(render_image(e, (32, 32), cfg, t_start_us=0, t_end_us=b["window_us"][i]))
    if b["event_grayscale"][i]:
      want = np.repeat((want @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1)
    x0, y0, x1, y1 = b["event_occlusion"][i]
    yy, xx = np.mgrid[0:32, 0:32]
    inside = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    want[inside] = b["event_occlusion_colour"][i]
    want = (want - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[i], want, atol=1e-4)
  sb = ip.make_dataset(examples, task="ssmer", train=True, global_batch_size=2,
                       augment_config=SSMER)[0]
  kinds = tuple(RenderConfig(k) for k in ("frame", "voxel", "time_surface"))
  v = np.asarray(da.ssmer_view_images(sb, 32, kinds))
  assert v.shape == (2, 3, 32, 32, 3) and np.isfinite(v).all()
  views = da.to_padded_events(ip.make_dataset(examples, task="ssmer", train=True,
                                              global_batch_size=2, augment_config=SSMER)[0]
                              ["views"])
  assert views.x.shape == (2, 3, CAPACITY) and views.valid.dtype == np.bool_


BUILDER = '''
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import schema
from evalign_jax.events import Events

SPEC = schema.CropSpec(image_size=64, crop_scale=1.5, event_capacity=256)


class Builder(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=schema.features(5, 64, 256))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(7)}

  def _generate_examples(self, n):
    for i in range(n):
      rng = np.random.default_rng(i)
      frame = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
      box = np.array([40, 30, 80, 70], np.float32)
      ev = Events(np.sort(rng.integers(1_001, 11_000, 300)), rng.integers(0, 120, 300),
                  rng.integers(0, 100, 300), rng.integers(0, 2, 300), (100, 120))
      yield i, schema.crop_example(frame, rng.uniform(45, 70, (5, 2)), box, ev, 1_000, 11_000,
                                   SPEC, clip_id=f"clip{i}", subject_id="s", subset="train",
                                   frame_index=i)
'''


def test_real_tfds_source(tmp_path, monkeypatch):
  pkg = tmp_path / "pkg" / "tiny_event_faces"
  pkg.mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "tiny_event_faces_dataset_builder.py").write_text(textwrap.dedent(BUILDER))
  monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
  monkeypatch.setitem(registry.DATASETS, "tiny_event_faces",
                      "tiny_event_faces.tiny_event_faces_dataset_builder")
  # pylint: disable-next=g-import-not-at-top
  from tiny_event_faces import tiny_event_faces_dataset_builder as mod
  data_dir = str(tmp_path / "data")
  mod.Builder(data_dir=data_dir, file_format="array_record").download_and_prepare()

  source = ip.make_source("tiny_event_faces", data_dir, "train")
  ds = cmfa(source, train=False, global_batch_size=4)
  batches = [ds[i] for i in range(len(ds))]
  assert len(batches) == 2 and sum(b["example_mask"].sum() for b in batches) == 7
  assert sorted(clip_ids(batches)) == [f"clip{i}" for i in range(7)]
  ref = augment.alignment_example(source[0], None, CMFA, train=False)
  np.testing.assert_array_equal(batches[0]["landmarks"][0], ref["landmarks"])
  np.testing.assert_array_equal(batches[0]["events"]["y"][0], ref["events"]["y"])

  # SSMER skips JPEG decoding; the stored size then comes from the feature spec.
  raw = ip.make_source("tiny_event_faces", data_dir, "train", decode_image=False)
  assert isinstance(raw[0]["image"], bytes)
  views = ip.make_dataset(raw, task="ssmer", train=False, global_batch_size=4,
                          augment_config=SSMER)[0]["views"]
  expect = augment.ssmer_example(source[0], None, SSMER, train=False)["views"]
  np.testing.assert_array_equal(views["x"][0], expect["x"])
  assert "tensorflow" not in sys.modules
