"""Stage `eval`: any exported model (or the mean shape) through the config's evaluators.

`config.checkpoint` is a stage workdir, an export folder or "mean_shape" (the training split's
mean shape for every image: the baseline). Each evaluator of `config.evals`
(`evaluators/landmarks.py`, the same code that validates during training) writes to
`<workdir>/<name>/`:

  results.json   every metric: NME / FR@0.1 / AUC@0.1 (NME by the layout's eye distance,
                 `norm_kind`), NME by the face box's size (`nme_box`), per subset, per video
                 NME and flicker for video datasets, the paper's per-landmark variant on
                 request
  table.txt      the overall and per-subset tables it prints
  <tag>.png      its pictures: ced.png (all images and each subset), worst.png (the worst
                 examples, ground truth green, prediction red)
"""

from __future__ import annotations

import json
import os

import numpy as np
from flax import nnx

from data_pipelines import datasets
from data_pipelines import registry
from evalign_jax import config_utils
from evalign_jax import export
from evalign_jax import files
from evalign_jax import models
from evalign_jax.evaluators import landmarks as landmark_eval
from evalign_jax.evaluators import metrics
from evalign_jax.evaluators import registry as evaluators
from evalign_jax.events.images import RenderConfig

MEAN_SHAPE = "mean_shape"


def run(config, workdir: str) -> dict:
  """Runs every evaluator of `config.evals` on `config.checkpoint`; returns {name: metrics}."""
  os.makedirs(workdir, exist_ok=True)
  predict_fn, state, image_size, label, points = _model(config)   # a missing export first
  datasets.prepare_dataset(config)
  _check_layout(points, config)
  built = evaluators.from_config(
      config.evals, lambda batch_size: (predict_fn, None), dataset=config.dataset,
      data_dir=datasets.data_dir(config), image_size=image_size, label=label)
  results = {}
  for name, evaluator in built.items():
    metrics, pictures = evaluator.run(state)
    out = os.path.join(workdir, name)
    result = {"checkpoint": config.checkpoint, "dataset": config.dataset,
              "split": evaluator.split, **metrics}
    files.write_text(os.path.join(out, "results.json"), json.dumps(result, indent=2))
    for tag, image in pictures.items():
      files.write_png(os.path.join(out, f"{tag}.png"), image)
    table = format_table({label: metrics})
    if "per_subset" in metrics:
      table += "\n\n" + format_table(metrics["per_subset"], title="subset")
    files.write_text(os.path.join(out, "table.txt"), table + "\n")
    print(table)
    print(f"wrote {out}/: results.json, table.txt, "
          + ", ".join(f"{tag}.png" for tag in pictures))
    results[name] = result
  return results


def _model(config):
  """(predict_fn, state, crop size, label, number of points) of the checkpoint: an export, or
  the mean shape."""
  if config.checkpoint == MEAN_SHAPE:
    datasets.prepare_dataset(config)
    size = config.image_size
    shape = datasets.mean_shape(config.dataset, datasets.data_dir(config), size)
    return landmark_eval.mean_shape_predict(shape, size), None, size, "mean shape", len(shape)
  model, cfg = export.load(config.checkpoint)
  kind = cfg["model"]
  if not models.model_spec(kind).landmarks:
    raise config_utils.ConfigError(
        f"{config.checkpoint}: a {kind!r} model does not predict landmarks; give an export "
        f"of one of {models.LANDMARK_MODELS}")
  # The crop size and event rendering the model was trained with.
  size = cfg["image_size"]
  graphdef, state = nnx.split(model)
  predict_fn = landmark_eval.make_predict(graphdef, kind, size,
                                          RenderConfig.from_config(cfg["render"]))
  label = os.path.basename(os.path.normpath(config.checkpoint))
  return predict_fn, state, size, label, int(model.mean_shape.shape[0])


def _check_layout(num_points: int, config) -> None:
  """A model whose points cannot be scored on the dataset's (`metrics.in_gt_layout`: the same
  layout, or 98 -> 5) fails before predicting, with one line."""
  builder = registry.builder(config.dataset, data_dir=datasets.data_dir(config))
  gt_points = builder.info.features["landmarks"].shape[0]
  try:
    metrics.in_gt_layout(np.zeros((1, num_points, 2)), np.zeros((1, gt_points, 2)))
  except ValueError as e:
    raise config_utils.ConfigError(f"{config.checkpoint} on {config.dataset}: {e}") from None


def format_table(rows: dict, title: str = "model") -> str:
  """The NME / FR / AUC table of {row name: metrics} (rows without an NME are left out), with
  the NME by face-box size when the metrics have it."""
  width = max([len(title)] + [len(k) for k in rows])
  box = any(m.get("nme_box") is not None for m in rows.values())
  lines = [f"{title:<{width}}  {'NME %':>7}  {'FR@0.1 %':>8}  {'AUC@0.1':>7}  {'images':>6}"
           + (f"  {'NME box %':>9}" if box else ""),
           "-" * (width + 36 + 11 * box)]
  for name, m in rows.items():
    if m.get("nme") is None:
      continue
    n = m.get("num_images", m.get("n", 0))
    line = f"{name:<{width}}  {m['nme']:>7.2f}  {m['fr']:>8.2f}  {m['auc']:>7.4f}  {n:>6}"
    if box:
      line += f"  {m['nme_box']:>9.2f}" if m.get("nme_box") is not None else f"  {'-':>9}"
    lines.append(line)
  return "\n".join(lines)
