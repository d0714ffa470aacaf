"""Bad input not covered elsewhere: each is a clear error naming the input, and nothing is
published. The README's "What happens with bad input" table lists every case and its test."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import models
from evalign_jax import predict
from evalign_jax.events import Events, EventFileError, read_events, write_events
from evalign_jax.predict import rgb as rgb_lib
from evalign_jax.predict import windows as win
from evalign_jax.trainers import alignment
from test_predict import OPTS, export_model, inner_box_shape

SENSOR = (480, 640)
BOX = (270.0, 190.0, 369.0, 289.0)


def recording(n=2000, seed=0, sensor=SENSOR):
  rng = np.random.default_rng(seed)
  h, w = sensor
  return Events(np.sort(rng.integers(1_000_000, 1_100_000, n)), rng.integers(0, w, n),
                rng.integers(0, h, n), rng.integers(0, 2, n), sensor)


@pytest.fixture
def known(known_model):
  """(path, predictor) of the known-output model (conftest.py; compiled once a session)."""
  return known_model["known"], known_model["known_predictor"]


def header_and_body(path):
  data = path.read_bytes()
  header = b"".join(l for l in data.splitlines(keepends=True) if l.startswith(b"%"))
  return header, data[len(header):]


# ----------------------------------------------------------------------------------------------
# Event files


@pytest.mark.parametrize("fmt", ["evt2", "evt3", "dat"])
def test_header_geometry_smaller_than_the_events(tmp_path, fmt):
  path = tmp_path / f"rec.{'dat' if fmt == 'dat' else 'raw'}"
  write_events(path, recording(), format=fmt)
  header, body = header_and_body(path)
  small = header.replace(b"640", b"320").replace(b"480", b"240")
  assert small != header
  path.write_bytes(small + body)
  with pytest.raises(EventFileError, match=f"{path.name}.*outside the sensor"):
    read_events(path)


@pytest.mark.parametrize("fmt,claimed", [("evt2", b"EVT3"), ("evt3", b"EVT2")])
def test_header_naming_the_wrong_evt_version(tmp_path, fmt, claimed):
  # The data decodes as nonsense: off the sensor, or not whole words. Never silently read.
  for seed in range(4):
    path = tmp_path / f"rec{seed}.raw"
    write_events(path, recording(seed=seed), format=fmt)
    header, body = header_and_body(path)
    body += bytes(-len(body) % 4)          # whole words of either kind
    path.write_bytes(header.replace(fmt.upper().encode(), claimed) + body)
    with pytest.raises(EventFileError, match=f"{path.name}.*(corrupt|truncated)"):
      read_events(path)


def test_aedat4_with_a_wrong_magic_number(tmp_path):
  path = tmp_path / "rec.aedat4"
  write_events(path, recording())
  path.write_bytes(b"#!XXX-DAT9.9" + path.read_bytes()[12:])
  with pytest.raises(EventFileError, match="rec.aedat4.*corrupt.*magic"):
    read_events(path)


@pytest.mark.parametrize("fmt,ext", [("aedat4", "aedat4"), ("evt3", "raw")])
def test_recording_without_events_is_named(tmp_path, known, fmt, ext):
  path = tmp_path / f"empty.{ext}"
  write_events(path, Events.empty(SENSOR), format=fmt)
  with pytest.raises(EventFileError, match=f"empty.{ext}.*no events"):
    predict.run(known[0], path, tmp_path / "out", predict.Options(**OPTS), known[1])
  assert not (tmp_path / "out" / "landmarks.csv").exists()


# ----------------------------------------------------------------------------------------------
# Prediction options and model output


def test_bad_box_and_window_options(tmp_path, known):
  path = tmp_path / "rec.npz"
  write_events(path, recording())
  for box, words in (((10, 10, 5, 20), "x1 > x0"), ((700, 10, 800, 90), "outside"),
                     ((0, 0, np.nan, 9), "x1 > x0")):
    with pytest.raises(ValueError, match=words):
      predict.run(known[0], path, tmp_path / "out", predict.Options(box=box, **OPTS), known[1])
  with pytest.raises(ValueError, match="multiple of stride_us"):
    predict.run(known[0], path, tmp_path / "out",
                predict.Options(**dict(OPTS, stride_us=3_000)), known[1])
  with pytest.raises(ValueError, match="not both"):
    predict.run(known[0], path, tmp_path / "out",
                predict.Options(**dict(OPTS, window_events=100)), known[1])
  assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_finite_predictions_raise_and_publish_nothing(tmp_path, known):
  path = tmp_path / "rec.npz"
  write_events(path, recording(n=20_000))
  nan_state = jax.tree.map(
      lambda a: a * jnp.nan if jnp.issubdtype(a.dtype, jnp.floating) else a, known[1].state)
  broken = predict.Predictor(**{**vars(known[1]), "state": nan_state})
  with pytest.raises(FloatingPointError, match=r"known.*non-finite.*window ending at \d+"):
    predict.run(known[0], path, tmp_path / "out", predict.Options(box=BOX, **OPTS), broken)
  assert list((tmp_path / "out").iterdir()) == []        # temporaries removed too


def test_tracking_ignores_wild_predictions():
  box = np.array([100.0, 100.0, 199.0, 199.0])
  face = np.array([[110.0, 120.0], [190.0, 195.0]])
  np.testing.assert_allclose(win.tracked_box(face, box), [110, 120, 190, 195])
  assert win.tracked_box(face * np.nan, box) is None            # NaN
  assert win.tracked_box(face * 0.01 + 150, box) is None        # collapsed to a dot
  assert win.tracked_box(face * 5, box) is None                 # 5 x larger
  assert win.tracked_box(face + 300, box) is None               # jumped 3 sides away


# ----------------------------------------------------------------------------------------------
# RGB frames


def test_rgb_inputs_are_checked(tmp_path, known):
  import cv2
  frames = tmp_path / "frames"
  frames.mkdir()
  with pytest.raises(rgb_lib.RgbInputError, match="frames.*no images"):
    rgb_lib.RgbFrames(frames)
  cv2.imwrite(str(frames / "frame_a.png"), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(rgb_lib.RgbInputError, match=r"timestamp in µs.*frame_a\.png"):
    rgb_lib.RgbFrames(frames)
  video = tmp_path / "v.mp4"
  video.write_bytes(b"\x00\x00\x00 ftypisom" + b"junk" * 50)
  with pytest.raises(rgb_lib.RgbInputError, match=r"v\.mp4\.times\.txt.*no timestamps file"):
    rgb_lib.RgbFrames(video)
  (tmp_path / "v.mp4.times.txt").write_text("100\n300\n200\n")
  with pytest.raises(rgb_lib.RgbInputError, match="times.txt.*decrease at line 3"):
    rgb_lib.RgbFrames(video)
  (tmp_path / "v.mp4.times.txt").write_text("100\n2OO\n")
  with pytest.raises(rgb_lib.RgbInputError, match="times.txt.*integers"):
    rgb_lib.RgbFrames(video)
  (tmp_path / "v.mp4.times.txt").write_text("100\n200\n")
  with pytest.raises(rgb_lib.RgbInputError, match=r"v\.mp4: cannot open|v\.mp4: the video"):
    rgb_lib.RgbFrames(video)
  with pytest.raises(rgb_lib.RgbInputError, match="nope.*no such"):
    rgb_lib.RgbFrames(tmp_path / "nope")
  # Frames of another size than the event sensor cannot be paired pixel to pixel.
  (frames / "frame_a.png").unlink()
  cv2.imwrite(str(frames / "1000000.png"), np.zeros((240, 320, 3), np.uint8))
  path = tmp_path / "rec.npz"
  write_events(path, recording())
  # The size check comes before the model runs, so the event model posing as rgb_slpt will do.
  rgb_slpt = predict.Predictor(**{**vars(known[1]), "kind": "rgb_slpt"})
  with pytest.raises(ValueError, match="frames.*320x240.*640x480.*registered"):
    predict.run(known[0], path, tmp_path / "out",
                predict.Options(rgb=str(frames), **OPTS), rgb_slpt)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoints_of_the_wrong_kind_or_shape(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing_here.*config.json"):
    predict.load_predictor(str(tmp_path / "nothing_here"))
  for name, text, words in (("ssmer", json.dumps({"model": "ssmer"}), "SSMER.*init.event_from"),
                            ("other", json.dumps({"model": "resnet"}), "config.json.*'resnet'"),
                            ("corrupt", '{"model": "slpt_ev', "config.json.*not a readable")):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(text)
    with pytest.raises(ValueError, match=words):
      predict.load_predictor(str(tmp_path / name))
  # A state saved by another configuration than its config.json says: named, never half-loaded.
  path = export_model(tmp_path / "tiny", "slpt_event", inner_box_shape())
  cfg = json.loads((tmp_path / "tiny" / "config.json").read_text())
  cfg["model_size"]["d_model"] = 64
  cfg["model_size"]["ffn_dim"] = 64
  (tmp_path / "tiny" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="tiny.*does not match the model"):
    predict.load_predictor(path)
  # Training initialised from a checkpoint of the wrong kind is refused by name.
  tiny = dict(config_utils.TINY_MODEL_SIZE)
  (tmp_path / "tiny" / "config.json").write_text(json.dumps(dict(cfg, model_size=tiny)))
  model = models.build_model(dict(cfg, model_size=tiny), inner_box_shape())
  init = ml_collections.ConfigDict({"init": {"event_from": path, "rgb_from": "", "aligner_from": ""}})
  with pytest.raises(config_utils.ConfigError, match="tiny.*not an SSMER encoder"):
    alignment.init_branches(model, "slpt_event", init)
  assert export.exported_config(path)["model"] == "slpt_event"
