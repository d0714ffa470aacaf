"""Stage `eval`: any exported model (or the mean shape) on a dataset split.

Writes to the workdir `results.json` (every metric: NME / FR@0.1 / AUC@0.1, per subset, per
video NME and flicker for video datasets, the paper's per-landmark variant on request),
`table.txt` (the overall and per-subset tables it prints), `ced.png` (all images and each
subset) and `worst.png` (the worst examples, ground truth green, prediction red).
98-point predictions on a 5-point dataset (E-SIE) use points 54, 76, 82, 96, 97 and the
inter-pupil distance.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from data_pipelines import input_pipeline as ip
from evalign_jax import files
from evalign_jax.evaluators import metrics
from evalign_jax.evaluators import plots
from evalign_jax.trainers import alignment
from evalign_jax.trainers import common

MEAN_SHAPE = "mean_shape"


def predictions(checkpoint: str, config) -> dict:
  """Predictions and labels on config.split from an export/workdir, or the mean shape."""
  common.prepare_dataset(config)
  source = ip.make_source(config.dataset, common.data_dir(config), config.split)
  if checkpoint == MEAN_SHAPE:
    size = config.image_size
    shape = jnp.asarray(common.mean_shape(config.dataset, common.data_dir(config), size) * size)
    predict = lambda _, batch: jnp.broadcast_to(shape, batch["landmarks"].shape)
    return alignment.predict_split(predict, None, alignment.eval_dataset(config, size, source))
  model, cfg = common.load_exported(checkpoint)
  kind = cfg["model"]
  if kind not in alignment.MODELS:
    raise ValueError(f"{checkpoint}: a {kind!r} model does not predict landmarks; give an "
                     f"export of one of {alignment.MODELS}")
  # The crop size and event rendering the model was trained with.
  size = cfg["image_size"]
  render = common.render_config(ml_collections.ConfigDict(cfg))
  graphdef, state = nnx.split(model)
  predict = alignment.make_predict(graphdef, kind, size, render)
  return alignment.predict_split(predict, state, alignment.eval_dataset(config, size, source))


def summarize(res: dict, config) -> dict:
  norm = config.norm
  if norm == "auto":
    norm = "inter_pupil" if res["gt"].shape[1] == 5 else "inter_ocular"
  subsets = {s.decode(): res["subset"] == s for s in np.unique(res["subset"]) if s}
  return metrics.summarize(res["pred"], res["gt"], norm_kind=norm, video_ids=res["clip_id"],
                           frame_index=res["frame_index"], subsets=subsets or None,
                           paper_variant=config.paper_variant)


def per_image_nmes(res: dict, norm_kind: str) -> np.ndarray:
  return metrics.per_image_nme(_to_gt_layout(res), res["gt"],
                               metrics.normalizer(res["gt"], norm_kind))


def run(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  res = predictions(config.checkpoint, config)
  summary = summarize(res, config)
  name = "mean shape" if config.checkpoint == MEAN_SHAPE else os.path.basename(
      os.path.normpath(config.checkpoint))
  nmes = per_image_nmes(res, summary["norm_kind"])
  plots.plot_ced(ced_curves(name, nmes, res["subset"]), os.path.join(workdir, "ced.png"))
  worst = np.argsort(nmes)[::-1][:config.num_worst]
  plots.draw_predictions(res["image"][worst], _to_gt_layout(res)[worst], res["gt"][worst],
                         os.path.join(workdir, "worst.png"),
                         titles=[f"{100 * nmes[i]:.1f}%" for i in worst])
  result = {"checkpoint": config.checkpoint, "dataset": config.dataset, "split": config.split,
            **summary}
  files.write_text(os.path.join(workdir, "results.json"), json.dumps(result, indent=2))
  table = format_table({name: summary})
  if "per_subset" in summary:
    table += "\n\n" + format_table(summary["per_subset"], title="subset")
  files.write_text(os.path.join(workdir, "table.txt"), table + "\n")
  print(table)
  print(f"wrote {workdir}/results.json, table.txt, ced.png, worst.png")
  return result


def ced_curves(name: str, nmes: np.ndarray, subsets: np.ndarray,
               max_subsets: int = 8) -> dict:
  """{label: per-image NMEs}: all images, then each subset (e.g. a lighting condition, WFLW-V
  easy / hard) when there are 2 to `max_subsets` of them (more would not be readable).

  Args:
    nmes: (N,) per-image NMEs (fractions).
    subsets: (N,) bytes, the examples' `subset` field (b"" when a dataset has none).
  """
  curves = {name: nmes}
  names = [s for s in np.unique(subsets) if s]
  if 2 <= len(names) <= max_subsets:
    curves.update({f"{name}: {s.decode()}": nmes[subsets == s] for s in names})
  return curves


def _to_gt_layout(res: dict) -> np.ndarray:
  """98-point predictions on a 5-point dataset (E-SIE) -> its 5 points; else as they are."""
  pred = res["pred"]
  return metrics.esie_from_wflw(pred) if pred.shape[1] == 98 and res["gt"].shape[1] == 5 \
      else pred


def format_table(rows: dict, title: str = "model") -> str:
  width = max([len(title)] + [len(k) for k in rows])
  lines = [f"{title:<{width}}  {'NME %':>7}  {'FR@0.1 %':>8}  {'AUC@0.1':>7}  {'images':>6}",
           "-" * (width + 36)]
  for name, m in rows.items():
    if m.get("nme") is None:
      continue
    n = m.get("num_images", m.get("n", 0))
    lines.append(f"{name:<{width}}  {m['nme']:>7.2f}  {m['fr']:>8.2f}  {m['auc']:>7.4f}  "
                 f"{n:>6}")
  return "\n".join(lines)
