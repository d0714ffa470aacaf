"""Face-alignment metrics as the reference codebases compute them (numpy, float64).

Standard (STAR / PIPNet / HIH / LDEQ `compute_fr_and_auc`; DESIGN.md section 6):
  NME_i   = mean_k ||pred_ik - gt_ik|| / d_i, d_i from the ground truth (`normalizer`): by
            default the layout's eye distance (`landmarks.default_norm`: 98 points gt60-gt72,
            5 points gt3-gt4); `summarize` also reports it with d_i = the face box size.
  FR@t    = fraction of images with NME_i > t (strict).
  AUC@t   = Simpson's rule over the CED of the per-image NMEs sampled at 0, step, ..., t
            (inclusive `<=`), divided by t. Check values: [0.02, 0.04, 0.06, 0.08, 0.12] -> FR 0.2,
            AUC 0.400267; [0.05] -> AUC 0.500333.
Paper variant (CMFA-SSMER `CMFA/test.py::calcuate_loss`), per image then averaged over images:
  FR      = mean_k (err_ik > t), a per-landmark failure rate.
  AUC     = trapezoid over the CED of that image's per-landmark errors at np.linspace(0, t, 100),
            divided by t.
Video (LDEQ `utils/loss_function.py`): NME per video then mean over videos; NMF (`video_NMJ`) =
  RMS over time of RMS over points of 100 ||e_t,k - e_t+1,k|| / s_t+1, e = gt - pred, s = face size
  in 256-px units; then mean over videos.

NMEs, FRs and AUCs are fractions here; `summarize` reports NME and FR in % (x100) and AUC as a
fraction, as LDEQ / SLPT print them. NMF is already x100 by its definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from data_pipelines import landmarks as lm
from data_pipelines.landmarks import ESIE_FROM_WFLW

NORM_KINDS = ("inter_ocular", "inter_pupil", "bbox")

# (num_points, kind) -> pair of point indices, or pair of index groups whose means are used.
# Each layout's default (`landmarks.DEFAULT_NORM`, what norm="auto" picks) comes from there.
_NORM_POINTS = {
    **{(k, kind): points for k, (kind, points) in lm.DEFAULT_NORM.items()},
    (98, "inter_pupil"): (lm.LEFT_PUPIL, lm.RIGHT_PUPIL),
    # 300W has no pupil points: STAR uses the eye-contour means.
    (68, "inter_pupil"): (tuple(range(36, 42)), tuple(range(42, 48))),
}


def _points(x, name: str) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim != 3 or a.shape[-1] != 2:
    raise ValueError(f"{name} must be (N, K, 2), got shape {a.shape}")
  return a


def _nmes(nmes) -> np.ndarray:
  a = np.asarray(nmes, np.float64).reshape(-1)
  if a.size == 0:
    raise ValueError("no NMEs to aggregate")
  if not np.all(np.isfinite(a)):
    raise ValueError("NMEs must be finite (a zero normaliser or a NaN prediction?)")
  return a


def esie_from_wflw(pred98) -> np.ndarray:
  """(..., 98, 2) -> (..., 5, 2): E-SIE's nose tip, mouth L, mouth R, pupil L, pupil R."""
  a = np.asarray(pred98)
  if a.ndim < 2 or a.shape[-2] != 98:
    raise ValueError(f"expected (..., 98, 2) points, got shape {a.shape}")
  return a[..., list(ESIE_FROM_WFLW), :]


def resolve_norm(kind: str, num_points: int) -> str:
  """`kind`, with "auto" -> the layout's default (`landmarks.default_norm`): inter_ocular for
  98 (and 68) points, inter_pupil (the two eye points) for 5."""
  return lm.default_norm(num_points)[0] if kind == "auto" else kind


def in_gt_layout(pred, gt) -> np.ndarray:
  """Predictions in the ground truth's layout: 98-point predictions against 5-point ground
  truth take E-SIE's points (`esie_from_wflw`); the same number of points is kept as it is.

  Args:
    pred: (N, K, 2); gt: (N, K', 2).

  Raises:
    ValueError: any other pair of layouts (e.g. a 5-point model on 98-point data).
  """
  pred, gt = _points(pred, "pred"), _points(gt, "gt")
  k, k_gt = pred.shape[1], gt.shape[1]
  if k == 98 and k_gt == 5:
    return esie_from_wflw(pred)
  if k != k_gt:
    raise ValueError(f"{k}-point predictions cannot be scored against {k_gt}-point ground "
                     "truth (the one mapping is 98 -> 5, E-SIE's); evaluate the model on a "
                     f"dataset with {k} points")
  return pred


