"""Pictures and tables: training-time pictures (PNG + TensorBoard image), the eval stage's
per-subset table and CED curves."""

import json
import struct

import cv2
import numpy as np
from tensorboardX.proto import event_pb2

from data_pipelines.build import ensure_built
from evalign_jax import config_utils
from evalign_jax import evaluate
from evalign_jax import metric_writers
from evalign_jax.evaluators import landmarks


def tensorboard_events(folder):
  """Every Event in a folder's tfevents files (TFRecord: length, crc, payload, crc)."""
  out = []
  for path in folder.glob("events.out.tfevents.*"):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
  return out


def test_pictures_go_to_png_and_tensorboard(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  writer = metric_writers.MetricWriter(str(tmp_path))
  writer.write_pictures(40, {"val_predictions": image})
  writer.close()
  png = cv2.imread(str(tmp_path / "pictures" / "val_predictions_40.png"))[..., ::-1]
  np.testing.assert_array_equal(png, image)   # lossless, RGB order kept
  images = [(e.step, v.tag, v.image) for e in tensorboard_events(tmp_path / "tensorboard")
            for v in e.summary.value if v.HasField("image")]
  assert len(images) == 1
  step, tag, tb_image = images[0]
  assert (step, tag, tb_image.height, tb_image.width) == (40, "val_predictions", 20, 30)
  decoded = cv2.imdecode(np.frombuffer(tb_image.encoded_image_string, np.uint8),
                         cv2.IMREAD_COLOR)[..., ::-1]
  np.testing.assert_array_equal(decoded, image)


def test_eval_writes_per_subset_table_and_curves(tmp_path):
  data = str(tmp_path / "data")
  ensure_built("synthetic_faces/tiny", data)
  config = config_utils.load_config("configs/eval.py:tiny")
  config.checkpoint, config.data_dir = "mean_shape", data
  config.evals.test.num_pictures = 3
  work = tmp_path / "eval"
  result = evaluate.run(config, str(work))["test"]
  out = work / "test"
  # The synthetic set's subsets are lighting conditions; the tiny test split has two.
  subsets = result["per_subset"]
  assert len(subsets) == 2 and "normal" in subsets
  assert sum(s["n"] for s in subsets.values()) == result["num_images"] == 4
  # The mean NME is the image-weighted mean of the subsets'.
  assert np.isclose(sum(s["nme"] * s["n"] for s in subsets.values()) / 4, result["nme"])
  table = (out / "table.txt").read_text()
  for name, s in subsets.items():
    assert any(line.split()[:2] == [name, f"{s['nme']:.2f}"] for line in table.splitlines())
  assert json.loads((out / "results.json").read_text())["per_subset"] == subsets
  nmes = np.arange(4) / 10
  curves = landmarks.ced_curves("m", nmes, np.array([b"a", b"b", b"a", b""], object))
  assert list(curves) == ["m", "m: a", "m: b"]
  np.testing.assert_array_equal(curves["m: a"], [0.0, 0.2])
  assert list(landmarks.ced_curves("m", nmes, np.array([b""] * 4, object))) == ["m"]
  for name in ("ced.png", "worst.png"):
    assert cv2.imread(str(out / name)) is not None
  assert cv2.imread(str(out / "worst.png")).shape[1] == 2 * 32   # 3 tiles, 2 per row


def test_event_only_crops_are_pictured_on_their_frame_rendering():
  # An 8 px crop with one ON event at (x=3, y=2) and four OFF events at (5, 5); the frame
  # rendering clips counts at 4: ON 1/4 -> (0.75, 0.75, 1), OFF 4/4 -> (1, 0, 0), white else.
  xs, ys, ps = [3, 5, 5, 5, 5, 0], [2, 5, 5, 5, 5, 0], [1, 0, 0, 0, 0, 0]
  valid = [True] * 5 + [False]                             # and a padding slot
  batch = {"events": {"x": np.array([xs], np.int16), "y": np.array([ys], np.int16),
                      "t": np.array([[10, 20, 30, 40, 50, 0]], np.int32),
                      "p": np.array([ps], np.uint8), "valid": np.array([valid])},
           "window_us": np.array([100], np.int32)}
  crops = landmarks.event_crops(batch, 8)
  want = np.full((1, 8, 8, 3), 255, np.uint8)
  want[0, 2, 3] = [191, 191, 255]
  want[0, 5, 5] = [255, 0, 0]
  np.testing.assert_array_equal(crops, want)
