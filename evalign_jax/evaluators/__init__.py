"""Evaluation: face-alignment metrics (numpy, float64), pictures, and evaluators built from config.

Public API:
  normalizer, per_landmark_errors, per_image_nme, esie_from_wflw     NME (metrics.py)
  failure_rate, auc, ced, simpson, trapezoid                          standard FR / AUC (metrics.py)
  paper_failure_rate, paper_auc                       CMFA's per-landmark FR / AUC (metrics.py)
  video_nme, video_nmj, nmf, face_scale                        LDEQ video metrics (metrics.py)
  summarize                                               everything as a JSON dict (metrics.py)
  ced_image, prediction_grid                CED plot (matplotlib) and point grids (plots.py)
Evaluators (`config.evals` entries -> objects with `run(state) -> (metrics, pictures)`) are in
registry.py (`from_config`) and landmarks.py (`LandmarkEvaluator`, `make_predict`); they are not
imported here, so the metrics stay importable without JAX models or data pipelines.
"""

from evalign_jax.evaluators.metrics import (
    NORM_KINDS, auc, ced, esie_from_wflw, face_scale, failure_rate, nmf, normalizer,
    paper_auc, paper_failure_rate, per_image_nme, per_landmark_errors, simpson, summarize,
    trapezoid, video_nme, video_nmj)
from evalign_jax.evaluators.plots import ced_image, prediction_grid

__all__ = [
    "NORM_KINDS", "auc", "ced", "esie_from_wflw", "face_scale", "failure_rate", "nmf",
    "normalizer", "paper_auc", "paper_failure_rate", "per_image_nme", "per_landmark_errors",
    "simpson", "summarize", "trapezoid", "video_nme", "video_nmj", "ced_image", "prediction_grid",
]