def normalizer(gt, kind: str) -> np.ndarray:
  """Per-image NME normaliser from the ground truth.

  Args:
    gt: (N, K, 2) ground-truth points, px.
    kind: "inter_ocular" (98 pt: |gt60 - gt72|; 68 pt: |gt36 - gt45|), "inter_pupil" (98 pt:
      |gt96 - gt97|; 5 pt: |gt3 - gt4|, E-SIE's pupils, FES's eye centres; 68 pt: distance of
      the eye-contour means 36-41 and 42-47, as STAR), "bbox" (sqrt(w h) of the box enclosing
      the gt points; any K), or "auto" (`resolve_norm`).

  Returns:
    (N,) float64, px.

  Raises:
    ValueError: for a (K, kind) combination without a defined normaliser.
  """
  gt = _points(gt, "gt")
  k = gt.shape[1]
  kind = resolve_norm(kind, k)
  if kind == "bbox":
    wh = gt.max(axis=1) - gt.min(axis=1)
    return np.sqrt(wh[:, 0] * wh[:, 1])
  if (k, kind) not in _NORM_POINTS:
    supported = sorted(f"{n}:{c}" for n, c in _NORM_POINTS) + ["any:bbox"]
    raise ValueError(f"no {kind!r} normaliser for {k} points; supported: {supported}")
  a, b = _NORM_POINTS[(k, kind)]
  pa = gt[:, list(a)].mean(axis=1) if isinstance(a, tuple) else gt[:, a]
  pb = gt[:, list(b)].mean(axis=1) if isinstance(b, tuple) else gt[:, b]
  return np.linalg.norm(pa - pb, axis=-1)


def per_landmark_errors(pred, gt, norm, mask=None) -> np.ndarray:
  """Normalised point errors ||pred - gt|| / norm.

  Args:
    pred, gt: (N, K, 2), px (any frame related to the original by a similarity keeps the ratio).
    norm: (N,) normalisers, px (`normalizer`).
    mask: optional (N,) bool; False rows (batch padding) are dropped before dividing, so their
      (typically zero) normalisers are never used.

  Returns:
    (M, K) float64, M = N or mask.sum().
  """
  pred, gt = _points(pred, "pred"), _points(gt, "gt")
  norm = np.asarray(norm, np.float64).reshape(-1)
  if pred.shape != gt.shape or norm.shape != pred.shape[:1]:
    raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}, norm {norm.shape}")
  if mask is not None:
    mask = np.asarray(mask, bool).reshape(-1)
    if mask.shape != norm.shape:
      raise ValueError(f"mask must be ({len(norm)},), got {mask.shape}")
    pred, gt, norm = pred[mask], gt[mask], norm[mask]
  if not np.all(np.isfinite(norm) & (norm > 0)):
    raise ValueError("normalisers must be positive and finite")
  return np.linalg.norm(pred - gt, axis=-1) / norm[:, None]


def per_image_nme(pred, gt, norm, mask=None) -> np.ndarray:
  """Per-image NME: mean over landmarks of ||pred - gt|| / norm.

  Args: as `per_landmark_errors` (padded rows are dropped via `mask`).

  Returns:
    (M,) float64 fractions (not %), M = N or mask.sum().
  """
  return per_landmark_errors(pred, gt, norm, mask).mean(axis=1)


