"""The landmark evaluator: an aligner's predictions over a dataset split -> metrics and pictures.

Built from a config entry (`evaluators.from_config`), e.g. training's

  config.evals.val = dict(type="landmarks", split="validation", every=500, batch_size=32,
                          norm="auto", paper_variant=False, pictures=("predictions",),
                          num_pictures=8)

`run(state)` predicts every example of the split with `predict_fn(state, batch)` (padded last
batch masked out), and returns
  metrics: `metrics.summarize` of every process's examples (NME / FR@0.1 / AUC@0.1 in %, per
    subset, per video and flicker, the paper's per-landmark variant on request);
  pictures: {tag: (H, W, 3) uint8 RGB} for the tags in `pictures`:
    "predictions"  the first `num_pictures` examples, ground truth green, prediction red, the
                   image's NME (%) above it;
    "worst"        the `num_pictures` examples of highest NME, drawn the same way;
    "ced"          the CED curves of all images and of each subset.
Pictures show this process's examples, drawn on the RGB crops, or for an event-only dataset
(FES) on the frame rendering of each crop's events (OFF red, ON blue on white).
`norm="auto"` is the layout's eye distance (`landmarks.default_norm`): inter-ocular for 98
points, the two eye points 3, 4 for 5 (E-SIE's pupils, FES's eye centres). Every evaluation
also reports `nme_box`, the NME normalised by the ground-truth face box's size sqrt(w h). 98-point
predictions on a 5-point dataset (E-SIE, FES) use points 54, 76, 82, 96, 97; a model of the
dataset's own layout is scored as it is.

Validation during training (`trainers/loop.py`), the `eval` stage (`evaluate.py`) and `predict`
(the jitted `make_predict`, on recordings) run this code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import augment
from data_pipelines import device_augment as da
from data_pipelines import input_pipeline as ip
from evalign_jax import distributed
from evalign_jax import models
from evalign_jax import sharding
from evalign_jax.evaluators import metrics
from evalign_jax.evaluators import plots
from evalign_jax.events import images

PICTURES = ("predictions", "worst", "ced")
# Host fields of a batch kept with the predictions (metrics per video, per subset, by box).
_IDS = ("clip_id", "frame_index", "subset", "box_size")
# Event-only crops are pictured in this rendering.
_PICTURE_RENDER = images.RenderConfig(kind="frame")


def make_predict(graphdef, kind: str, image_size: int, render: images.RenderConfig,
                 batch_sharding=None):
  """jitted (model state, batch) -> (B, K, 2) last stage, last layer landmarks in crop px.

  `graphdef` and the state come from `nnx.split(model)` (the model alone, so validation during
  training and the eval stage compile the same program, which the compilation cache reuses).
  `kind` names the registered model (`models.MODELS`), hence its inputs. `batch_sharding`: the
  predictions keep the batch's sharding, so each process can read its own rows back
  (`sharding.host_local`).
  """
  inputs = models.model_spec(kind).inputs

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def predict(state, batch):
    model = nnx.merge(graphdef, state)
    model.eval()
    out = model(*da.model_inputs(batch, inputs, image_size, render))
    return out[:, -1, -1].astype(jnp.float32) * image_size

  return distributed.CompiledTogether(predict, "predict")


def mean_shape_predict(mean_shape: np.ndarray, image_size: int):
  """A predict function answering the (K, 2) mean shape (in [0, 1]) for every image: the
  baseline. It takes no state."""
  shape = jnp.asarray(mean_shape * image_size)
  return lambda _, batch: jnp.broadcast_to(shape, batch["landmarks"].shape)


def eval_dataset(source, image_size: int, batch_size: int):
  """The unaugmented evaluation pass (1.2 x box crop, padded last batch) over `source`."""
  return ip.make_dataset(source, task="cmfa", train=False, global_batch_size=batch_size,
                         augment_config=augment.AlignmentAugment(out_size=image_size))


@functools.partial(jax.jit, static_argnums=2)
def _render_frames(events: dict, window_us: jax.Array, size: int) -> jax.Array:
  x = da.render_batch(da.to_padded_events(events), window_us, size, _PICTURE_RENDER)
  return jnp.round(x * 255).astype(jnp.uint8)


def event_crops(batch: dict, size: int) -> np.ndarray:
  """A batch's events (`events`, `window_us`, in the pixels of size x size crops) -> (B, size,
  size, 3) uint8 RGB: their frame rendering (OFF red, ON blue on white), what pictures of an
  event-only dataset are drawn on."""
  return np.asarray(_render_frames(batch["events"], batch["window_us"], size))


def predict_split(predict, state, dataset, batch_sharding=None,
                  num_images: int | None = None, image_size: int | None = None) -> dict:
  """Runs `predict` over an evaluation dataset (padded batches): numpy predictions + labels.

  With `batch_sharding` each process's batches become global arrays and it gets back the
  predictions of its own examples (of its shard of the split). `num_images` keeps the crops of
  only the first that many examples (None: all), so validation does not hold every image;
  an event-only dataset's crops are rendered at `image_size` (the crop side; needed then).

  Returns:
    pred, gt (N, K, 2) crop px; clip_id, subset (N,) bytes; frame_index (N,); box_size (N,)
    px, the ground-truth face box's sqrt(w h) in the crop; image (min(N, num_images), S, S,
    3) uint8: the RGB crops, or for an event-only dataset the rendering of their events
    (`event_crops`).
  """
  out = {k: [] for k in ("pred", "gt", *_IDS)}
  images_kept = []
  kept = 0
  for batch in dataset:
    device, host = ip.split_host_fields(batch)
    if batch_sharding is not None:
      device = sharding.global_batch(device, batch_sharding)
    pred = sharding.host_local(predict(state, device))
    keep = np.asarray(batch["example_mask"])
    out["pred"].append(pred[keep])
    out["gt"].append(np.asarray(batch["landmarks"])[keep])
    for k in _IDS:
      out[k].append(np.asarray(host[k])[keep])
    if num_images is None or kept < num_images:
      crops = (np.asarray(batch["image"]) if "image" in batch else
               event_crops(batch, image_size))[keep]
      images_kept.append(crops if num_images is None else crops[:num_images - kept])
      kept += len(images_kept[-1])
  res = {k: np.concatenate(v) for k, v in out.items()}
  res["image"] = np.concatenate(images_kept) if images_kept else np.zeros((0, 0, 0, 3), np.uint8)
  return res


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


class LandmarkEvaluator:
  """See the module docstring.

  Attributes:
    every: training steps between runs (0: only at the end of training).
  """

  # The metrics worth a line in the training log (the rest are for reports).
  SCALARS = ("nme", "fr", "auc")

  def __init__(self, predict_fn, *, dataset: str, data_dir: str, image_size: int,
               split: str = "validation", batch_size: int = 32, norm: str = "auto",
               paper_variant: bool = False, pictures=("predictions",), num_pictures: int = 8,
               every: int = 0, label: str = "model", batch_sharding=None):
    """Args: `predict_fn(state, batch)` -> (B, K, 2) crop px (`make_predict`); the crop size
    the model takes; `label` names the model in the CED legend; `batch_sharding` makes each
    process's batches global arrays (training on a mesh); the rest as the config entry."""
    unknown = set(pictures) - set(PICTURES)
    if unknown:
      raise ValueError(f"unknown pictures {sorted(unknown)}; valid: {PICTURES}")
    self.predict_fn, self.batch_sharding = predict_fn, batch_sharding
    self.split, self.norm, self.paper_variant = split, norm, paper_variant
    self.pictures, self.num_pictures = tuple(pictures), num_pictures
    self.every, self.label = every, label
    source = ip.make_source(dataset, data_dir, split)
    self.image_size = image_size
    self.dataset = eval_dataset(source, image_size, batch_size)

  def run(self, state) -> tuple[dict, dict]:
    """(metrics, pictures) of the model state `state` (see the module docstring)."""
    # Images of the first examples suffice unless the worst ones are drawn.
    num_images = (None if "worst" in self.pictures else
                  self.num_pictures if "predictions" in self.pictures else 0)
    local = predict_split(self.predict_fn, state, self.dataset, self.batch_sharding,
                          num_images, self.image_size)
    res = distributed.gather_rows({k: local[k] for k in ("pred", "gt", *_IDS)})
    subsets = {s.decode(): res["subset"] == s for s in np.unique(res["subset"]) if s}
    summary = metrics.summarize(res["pred"], res["gt"], norm_kind=self.norm,
                                video_ids=res["clip_id"], frame_index=res["frame_index"],
                                subsets=subsets or None, paper_variant=self.paper_variant,
                                box_size=res["box_size"])
    return summary, self._pictures(local, summary["norm_kind"])

  def _pictures(self, res: dict, kind: str) -> dict:
    if not self.pictures:
      return {}
    pred = metrics.in_gt_layout(res["pred"], res["gt"])
    nmes = metrics.per_image_nme(pred, res["gt"], metrics.normalizer(res["gt"], kind))
    drawn = {"predictions": np.arange(min(self.num_pictures, len(res["image"]))),
             "worst": np.argsort(nmes)[::-1][:self.num_pictures]}
    out = {}
    for tag in self.pictures:
      if tag == "ced":
        out[tag] = plots.ced_image(ced_curves(self.label, nmes, res["subset"]))
      elif len(res["image"]):
        i = drawn[tag]
        out[tag] = plots.prediction_grid(res["image"][i], pred[i], res["gt"][i],
                                         titles=[f"{100 * e:.1f}%" for e in nmes[i]])
    return out
