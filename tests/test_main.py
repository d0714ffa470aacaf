"""The entry point, config variants, the stage registry and one-line user errors."""

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from evalign_jax import config_utils
from evalign_jax import runtime
from evalign_jax import stages
from evalign_jax.events import read_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg_variants_and_typos():
  arg = config_utils.parse_arg("runlocal,seed=3,name=abc", runlocal=False, seed=0, name="x")
  assert arg.runlocal is True and arg.seed == 3 and arg.name == "abc"
  assert config_utils.parse_arg(None, runlocal=False).runlocal is False
  with pytest.raises(config_utils.ConfigError, match="unknown config variant 'runlokal'"):
    config_utils.parse_arg("runlokal", runlocal=False)
  with pytest.raises(config_utils.ConfigError, match="needs a value"):
    config_utils.parse_arg("seed", seed=0)


def test_unknown_stage_lists_valid_ones():
  with pytest.raises(config_utils.ConfigError, match="events_demo"):
    stages.get_stage("ssmerr")


def test_one_line_names_the_wrapped_cause():
  # The config loader re-raises a config file's error with the traceback as its message, and
  # absl wraps that: the line is the original message.
  try:
    try:
      try:
        raise config_utils.ConfigError("unknown config variant 'runlokal'")
      except config_utils.ConfigError as e:
        raise config_utils.ConfigError("Error whilst parsing config file:\n\nTraceback (most "
                                       "recent call last):\n  ...") from e
    except config_utils.ConfigError as e:
      from absl import flags
      raise flags.IllegalFlagValueError("flag --config=x: Error whilst parsing") from e
  except Exception as e:   # pylint: disable=broad-except
    assert runtime.one_line(e) == "unknown config variant 'runlokal'"
  # A mistyped field: the KeyError's own message, quotes and hint on one line.
  assert runtime.one_line(KeyError("'simulatr'\nDid you mean \"simulator\"?")) == (
      "'simulatr' Did you mean \"simulator\"?")


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "evalign_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_events_demo_end_to_end(tmp_path):
  out = run_main("--config=configs/events_demo.py:runlocal", f"--workdir={tmp_path}",
                 "--config.scene.height=48", "--config.scene.width=64",
                 "--config.scene.num_frames=5", "--config.output_format=npz",
                 "--config.render.capacity=8192")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  events = read_events(tmp_path / "events.npz")
  assert summary["events"] == len(events) > 0
  assert events.sensor_size == (48, 64) and summary["sensor_size"] == [48, 64]
  assert events.metadata["simulator"]["preset"] == "v2e_default"
  assert np.all(np.diff(events.t) >= 0)
  assert (tmp_path / "representations.png").stat().st_size > 0
  assert "events" in out.stdout and "frames/s" in out.stdout


@pytest.mark.slow
def test_config_typo_fails_loudly(tmp_path):
  out = run_main("--config=configs/events_demo.py:runlocal", f"--workdir={tmp_path}",
                 "--config.simulatr.seed=1")
  assert out.returncode != 0 and "simulatr" in out.stderr
  assert not (tmp_path / "summary.json").exists()


DATA = "--config.data_dir={tmp}/data"


@pytest.mark.slow
@pytest.mark.parametrize("args,words", [
    (["--config=configs/events_demo.py:runlokal"], "unknown config variant 'runlokal'"),
    (["--config=configs/events_demo.py", "--config.simulatr.seed=1"],
     "'simulatr' Did you mean \"simulator\""),
    (["--config=configs/nothere.py"], "configs/nothere.py"),
    (["--config=configs/cmfa.py:runlocal"], "cmfa needs init.rgb_from"),
    (["--config=configs/rgb_slpt.py:runlocal", "--config.dataset=wflw_v_events", DATA],
     "dataset wflw_v_events is not built in .*: python -m data_pipelines.build "
     "--dataset=wflw_v_events --manual_dir=RAW_DATA"),
    (["--config=configs/eval.py:tiny", "--config.checkpoint={tmp}/nowhere", DATA],
     "nowhere: no exported model"),
])
def test_a_config_that_cannot_run_is_one_line(tmp_path, args, words):
  out = run_main(*(a.format(tmp=tmp_path) for a in args), f"--workdir={tmp_path / 'w'}")
  assert out.returncode == 1, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
  assert re.search(words, lines[0]), lines[0]


@pytest.mark.slow
def test_pipeline_demo_end_to_end(tmp_path):
  out = run_main("--config=configs/pipeline_demo.py:runlocal", f"--workdir={tmp_path / 'w'}",
                 f"--config.data_dir={tmp_path / 'data'}", "--config.dataset=synthetic_faces/tiny",
                 "--config.batch_size=2", "--config.num_batches=1", "--config.preview_rows=2",
                 "--config.cmfa_image_size=64", "--config.ssmer_image_size=48")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "w" / "summary.json").read_text())
  assert summary["train_examples"] == 4 and summary["build_report"]["train"]["examples"] == 4
  assert summary["cmfa"]["host_samples_per_s"] > 0 and summary["ssmer"]["device_images_per_s"] > 0
  import cv2
  picture = cv2.imread(str(tmp_path / "w" / "batches.png"))
  # CMFA rows are 2 x 64 px (RGB | events) wide; SSMER rows 3 x 48 px.
  assert picture.shape[0] == 2 * 64 + 8 + 2 * 48 + 8 and picture.shape[1] == 3 * 48


def docstring_commands():
  """(config file, command) for every `python -m evalign_jax.main` line of the configs'
  docstrings, continuation lines joined."""
  out = []
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py"):
      doc = ast.get_docstring(ast.parse(open(os.path.join(REPO, "configs", name)).read())) or ""
      for command in re.findall(r"python -m evalign_jax\.main(?:[^\n\\]|\\\n)*", doc):
        out.append((name, " ".join(command.replace("\\\n", " ").split())))
  return out


@pytest.mark.parametrize("name,command", docstring_commands())
def test_config_docstring_commands_parse(name, command):
  # Each command's config and variant load, and every field it sets exists: what --config
  # would do before running (the commands themselves run in the slow tests and by hand).
  args = dict(a[2:].split("=", 1) for a in command.split()[3:])
  assert set(args) <= {"config", "workdir"} | {k for k in args if k.startswith("config.")}
  # A training config's docstring may also show how to evaluate what it trains (eval.py).
  assert "workdir" in args and args["config"].startswith((f"configs/{name}", "configs/eval.py"))
  config = config_utils.load_config(args.pop("config"))
  for key, value in args.items():
    if key.startswith("config."):
      *parents, field = key.split(".")[1:]
      node = config
      for p in parents:
        node = node[p]
      assert field in node, key
      node[field] = type(node[field])(value)
  if config.stage == "cmfa" and config.model == "cmfa":
    assert config.init.rgb_from, command   # the command must give what the stage needs


def test_every_config_documents_its_commands():
  assert {name for name, _ in docstring_commands()} == {
      n for n in os.listdir(os.path.join(REPO, "configs")) if n.endswith(".py")}
