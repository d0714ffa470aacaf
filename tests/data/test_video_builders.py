"""WFLW-V, eCelebV and E-SIE builders on tiny inputs written here in each dataset's real layout."""

import json

import cv2
import numpy as np
import pytest

from data_pipelines import geometry
from data_pipelines import registry
from data_pipelines import schema
from data_pipelines import video_dataset
from data_pipelines.esie import esie_dataset_builder as esie
from data_pipelines.video_examples import BadInput
from data_pipelines.wflw_v_events import wflw_v_events_dataset_builder as wflw_v
from evalign_jax.events import Events, write_events

H, W, T = 72, 96, 5
TINY = schema.CropSpec(image_size=48, crop_scale=1.5, event_capacity=512, jpeg_quality=95)


def moving_video(seed, n=T):
  """A bright square moving right over a dark textured background, and its 98 'landmarks'."""
  rng = np.random.default_rng(seed)
  bg = cv2.GaussianBlur(rng.uniform(20, 60, (H, W)).astype(np.float32), (0, 0), 2)
  frames, lms = [], []
  base = rng.uniform([-8, -8], [8, 8], (98, 2)) + [40, 36]
  for k in range(n):
    img = bg.copy()
    x0 = 25 + 3 * k
    img[26:46, x0:x0 + 20] = 200
    frames.append(np.repeat(img.astype(np.uint8)[..., None], 3, -1))
    lms.append(base + [3 * k, 0])
  return np.stack(frames), np.stack(lms)


def write_mp4(path, frames, fps=30.0):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
  assert writer.isOpened()
  for f in frames:
    writer.write(f[..., ::-1])
  writer.release()


def read_all(path):
  cap = cv2.VideoCapture(str(path))
  out = []
  while True:
    ok, f = cap.read()
    if not ok:
      return np.stack(out)
    out.append(f[..., ::-1])


@pytest.fixture(scope="module")
def wflw_v_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("wflw_v")
  for d in ("videos", "landmarks", "bboxes"):
    (root / d).mkdir()
  for i, vid in enumerate(["vid0", "vid1", "vid2", "vid3"]):
    frames, lms = moving_video(i)
    write_mp4(root / "videos" / f"{vid}.mp4", frames)
    np.save(root / "landmarks" / f"{vid}.npy", lms.astype(np.float32))
    boxes = np.stack([np.r_[geometry.box_of_points(l), 0.99] for l in lms])   # x1,y1,x2,y2,score
    np.save(root / "bboxes" / f"{vid}.npy", boxes)
  (root / "easy_video_IDs.txt").write_text("vid0\nvid1\n")
  (root / "hard_video_IDs.txt").write_text("vid2\nvid3\n")
  # Bad inputs: a corrupt video, a label/frame count mismatch, NaN labels.
  (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"junk" * 50)
  np.save(root / "landmarks" / "broken.npy", np.zeros((T, 98, 2), np.float32))
  np.save(root / "bboxes" / "broken.npy", np.ones((T, 4)))
  frames, lms = moving_video(7)
  write_mp4(root / "videos" / "short.mp4", frames[:3])
  np.save(root / "landmarks" / "short.npy", lms.astype(np.float32))
  np.save(root / "bboxes" / "short.npy", np.stack([geometry.box_of_points(l) for l in lms]))
  write_mp4(root / "videos" / "nan.mp4", frames)
  bad = lms.astype(np.float32)
  bad[2, 5] = np.nan
  np.save(root / "landmarks" / "nan.npy", bad)
  np.save(root / "bboxes" / "nan.npy", np.stack([geometry.box_of_points(l) for l in lms]))
  return root


def tiny_wflw_v(data_dir, on_error="skip"):
  # By the stable hash, vid1 and vid3 go to "train", vid0 and vid2 to "test".
  config = video_dataset.VideoConfig(name="tiny", crop=TINY,
                                     split_fractions={"train": 0.5, "test": 0.5})
  return wflw_v.Builder(data_dir=str(data_dir), config=config, on_error=on_error)


