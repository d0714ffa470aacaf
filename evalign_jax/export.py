"""Exported models: a finished stage's model and the config that built it, in one folder.

  <workdir>/export/
    state/        the model's state (Orbax, `models/checkpoint_io.py`; no optimizer)
    config.json   the stage config (its `model`, `model_size`, `dtype`, `image_size`, `render`,
                  ... say how to rebuild the model and feed it)

Training writes it at the end of every stage (`trainers/loop.py`); later stages
(`init.event_from`, `init.rgb_from`), the `eval` stage and `predict` load it. A stage workdir
stands for its export folder everywhere. `tools/import_torch` writes the same layout from
official PyTorch checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import jax
import numpy as np
from absl import logging
from flax import nnx

from evalign_jax import distributed
from evalign_jax import files
from evalign_jax import sharding
from evalign_jax.models import checkpoint_io
from evalign_jax.models import registry

EXPORT_DIR = "export"


# Exports shipped with the package (evalign_jax/pretrained/<name>/, checksummed in SHA256SUMS),
# named "pretrained:<name>" wherever an export path is taken.
PRETRAINED_PREFIX = "pretrained:"
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
CHECKSUMS = "SHA256SUMS"


def export_dir(path: str) -> str:
  """A stage workdir, an export folder or "pretrained:<name>" -> the export folder."""
  if path.startswith(PRETRAINED_PREFIX):
    return pretrained_dir(path[len(PRETRAINED_PREFIX):])
  path = os.path.expanduser(path)
  candidate = os.path.join(path, EXPORT_DIR)
  return candidate if os.path.isdir(candidate) else path


def exported_config(path: str) -> dict:
  """The config.json of the export in `path` (a stage workdir or an export folder).

  Raises:
    FileNotFoundError: naming the expected file when there is no export.
    ValueError: naming the file when it is not a readable JSON object.
  """
  config_path = os.path.join(export_dir(path), "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{path}: no exported model (expected {config_path}); give a "
                            "finished stage's workdir, its export/ folder or an import_torch "
                            "output")
  try:
    with open(config_path) as f:
      config = json.load(f)
  except ValueError as e:
    raise ValueError(f"{config_path}: not a readable config ({e})") from e
  if not isinstance(config, dict):
    raise ValueError(f"{config_path}: not a readable config (not a JSON object)")
  return config


def export(model: nnx.Module, config: dict, directory: str) -> None:
  """Writes the model's state and the config that built it (a JSON-able dict) to `directory`.

  Written beside the target and renamed into place, so a crash never leaves half an export.
  The arrays are gathered to the host first, so the export reads back on any number of devices
  or processes. In a multi-process job every process calls it (each saves its shards of the
  state into one shared temporary folder); process 0 writes the config and renames the folder.
  """
  if hasattr(model, "mean_shape"):   # the points it predicts, to rebuild it (0 = not set yet)
    config = dict(config, num_landmarks=int(model.mean_shape.shape[0]))
  # One temporary name for all processes (they write into the same folder).
  tmp = f"{directory}.tmp" if jax.process_count() > 1 else f"{directory}.tmp-{os.getpid()}"
  if distributed.is_primary():
    shutil.rmtree(tmp, ignore_errors=True)
  distributed.barrier("export_start")
  checkpoint_io.save_model_state(os.path.join(tmp, "state"),
                                 sharding.to_host(checkpoint_io.model_state_dict(model)))
  if distributed.is_primary():
    with open(os.path.join(tmp, "config.json"), "w") as f:   # published by the rename below
      json.dump(config, f, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    logging.info("exported the model to %s", directory)
  distributed.barrier("export_done")   # no process reads the export before it is in place


def load(path: str) -> tuple[nnx.Module, dict]:
  """(model, config) from an export folder or a stage workdir (or an import_torch output).

  The model is built from the config (`models.build_model`) and filled with the saved state;
  a state that does not fit the config raises ValueError naming the differing entries.
  """
  config = exported_config(path)
  try:
    spec = registry.model_spec(config.get("model"))
  except ValueError as e:
    raise ValueError(f"{os.path.join(export_dir(path), 'config.json')}: {e}") from None
  mean_shape = None
  if spec.landmarks:
    mean_shape = np.zeros((config["num_landmarks"], 2), np.float32)   # the real one is in the state
  # Built for real: the initialisers draw with numpy, which is faster than nnx.eval_shape here.
  model = registry.build_model(config, mean_shape)
  checkpoint_io.load_model_state(os.path.join(export_dir(path), "state"), model)
  return model, config


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_checksums(root: str = PRETRAINED_DIR) -> dict[str, str]:
  """{relative path: sha256} of `root`/SHA256SUMS (`sha256sum` format); {} if absent."""
  path = os.path.join(root, CHECKSUMS)
  if not os.path.exists(path):
    return {}
  sums = {}
  with open(path) as f:
    for line in filter(None, (l.strip() for l in f)):
      digest, _, name = line.partition("  ")
      sums[name] = digest
  return sums


def pretrained_dir(name: str, root: str = PRETRAINED_DIR) -> str:
  """The shipped export `name`, after checking every file of it against SHA256SUMS.

  Raises:
    FileNotFoundError: an unknown name (the message lists the shipped ones) or a missing file.
    ValueError: a file whose checksum differs (a corrupted or edited copy), named.
  """
  sums = read_checksums(root)
  names = sorted({k.split("/", 1)[0] for k in sums})
  if name not in names:
    raise FileNotFoundError(f"pretrained:{name}: no such shipped model; shipped: "
                            f"{', '.join(names) or 'none'} (in {root})")
  for rel, digest in sums.items():
    if rel.split("/", 1)[0] != name:
      continue
    path = os.path.join(root, rel)
    if not os.path.exists(path):
      raise FileNotFoundError(f"pretrained:{name}: {path} is missing")
    if _sha256(path) != digest:
      raise ValueError(f"pretrained:{name}: {path} does not match its checksum in "
                       f"{os.path.join(root, CHECKSUMS)} (corrupted or edited)")
  return os.path.join(root, name)


def add_pretrained(path: str, name: str, root: str = PRETRAINED_DIR) -> str:
  """Copies the export in `path` into `root`/`name` and records its files' checksums.

  Replaces an earlier `name`; the other shipped exports' checksums are kept.
  """
  source = export_dir(path)
  exported_config(path)   # fails now, naming the path, when it holds no export
  target = os.path.join(root, name)
  tmp = f"{target}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(source, tmp)
  shutil.rmtree(target, ignore_errors=True)
  os.replace(tmp, target)
  sums = {k: v for k, v in read_checksums(root).items() if k.split("/", 1)[0] != name}
  for folder, _, filenames in os.walk(target):
    for filename in filenames:
      full = os.path.join(folder, filename)
      sums[os.path.relpath(full, root)] = _sha256(full)
  lines = "".join(f"{sums[k]}  {k}\n" for k in sorted(sums))
  files.write_text(os.path.join(root, CHECKSUMS), lines)
  return target
