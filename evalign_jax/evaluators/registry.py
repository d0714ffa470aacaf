"""Evaluators by type: a config's `evals` entries -> evaluator objects.

Each entry of `config.evals` is one evaluator, named by its key (the prefix of its metrics and
pictures, e.g. `val_nme`, `val_predictions`) and built from its fields: `type` selects the
class, the others are its keyword arguments. An evaluator has `every` (training steps between
runs), `SCALARS` (the metrics the training log shows) and `run(state) -> (metrics, pictures)`.
Entries are import paths, so only the evaluators used are imported; a new kind is added by
registering it here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

# type -> "module:class"
EVALUATORS = {
    "landmarks": "evalign_jax.evaluators.landmarks:LandmarkEvaluator",
}


def evaluator_class(kind: str):
  """The class of evaluator type `kind`; unknown types raise with the valid ones."""
  if kind not in EVALUATORS:
    raise ValueError(f"unknown evaluator type {kind!r}; valid: {sorted(EVALUATORS)}")
  module, _, name = EVALUATORS[kind].partition(":")
  return getattr(importlib.import_module(module), name)


def from_config(evals: Mapping[str, Mapping], predict_for: Callable[[int], tuple],
                **shared) -> dict:
  """{name: evaluator} for the entries of `evals`.

  Args:
    evals: name -> entry (a mapping with `type` and the evaluator's keyword arguments).
    predict_for: batch_size -> (predict_fn, batch_sharding or None): how the caller's model
      predicts a batch of that size (the trainer: on its mesh; the eval stage: an export).
    **shared: keyword arguments every evaluator gets (dataset, data_dir, image_size, label).
  """
  out = {}
  for name, entry in evals.items():
    kw = dict(entry)
    cls = evaluator_class(kw.pop("type"))
    predict_fn, batch_sharding = predict_for(kw["batch_size"])
    out[name] = cls(predict_fn, batch_sharding=batch_sharding, **shared, **kw)
  return out