def test_wflw_v_builds_skips_bad_inputs_and_maps_labels(tmp_path, wflw_v_dir):
  b = tiny_wflw_v(tmp_path)
  b.download_and_prepare(file_format="array_record", download_config=_manual(wflw_v_dir))
  report = {k: v for k, v in b.info.metadata.items()}
  skipped = sum(r["skipped"] for r in report.values())
  reasons = " ".join(s for r in report.values() for s in r["skipped_inputs"])
  assert skipped == 3
  assert "broken.mp4" in reasons and "short.mp4" in reasons and "nan.npy" in reasons
  examples = []
  splits = {}
  for split in ("train", "test"):
    src = b.as_data_source(split=split)
    for i in range(len(src)):
      ex = src[i]
      examples.append(ex)
      splits.setdefault(ex["clip_id"], set()).add(split)
  # Split by video: every video in exactly one split; T - 1 windows per good video.
  assert all(len(s) == 1 for s in splits.values())
  assert sorted(splits) == [b"vid0", b"vid1", b"vid2", b"vid3"] and len(examples) == 4 * (T - 1)
  assert splits[b"vid1"] == splits[b"vid3"] == {"train"}
  for ex in examples:
    vid = ex["clip_id"].decode()
    k = int(ex["frame_index"])
    assert ex["subset"].decode() == {"vid0": "easy", "vid1": "easy"}.get(vid, "hard")
    lms = np.load(wflw_v_dir / "landmarks" / f"{vid}.npy")[k]
    box = np.load(wflw_v_dir / "bboxes" / f"{vid}.npy")[k, :4]
    m = geometry.box_crop_matrix(box, 1.5, 48)
    np.testing.assert_allclose(ex["landmarks"], geometry.apply_to_points(m, lms), atol=1e-4)
    # The stored crop equals the decoded frame warped by the same matrix (JPEG tolerance).
    frame = read_all(wflw_v_dir / "videos" / f"{vid}.mp4")[k]
    want = cv2.warpAffine(frame, m, (48, 48), flags=cv2.INTER_LINEAR)
    assert np.abs(ex["image"].astype(int) - want).mean() < 4
    ev = ex["events"]
    n = int(ev["count"])
    assert n > 0 and n <= 512 and int(ev["count_total"]) >= n
    assert np.all(ev["t"][:n] > 0) and np.all(ev["t"][:n] <= ex["window_us"])
    assert int(ex["window_us"]) in (33333, 33334)
    xy = np.stack([ev["x"][:n], ev["y"][:n]], -1).astype(np.float64)
    assert np.all(xy >= -0.5) and np.all(xy < 47.5)
    assert not np.any(ev["x"][n:]) and not np.any(ev["t"][n:])   # zero padding


def test_wflw_v_fail_mode_names_the_file_and_leaves_nothing_complete(tmp_path, wflw_v_dir):
  b = tiny_wflw_v(tmp_path, on_error="fail")
  with pytest.raises(BadInput, match=r"broken\.mp4|short\.mp4|nan\.npy"):
    b.download_and_prepare(file_format="array_record", download_config=_manual(wflw_v_dir))
  assert not (b.data_path / "dataset_info.json").exists()
  with pytest.raises(Exception):
    b.as_data_source(split="train")


def _manual(path):
  import tensorflow_datasets as tfds
  return tfds.download.DownloadConfig(manual_dir=str(path))


def test_ecelebv_split_file_and_missing_labels(tmp_path):
  root = tmp_path / "celebv"
  (root / "videos").mkdir(parents=True)
  (root / "labels").mkdir()
  for i, vid in enumerate(["c1", "c2", "c3"]):
    frames, lms = moving_video(10 + i)
    write_mp4(root / "videos" / f"{vid}.mp4", frames)
    if vid != "c3":
      np.save(root / "labels" / f"{vid}.npy", lms)
  (root / "split.json").write_text(json.dumps({"train": ["c1", "c3"], "validation": ["c2"],
                                               "test": []}))
  from data_pipelines.ecelebv_events import ecelebv_events_dataset_builder as ecelebv
  config = video_dataset.VideoConfig(
      name="tiny", crop=TINY, frame_stride=2,
      split_fractions={"train": 0.8, "validation": 0.1, "test": 0.1})
  b = ecelebv.Builder(data_dir=str(tmp_path / "data"), config=config)
  b.download_and_prepare(file_format="array_record", download_config=_manual(root))
  train, val = b.as_data_source(split="train"), b.as_data_source(split="validation")
  # Frames 1 and 3 of each 5-frame clip (stride 2); c3 has no labels and is skipped.
  assert sorted(int(train[i]["frame_index"]) for i in range(len(train))) == [1, 3]
  assert {val[i]["clip_id"] for i in range(len(val))} == {b"c2"}
  assert "c3.npy" in " ".join(b.info.metadata["build_report_train"]["skipped_inputs"])
  lms = np.load(root / "labels" / "c2.npy")[1]
  m = geometry.box_crop_matrix(geometry.box_of_points(lms), 1.5, 48)
  got = [val[i] for i in range(len(val)) if int(val[i]["frame_index"]) == 1][0]
  np.testing.assert_allclose(got["landmarks"], geometry.apply_to_points(m, lms), atol=1e-4)


