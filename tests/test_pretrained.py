"""The shipped pretrained exports: checksummed, loaded by name, and added by one function."""

import os
import shutil
import subprocess

import jax
import numpy as np
import pytest
from flax import nnx

from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import models
from evalign_jax.models import checkpoint_io


def _arrays(model) -> dict:
  pure = nnx.to_pure_dict(nnx.state(model, checkpoint_io.MODEL_STATE))
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(pure)}


def test_shipped_exports_match_their_checksums_and_load_by_name():
  # sha256sum (coreutils) checks the SHA256SUMS file independently of our reader.
  out = subprocess.run(["sha256sum", "--check", "--strict", export.CHECKSUMS],
                       cwd=export.PRETRAINED_DIR, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  checked = {line.rsplit(":", 1)[0] for line in out.stdout.splitlines()}
  on_disk = {os.path.relpath(os.path.join(d, f), export.PRETRAINED_DIR)
             for d, _, fs in os.walk(export.PRETRAINED_DIR) for f in fs} - {export.CHECKSUMS}
  assert checked == on_disk   # every shipped file is covered
  total = sum(os.path.getsize(os.path.join(export.PRETRAINED_DIR, p)) for p in on_disk)
  assert total < 20e6
  slpt, cfg = export.load("pretrained:rgb_slpt")
  assert cfg["model"] == "rgb_slpt" and cfg["num_landmarks"] == 98
  assert cfg["model_size"] == config_utils.RUNLOCAL_MODEL_SIZE   # what the quick start trains
  assert isinstance(slpt, models.SLPT) and slpt.mean_shape.shape == (98, 2)
  _, cfg = export.load("pretrained:ssmer")
  assert cfg["model"] == "ssmer"


def test_an_unknown_or_corrupted_pretrained_export_is_a_one_line_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"pretrained:nope: no such shipped model; "
                     r"shipped: rgb_slpt, ssmer"):
    export.load("pretrained:nope")
  root = tmp_path / "pretrained"
  shutil.copytree(export.PRETRAINED_DIR, root)
  assert export.pretrained_dir("rgb_slpt", str(root)) == str(root / "rgb_slpt")
  victim = root / "rgb_slpt" / "config.json"
  victim.write_text(victim.read_text().replace('"rgb_slpt"', '"rgb_slpx"', 1))
  with pytest.raises(ValueError, match=f"{victim} does not match its checksum"):
    export.pretrained_dir("rgb_slpt", str(root))
  victim.unlink()
  with pytest.raises(FileNotFoundError, match=f"{victim} is missing"):
    export.pretrained_dir("rgb_slpt", str(root))


def test_add_pretrained_ships_an_export_with_its_checksums(tmp_path):
  config = config_utils.load_config("configs/cmfa.py:tiny,model=slpt_event").to_dict()
  mean = np.random.default_rng(0).uniform(0.3, 0.7, (5, 2)).astype(np.float32)
  model = models.build_model(config, mean, seed=3)
  export.export(model, config, str(tmp_path / "run" / "export"))
  root = tmp_path / "pretrained"
  root.mkdir()
  (root / export.CHECKSUMS).write_text("0" * 64 + "  other/config.json\n")   # kept
  target = export.add_pretrained(str(tmp_path / "run"), "mine", str(root))
  assert target == str(root / "mine")
  lines = (root / export.CHECKSUMS).read_text().splitlines()
  kept = "0" * 64 + "  other/config.json"
  assert kept in lines and len(lines) > 2
  mine = [l for l in lines if l != kept]
  assert all(l.split("  ")[1].startswith("mine/") for l in mine)
  out = subprocess.run(["sha256sum", "--check", "--strict"], input="\n".join(mine) + "\n",
                       cwd=root, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr
  loaded, cfg = export.load(export.pretrained_dir("mine", str(root)))
  assert cfg["num_landmarks"] == 5   # recorded from the model, whatever the config said
  got, want = _arrays(loaded), _arrays(model)
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=str(k))
  with pytest.raises(FileNotFoundError):
    export.add_pretrained(str(tmp_path / "nothing"), "x", str(root))
  assert not (root / "x").exists()
