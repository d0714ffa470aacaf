"""Model-state checkpoints (Orbax), shared by `tools/import_torch` and the trainers' `init_from`.

Layout: one Orbax `StandardCheckpointer` directory holding a nested dict of arrays,

    nnx.to_pure_dict(nnx.state(model, MODEL_STATE)), every key a string

(list indices become "0", "1", ...), where MODEL_STATE is every variable except RNG streams: the
Params, the BatchNorm statistics (BatchStat), the mean shape (Buffer) and SimSiam's frozen bias
(FrozenParam). E.g. `{"backbone": {"conv1": {"kernel": (3, 3, 3, 64)}, "bn1": {"mean": ...}, ...},
"decoder": {"layers": {"self_attn": {"query": {"kernel": (6, 256, 256)}}}}, "mean_shape": (98, 2)}`.
Optimizer state and training progress are the trainers' business (their CheckpointManager); this is
only the model, e.g. a converted PyTorch checkpoint or the model part of a finished run.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

# Every model variable except RNG streams (dropout keys and counters are not model state).
MODEL_STATE = nnx.Not(nnx.RngState)


def _stringify(tree):
  if isinstance(tree, dict):
    return {str(k): _stringify(v) for k, v in tree.items()}
  return tree


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (str(k),)))
    return out
  return {prefix: tree}


def _rebuild(like, flat, prefix=()):
  """`like`'s structure (original key types) with leaves taken from `flat` (string paths)."""
  if isinstance(like, dict):
    return {k: _rebuild(v, flat, prefix + (str(k),)) for k, v in like.items()}
  return flat[prefix]


def model_state_dict(model: nnx.Module) -> dict[str, Any]:
  """The model's checkpointable state as a nested dict with string keys (the saved layout)."""
  return _stringify(nnx.to_pure_dict(nnx.state(model, MODEL_STATE)))


def save_model_state(path: str, model_or_state: nnx.Module | dict) -> None:
  """Writes a model's state (or an already built state dict in the saved layout) to `path`.

  `path` must not exist yet (Orbax writes atomically to a new directory).
  """
  state = (model_state_dict(model_or_state) if isinstance(model_or_state, nnx.Module)
           else _stringify(model_or_state))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), state)
  checkpointer.wait_until_finished()


def read_model_state(path: str) -> dict[str, Any]:
  """The saved nested dict (string keys, arrays on the default device), no model needed."""
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def load_model_state(path: str, model: nnx.Module, *, strict: bool = True) -> list[str]:
  """Restores a checkpoint written by `save_model_state` into `model`, in place.

  Arrays are restored with the dtype and sharding of the model's current ones, so a model built
  (and sharded) by the trainer can be filled directly.

  Args:
    path: the checkpoint directory.
    model: a model whose structure matches the checkpoint.
    strict: if True, any missing, unexpected or reshaped entry raises ValueError. If False, only the
      entries present in both with equal shapes are loaded.

  Returns:
    The '/'-joined paths of the model's entries that were not loaded (empty when strict).
  """
  path = os.path.abspath(path)
  checkpointer = ocp.StandardCheckpointer()
  saved = _flatten(jax.tree.map(
      lambda m: tuple(m.shape), checkpointer.metadata(path).item_metadata.tree))
  state = nnx.state(model, MODEL_STATE)
  ours = _flatten(nnx.to_pure_dict(state))
  missing = sorted(set(ours) - set(saved))
  unexpected = sorted(set(saved) - set(ours))
  reshaped = sorted(p for p in set(ours) & set(saved) if tuple(ours[p].shape) != saved[p])
  if strict and (missing or unexpected or reshaped):
    show = lambda ps: ", ".join("/".join(p) for p in ps[:8]) + (" ..." if len(ps) > 8 else "")
    raise ValueError(
        f"checkpoint {path} does not match the model: missing [{show(missing)}], unexpected "
        f"[{show(unexpected)}], shape differs [{show(reshaped)}]")
  wanted = [p for p in ours if p in saved and p not in reshaped]
  if len(wanted) == len(saved):  # Exact match: restore straight into the model's shardings.
    target = {}
    for p in wanted:
      node = target
      for k in p[:-1]:
        node = node.setdefault(k, {})
      a = ours[p]
      node[p[-1]] = jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None))
    restored = _flatten(checkpointer.restore(path, target))
  else:
    everything = _flatten(checkpointer.restore(path))
    restored = {p: jax.device_put(everything[p].astype(ours[p].dtype), ours[p].sharding)
                for p in wanted}
  flat = {p: restored.get(p, ours[p]) for p in ours}
  nnx.replace_by_pure_dict(state, _rebuild(nnx.to_pure_dict(state), flat))
  nnx.update(model, state)
  return ["/".join(p) for p in ours if p not in restored]


def state_dict_from_arrays(tree: dict) -> dict[str, Any]:
  """Converts a nested dict of numpy arrays (e.g. from import_torch) to the saved layout."""
  return _stringify(jax.tree.map(np.asarray, tree))


def update_from_pure_dict(model: nnx.Module, tree: dict) -> None:
  """Writes a full nested dict of arrays (string or int keys, e.g. from import_torch) into `model`.

  The dict must hold exactly the model's checkpointable entries with the same shapes.
  """
  state = nnx.state(model, MODEL_STATE)
  like = nnx.to_pure_dict(state)
  ours, theirs = _flatten(like), _flatten(tree)
  bad = sorted(set(ours) ^ set(theirs)) + sorted(
      p for p in set(ours) & set(theirs) if tuple(ours[p].shape) != tuple(np.shape(theirs[p])))
  if bad:
    raise ValueError(f"state does not fit the model at {len(bad)} entries, e.g. "
                     f'{["/".join(p) for p in bad[:8]]}')
  flat = {p: jax.device_put(np.asarray(theirs[p]).astype(ours[p].dtype), ours[p].sharding)
          for p in ours}
  nnx.replace_by_pure_dict(state, _rebuild(like, flat))
  nnx.update(model, state)