def esie_layout(root, with_events=True, drop_rgb=None):
  rng = np.random.default_rng(0)
  times = {}
  for user, sub in (("u1", "s1"), ("u2", "s1")):
    for d in ("label", "rgb", "frame"):
      (root / d / user / sub).mkdir(parents=True, exist_ok=True)
    names = [f"{i:04d}" for i in range(3)]
    t = 1_000_000 + 40_000 * np.arange(3)
    for i, name in enumerate(names):
      pts = rng.uniform(30, 60, (5, 2))
      box = [20, 20, 70, 60]
      (root / "label" / user / sub / f"{name}.txt").write_text(
          " ".join(f"{v:.3f}" for v in [*pts.ravel(), *box]) + "\n")
      img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
      if drop_rgb != (user, name):
        cv2.imwrite(str(root / "rgb" / user / sub / f"{name}.png"), img)
      cv2.imwrite(str(root / "frame" / user / sub / f"{name}.png"), 255 - img)
    times[(user, sub)] = t
    if with_events:
      (root / "timestamps" / user).mkdir(parents=True, exist_ok=True)
      (root / "timestamps" / user / f"{sub}.txt").write_text(
          "".join(f"{n} {tt}\n" for n, tt in zip(names, t)))
      n = 3000
      ev = Events(np.sort(rng.integers(t[0] - 40_000, t[-1] + 1, n)), rng.integers(0, W, n),
                  rng.integers(0, H, n), rng.integers(0, 2, n), (H, W))
      (root / "events" / user).mkdir(parents=True, exist_ok=True)
      write_events(root / "events" / user / f"{sub}.aedat4", ev)
  return times


def test_esie_raw_windows_and_labels(tmp_path):
  root = tmp_path / "ESIE"
  times = esie_layout(root)
  config = esie.EsieConfig(name="tiny_raw", num_landmarks=5, crop=TINY)
  b = esie.Builder(data_dir=str(tmp_path / "data"), config=config)
  b.download_and_prepare(file_format="array_record", download_config=_manual(root))
  src = b.as_data_source(split="test")
  assert len(src) == 6
  from evalign_jax.events import read_events
  for i in range(len(src)):
    ex = src[i]
    user, sub = ex["clip_id"].decode().split("/")
    k = int(ex["frame_index"])
    t = times[(user, sub)]
    t0 = t[k - 1] if k else t[0] - 40_000
    assert int(ex["t_start_us"]) == t0 and int(ex["window_us"]) == t[k] - t0
    ev = read_events(root / "events" / user / f"{sub}.aedat4")
    label = np.loadtxt(root / "label" / user / sub / f"{k:04d}.txt")
    m = geometry.box_crop_matrix(label[10:], 1.5, 48)
    np.testing.assert_allclose(ex["landmarks"], geometry.apply_to_points(
        m, label[:10].reshape(5, 2)), atol=1e-4)
    window = ev.time_window(t0 + 1, t[k] + 1)
    xy = geometry.apply_to_points(m, np.stack([window.x, window.y], -1))
    inside = np.all((xy >= -0.5) & (xy < 47.5), -1)
    assert int(ex["events"]["count_total"]) == inside.sum()
    n = int(ex["events"]["count"])
    np.testing.assert_allclose(ex["events"]["x"][:n], xy[inside][-n:, 0], atol=0.05)


def test_esie_rendered_and_missing_pair(tmp_path):
  root = tmp_path / "ESIE"
  esie_layout(root, with_events=False, drop_rgb=("u2", "0001"))
  config = esie.EsieConfig(name="tiny_rendered", num_landmarks=5, crop=TINY,
                           source="rendered")
  b = esie.Builder(data_dir=str(tmp_path / "data"), config=config)
  b.download_and_prepare(file_format="array_record", download_config=_manual(root))
  src = b.as_data_source(split="test")
  assert len(src) == 3   # the u2 session lost a pair and is skipped whole
  assert "0001.png" in b.info.metadata["build_report_test"]["skipped_inputs"][0]
  ex = src[0]
  assert ex["event_image"].shape == (48, 48, 3) and int(ex["events"]["count"]) == 0


def test_build_cli_function_and_registry_errors(tmp_path, wflw_v_dir):
  with pytest.raises(ValueError, match="valid datasets"):
    registry.builder("wflw_v", data_dir=tmp_path)
  with pytest.raises(ValueError, match="valid: \\['default', 'stride5'\\]"):
    registry.builder("wflw_v_events/tiny", data_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="not built"):
    registry.data_source("wflw_v_events", data_dir=tmp_path, split="train")
  assert not registry.is_built("wflw_v_events", data_dir=tmp_path)