def ced(nmes, threshold: float = 0.1, num: int = 1001) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative error distribution: the fraction of NMEs <= x at `num` even x in [0, threshold].

  Returns:
    (thresholds (num,), fraction (num,)), both float64.
  """
  nmes = _nmes(nmes)
  xs = np.linspace(0.0, threshold, num)
  return xs, np.searchsorted(np.sort(nmes), xs, side="right") / nmes.size


def failure_rate(nmes, threshold: float = 0.1) -> float:
  """Fraction of images whose NME is strictly above `threshold`."""
  return float(np.mean(_nmes(nmes) > threshold))


def simpson(y, dx: float) -> float:
  """Composite Simpson's rule for samples y (n,) at uniform spacing dx.

  Matches scipy.integrate.simpson (SciPy >= 1.11): an odd interval count gets Simpson on all but the
  last interval plus the last interval of the quadratic through the final three points; two
  points fall back to the trapezoid.
  """
  y = np.asarray(y, np.float64)
  m = y.size - 1   # intervals
  if m < 1:
    return 0.0
  if m == 1:
    return float(dx * (y[0] + y[1]) / 2)
  if m % 2:
    tail = dx * (-y[-3] + 8 * y[-2] + 5 * y[-1]) / 12
    return simpson(y[:-1], dx) + float(tail)
  return float(dx / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


def trapezoid(y, dx: float) -> float:
  """Trapezoid rule for samples y at uniform spacing dx (np.trapz, which NumPy 2 renamed)."""
  y = np.asarray(y, np.float64)
  return float(dx * (y[1:] + y[:-1]).sum() / 2) if y.size > 1 else 0.0


def auc(nmes, threshold: float = 0.1, step: float = 1e-4) -> float:
  """Area under the CED up to `threshold`, normalised to [0, 1] (the standard AUC@threshold).

  The CED is sampled at 0, step, ..., threshold (1001 points for the defaults) and integrated with
  Simpson's rule. The reference code builds the grid with np.arange(0, threshold + step, step); we
  use np.linspace, identical for 0.1 / 1e-4, but without arange's extra sample past the threshold
  for values such as 0.05 (where arange ends at 0.0501).
  """
  intervals = round(threshold / step)
  if intervals < 1 or not math.isclose(intervals * step, threshold, rel_tol=1e-9):
    raise ValueError(f"threshold {threshold} is not a whole number of steps {step}")
  _, ys = ced(nmes, threshold, intervals + 1)
  return simpson(ys, threshold / intervals) / threshold


def paper_failure_rate(errors, threshold: float = 0.1) -> float:
  """CMFA's FR: per image the fraction of landmarks with error > threshold, then mean over images.

  Args:
    errors: (N, K) normalised per-landmark errors (`per_landmark_errors`).
  """
  errors = np.asarray(errors, np.float64)
  return float(np.mean(np.mean(errors > threshold, axis=1)))


def paper_auc(errors, threshold: float = 0.1, num: int = 100) -> float:
  """CMFA's AUC: per image, trapezoid over the CED of its landmark errors, then mean over images.

  As `calcuate_loss`: x = np.linspace(0, threshold, 100), y = mean_k(err_k <= x), trapz / threshold.

  Args:
    errors: (N, K) normalised per-landmark errors (`per_landmark_errors`).
  """
  errors = np.asarray(errors, np.float64)
  if errors.ndim != 2 or errors.shape[0] == 0:
    raise ValueError(f"errors must be a non-empty (N, K) array, got shape {errors.shape}")
  xs = np.linspace(0.0, threshold, num)
  # One threshold at a time: an (N, K, num) comparison is too big for whole video test sets.
  ys = np.stack([np.mean(errors <= x, axis=1) for x in xs], axis=1)   # (N, num)
  dx = xs[1] - xs[0]
  return float(np.mean(dx * (ys[:, 1:] + ys[:, :-1]).sum(axis=1) / 2) / threshold)


def _video_groups(video_ids, frame_index=None) -> list[np.ndarray]:
  """Row indices of each video (in order of first sorted id), frames sorted by frame_index."""
  vids = np.asarray(video_ids).reshape(-1)
  _, inv = np.unique(vids, return_inverse=True)
  if frame_index is None:
    order = np.argsort(inv, kind="stable")   # keep the given order within a video
  else:
    fi = np.asarray(frame_index).reshape(-1)
    if fi.shape != vids.shape:
      raise ValueError(f"frame_index {fi.shape} does not match video_ids {vids.shape}")
    order = np.lexsort((fi, inv))
    same = (np.diff(inv[order]) == 0) & (np.diff(fi[order]) == 0)
    if same.any():
      raise ValueError("a frame_index appears twice within one video")
  bounds = np.flatnonzero(np.diff(inv[order])) + 1
  return np.split(order, bounds)


def video_nme(per_image_nme, video_ids) -> float:
  """Mean over videos of each video's mean per-frame NME (LDEQ's WFLW-V protocol).

  Args:
    per_image_nme: (N,) per-frame NMEs (fractions; LDEQ uses inter-ocular).
    video_ids: (N,) any hashable-by-numpy ids (ints or strings).

  Returns:
    Fraction (x100 for LDEQ's %).
  """
  nmes = _nmes(per_image_nme)
  if np.asarray(video_ids).reshape(-1).shape != nmes.shape:
    raise ValueError("video_ids must have one id per NME")
  return float(np.mean([nmes[g].mean() for g in _video_groups(video_ids)]))


def face_scale(gt) -> np.ndarray:
  """LDEQ's face size: sqrt(w h) of the gt points' box in units of 256 px. (N, K, 2) -> (N,)."""
  gt = _points(gt, "gt")
  wh = gt.max(axis=1) - gt.min(axis=1)
  return np.sqrt(wh[:, 0] * wh[:, 1] / 256.0**2)


def _rms(x, axis):
  return np.sqrt(np.mean(np.square(x), axis=axis))


def video_nmj(pred, gt, face_size=None) -> float:
  """LDEQ's `video_NMJ` (the paper's NMF) for one video whose frames are in temporal order.

  Args:
    pred, gt: (T, K, 2) px, T >= 2.
    face_size: optional (T,) face size in px (e.g. sqrt(w h) of the gt box), divided by 256 here;
      default LDEQ's: the gt points' bounding box (`face_scale`).

  Returns:
    RMS_t RMS_k 100 ||e_t,k - e_t+1,k|| / s_t+1 with e = gt - pred (a constant bias scores 0).
  """
  pred, gt = _points(pred, "pred"), _points(gt, "gt")
  if pred.shape != gt.shape or pred.shape[0] < 2:
    raise ValueError(f"need matching (T >= 2, K, 2) arrays, got {pred.shape} and {gt.shape}")
  s = face_scale(gt) if face_size is None else np.asarray(face_size, np.float64) / 256.0
  delta = gt - pred
  jitter = 100 * np.linalg.norm(delta[:-1] - delta[1:], axis=-1) / s[1:, None]   # (T-1, K)
  return float(_rms(_rms(jitter, axis=1), axis=0))


def nmf(pred, gt, video_ids, frame_index=None, face_size=None) -> float:
  """Normalised mean flicker: mean over videos of `video_nmj` (LDEQ's WFLW-V protocol).

  Args:
    pred, gt: (N, K, 2) px, frames of several videos in any order.
    video_ids: (N,) video of each row.
    frame_index: (N,) position in its video; frames are sorted by it within each video. None keeps
      the given row order within each video.
    face_size: optional (N,) px, see `video_nmj`.

  Returns:
    NMF (already x100). Videos with fewer than 2 frames have no frame-to-frame change and are left
    out; NaN if no video has 2 frames.
  """
  pred, gt = _points(pred, "pred"), _points(gt, "gt")
  if np.asarray(video_ids).reshape(-1).shape != pred.shape[:1]:
    raise ValueError("video_ids must have one id per frame")
  fs = None if face_size is None else np.asarray(face_size, np.float64).reshape(-1)
  per_video = [video_nmj(pred[g], gt[g], None if fs is None else fs[g])
               for g in _video_groups(video_ids, frame_index) if g.size >= 2]
  return float(np.mean(per_video)) if per_video else math.nan


def _json_float(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def _selection(sel, n: int) -> np.ndarray:
  sel = np.asarray(sel)
  if sel.dtype == bool:
    if sel.shape != (n,):
      raise ValueError(f"a boolean subset must be ({n},), got {sel.shape}")
    return sel
  out = np.zeros(n, bool)
  out[sel.astype(np.intp)] = True
  return out


def _standard(nmes, threshold) -> dict:
  return {"nme": 100 * float(np.mean(nmes)), "fr": 100 * failure_rate(nmes, threshold),
          "auc": auc(nmes, threshold)}


def _paper(errors, threshold) -> dict:
  return {"nme": 100 * float(np.mean(errors)), "fr": 100 * paper_failure_rate(errors, threshold),
          "auc": paper_auc(errors, threshold)}


def summarize(pred, gt, *, norm_kind: str, threshold: float = 0.1, video_ids=None,
              frame_index=None, subsets: Mapping[str, np.ndarray] | None = None,
              paper_variant: bool = False, mask=None, face_size=None, box_size=None) -> dict:
  """All metrics of one evaluation as a JSON-serialisable dict.

  Args:
    pred: (N, K, 2) predictions, px; 98-point predictions against 5-point gt are mapped with
      `esie_from_wflw` first (the E-SIE protocol), other differing layouts raise
      (`in_gt_layout`).
    gt: (N, K', 2) ground truth, px.
    norm_kind: see `normalizer` ("auto": the layout's default).
    threshold: FR / AUC threshold (NME fraction).
    video_ids, frame_index: (N,) to add the video metrics (see `video_nme`, `nmf`).
    subsets: name -> (N,) bool mask or integer row indices (e.g. WFLW's pose / occlusion subsets).
    paper_variant: also report CMFA's per-landmark FR / AUC (overall and per subset).
    mask: (N,) bool; False rows (batch padding) are dropped from everything, subsets included.
    face_size: (N,) px for NMF (default: LDEQ's gt-point box).
    box_size: (N,) px, the size sqrt(w h) of each image's ground-truth face box in the frame of
      pred and gt: also the NME normalised by it ("nme_box", overall and per subset).

  Returns:
    {"nme": %, "fr": %, "auc": fraction, "num_images", "threshold", "norm_kind" (resolved),
     ["nme_box": %], ["video_nme": %, "nmf", "num_videos"],
     ["per_subset": {name: {"nme", "fr", "auc", ["nme_box"], "n"}}],
     ["paper_variant": {"nme", "fr", "auc"}]}. An empty subset has "n": 0 and None metrics, as
     does an NMF with no video of 2 frames.
  """
  pred = in_gt_layout(pred, gt)
  gt = _points(gt, "gt")
  n = pred.shape[0]
  keep = np.ones(n, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
  if keep.shape != (n,):
    raise ValueError(f"mask must be ({n},), got {keep.shape}")
  pred, gt = pred[keep], gt[keep]
  if pred.shape[0] == 0:
    raise ValueError("no images to evaluate")
  norm_kind = resolve_norm(norm_kind, gt.shape[1])
  errors = per_landmark_errors(pred, gt, normalizer(gt, norm_kind))
  nmes = errors.mean(axis=1)
  box_nmes = None
  if box_size is not None:
    box = np.asarray(box_size, np.float64).reshape(-1)
    if box.shape != (n,):
      raise ValueError(f"box_size must be ({n},), got {box.shape}")
    box_nmes = per_image_nme(pred, gt, box[keep])
  out = {**_standard(nmes, threshold), "num_images": int(nmes.size),
         "threshold": float(threshold), "norm_kind": norm_kind}
  if box_nmes is not None:
    out["nme_box"] = 100 * float(np.mean(box_nmes))
  if video_ids is not None:
    vids = np.asarray(video_ids).reshape(-1)[keep]
    fi = None if frame_index is None else np.asarray(frame_index).reshape(-1)[keep]
    fs = None if face_size is None else np.asarray(face_size, np.float64).reshape(-1)[keep]
    out["video_nme"] = 100 * video_nme(nmes, vids)
    out["nmf"] = _json_float(nmf(pred, gt, vids, fi, fs))
    out["num_videos"] = int(np.unique(vids).size)
  if subsets:
    per_subset = {}
    for name, sel in subsets.items():
      sel = _selection(sel, n)[keep]
      if not sel.any():
        per_subset[name] = {"nme": None, "fr": None, "auc": None, "n": 0}
        continue
      entry = _standard(nmes[sel], threshold)
      if box_nmes is not None:
        entry["nme_box"] = 100 * float(np.mean(box_nmes[sel]))
      entry["n"] = int(sel.sum())
      if paper_variant:
        entry["paper_variant"] = _paper(errors[sel], threshold)
      per_subset[name] = entry
    out["per_subset"] = per_subset
  if paper_variant:
    out["paper_variant"] = _paper(errors, threshold)
  return out
