"""Metrics against DESIGN.md's check values, hand-computed cases and literal reference ports."""

import glob
import json
import os

import numpy as np
import pytest
from scipy import integrate

from evalign_jax import evaluators as ev
from evalign_jax import files
from evalign_jax.evaluators import metrics
from evalign_jax.evaluators import plots


def _face98(rng, n):
  """(n, 98, 2) random points with a sensible inter-ocular distance."""
  gt = rng.uniform(50, 200, (n, 98, 2))
  gt[:, 60] = [60, 100]
  gt[:, 72] = [160, 100]
  return gt


# ---------------------------------------------------------------- standard FR / AUC

@pytest.mark.parametrize("nmes, fr, auc", [
    ([0.02, 0.04, 0.06, 0.08, 0.12], 0.2, 0.400267),
    ([0.05], 0.0, 0.500333),
    ([0.0], 0.0, 1.0),
    ([0.2], 1.0, 0.0),
    ([0.1], 0.0, 0.000333),          # <= is inclusive at the last sample
    ([0.10000001], 1.0, 0.0),
])
def test_fr_auc_check_values(nmes, fr, auc):
  assert ev.failure_rate(nmes, 0.1) == pytest.approx(fr)
  assert round(ev.auc(nmes, 0.1), 6) == pytest.approx(auc, abs=1e-12)


def test_fr_auc_gamma_reference():
  # face_alignment.md 2.2: 2,500 Gamma(4, 0.011) draws from default_rng(0).
  nmes = np.random.default_rng(0).gamma(4, 0.011, 2500)
  assert ev.failure_rate(nmes) == pytest.approx(0.0216)
  assert ev.auc(nmes) == pytest.approx(0.560317, abs=5e-7)


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_scipy_simpson_on_reference_grid(seed):
  nmes = np.random.default_rng(seed).gamma(3, 0.015, 777)
  xs = np.arange(0, 0.1 + 1e-4, 1e-4)                       # the reference code's grid
  ys = np.array([np.count_nonzero(nmes <= x) for x in xs]) / len(nmes)
  assert len(xs) == 1001
  assert ev.auc(nmes) == pytest.approx(integrate.simpson(ys, x=xs) / 0.1, rel=1e-12, abs=1e-15)
  assert ev.failure_rate(nmes) == pytest.approx(1 - ys[-1])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 11, 1001])
def test_simpson_matches_scipy(n):
  y = np.random.default_rng(n).normal(size=n)
  assert ev.simpson(y, 0.25) == pytest.approx(integrate.simpson(y, dx=0.25), rel=1e-12, abs=1e-12)
  assert ev.trapezoid(y, 0.25) == pytest.approx(np.trapezoid(y, dx=0.25), rel=1e-12, abs=1e-12)


def test_ced_and_auc_edges():
  xs, ys = ev.ced([0.0, 0.05, 0.2], 0.1, 11)
  np.testing.assert_allclose(xs, np.linspace(0, 0.1, 11))
  np.testing.assert_allclose(ys, [1 / 3] * 5 + [2 / 3] * 6)
  assert ev.auc([0.0], threshold=0.05) == pytest.approx(1.0)   # no arange overshoot past 0.05
  with pytest.raises(ValueError):
    ev.auc([0.01], threshold=0.1, step=0.03)                   # not a whole number of steps
  with pytest.raises(ValueError):
    ev.failure_rate([])
  with pytest.raises(ValueError):
    ev.auc([0.01, np.nan])


# ---------------------------------------------------------------- NME and normalisers

def test_nme_by_hand_inter_pupil_5pt():
  gt = np.array([[[5, 5], [2, 8], [8, 8], [0, 0], [10, 0]]], np.float64)   # pupils 10 px apart
  pred = gt.copy()
  pred[0, 0] += [3, 4]     # 5 px off
  pred[0, 2] += [0, -10]   # 10 px off
  norm = ev.normalizer(gt, "inter_pupil")
  np.testing.assert_allclose(norm, [10.0])
  np.testing.assert_allclose(ev.per_landmark_errors(pred, gt, norm), [[0.5, 0, 1.0, 0, 0]])
  np.testing.assert_allclose(ev.per_image_nme(pred, gt, norm), [0.3])


def test_normalizers():
  rng = np.random.default_rng(0)
  gt98 = _face98(rng, 2)
  gt98[:, 96], gt98[:, 97] = [70, 90], [150, 96]
  np.testing.assert_allclose(ev.normalizer(gt98, "inter_ocular"), [100, 100])
  np.testing.assert_allclose(ev.normalizer(gt98, "inter_pupil"), [np.hypot(80, 6)] * 2)
  gt68 = rng.uniform(0, 100, (1, 68, 2))
  np.testing.assert_allclose(ev.normalizer(gt68, "inter_ocular"),
                             [np.linalg.norm(gt68[0, 36] - gt68[0, 45])])
  np.testing.assert_allclose(
      ev.normalizer(gt68, "inter_pupil"),
      [np.linalg.norm(gt68[0, 36:42].mean(0) - gt68[0, 42:48].mean(0))])
  box = np.array([[[10, 20], [50, 20], [30, 120]]], np.float64)       # 40 x 100
  np.testing.assert_allclose(ev.normalizer(box, "bbox"), [np.sqrt(4000)])
  with pytest.raises(ValueError, match="inter_ocular"):
    ev.normalizer(np.zeros((1, 5, 2)), "inter_ocular")
  with pytest.raises(ValueError):
    ev.normalizer(gt98, "diagonal")


def test_default_normalisers_by_layout():
  # The 5-point layout (E-SIE, FES): nose, mouth corners image-left/right, eyes 3 and 4.
  gt5 = np.array([[[50, 60], [40, 80], [60, 80], [30, 40], [70, 40]]], np.float64)
  assert metrics.resolve_norm("auto", 5) == "inter_pupil"
  np.testing.assert_allclose(ev.normalizer(gt5, "auto"), [40.0])       # |(70,40) - (30,40)|
  gt98 = _face98(np.random.default_rng(0), 1)                           # 60, 72: 100 px apart
  assert metrics.resolve_norm("auto", 98) == "inter_ocular"
  np.testing.assert_allclose(ev.normalizer(gt98, "auto"), [100.0])
  with pytest.raises(ValueError, match="no default normaliser for 7 landmarks"):
    ev.normalizer(np.zeros((1, 7, 2)), "auto")


def test_summarize_5_points_by_eyes_and_by_box():
  face = np.array([[50, 60], [40, 80], [60, 80], [30, 40], [70, 40]], np.float64)
  gt = np.stack([face, 2 * face])              # the second face twice as large: eyes 80 apart
  pred = gt.copy()
  pred[0, 0] += [3, 4]                         # image 0: nose 5 px off
  pred[0, 4] += [0, 10]                        # and the right eye 10 px off: 15 / 5 / 40
  pred[1, 1] += [-6, 8]                        # image 1: a mouth corner 10 px off: 10 / 5 / 80
  box_size = np.array([100.0, 200.0])          # sqrt(w h) of each face box, px
  out = ev.summarize(pred, gt, norm_kind="auto", box_size=box_size,
                     subsets={"lab": np.array([True, False]), "wild": np.array([False, True])})
  assert out["norm_kind"] == "inter_pupil"
  assert out["nme"] == pytest.approx(100 * (0.075 + 0.025) / 2)
  assert out["nme_box"] == pytest.approx(100 * (3 / 100 + 2 / 200) / 2)
  assert out["per_subset"]["lab"]["nme"] == pytest.approx(7.5)
  assert out["per_subset"]["lab"]["nme_box"] == pytest.approx(3.0)
  assert out["per_subset"]["wild"]["nme_box"] == pytest.approx(1.0)
  assert "nme_box" not in ev.summarize(pred, gt, norm_kind="auto")
  with pytest.raises(ValueError, match="box_size must be"):
    ev.summarize(pred, gt, norm_kind="auto", box_size=[1.0])
  # A 5-point model on 5-point data is scored as it is; on 98-point data it has no mapping
  # (98 -> 5 is E-SIE's).
  np.testing.assert_array_equal(metrics.in_gt_layout(pred, gt), pred)
  with pytest.raises(ValueError, match="5-point predictions cannot be scored against 98"):
    ev.summarize(pred, _face98(np.random.default_rng(1), 2), norm_kind="auto")


def test_nme_mask_drops_padding_and_zero_norm_raises():
  rng = np.random.default_rng(1)
  gt = _face98(rng, 3)
  pred = gt + rng.normal(size=gt.shape)
  gt[2], pred[2] = 0, 0                                  # a padded row: zero normaliser
  norm = ev.normalizer(gt, "inter_ocular")
  mask = np.array([True, True, False])
  nmes = ev.per_image_nme(pred, gt, norm, mask)
  np.testing.assert_allclose(nmes, ev.per_image_nme(pred[:2], gt[:2], norm[:2]))
  with pytest.raises(ValueError, match="positive"):
    ev.per_image_nme(pred, gt, norm)


def test_esie_from_wflw():
  pred98 = np.arange(98 * 2, dtype=np.float64).reshape(98, 2)
  out = ev.esie_from_wflw(pred98[None])
  assert out.shape == (1, 5, 2)
  np.testing.assert_array_equal(out[0, :, 0], [2 * i for i in (54, 76, 82, 96, 97)])
  with pytest.raises(ValueError):
    ev.esie_from_wflw(np.zeros((1, 68, 2)))


# ---------------------------------------------------------------- paper (CMFA) variant

def _calcuate_loss_errors(errors, thres=0.10):
  """The error part of CMFA/test.py::calcuate_loss, literally (np.trapz -> np.trapezoid)."""
  nme = np.mean(errors)
  fr = np.mean(errors > thres)
  error_range = np.linspace(0, thres, num=100)
  ced_curve = [np.mean(errors <= e) for e in error_range]
  auc = np.trapezoid(ced_curve, error_range) / thres
  return nme, fr, auc


def test_paper_variant_by_hand():
  errors = np.array([[0.0, 0.2], [0.0, 0.0]])   # CED 0.5 everywhere, then 1 everywhere
  assert ev.paper_failure_rate(errors) == pytest.approx(0.25)
  assert ev.paper_auc(errors) == pytest.approx(0.75)


def test_paper_variant_matches_reference_code():
  rng = np.random.default_rng(2)
  errors = rng.gamma(2, 0.03, (40, 98))
  ref = np.array([_calcuate_loss_errors(e) for e in errors]).mean(axis=0)
  assert ev.paper_failure_rate(errors) == pytest.approx(ref[1], rel=1e-12)
  assert ev.paper_auc(errors) == pytest.approx(ref[2], rel=1e-12)
  # Through summarize: E-SIE-like 5 points, pupils (3, 4) 10 px apart.
  gt = np.tile(np.array([[5, 5], [2, 8], [8, 8], [0, 0], [10, 0]], float), (40, 1, 1))
  pred = gt + rng.normal(scale=1.5, size=gt.shape)
  errs = np.linalg.norm(pred - gt, axis=-1) / 10
  ref = np.array([_calcuate_loss_errors(e) for e in errs]).mean(axis=0)
  out = ev.summarize(pred, gt, norm_kind="inter_pupil", paper_variant=True)
  np.testing.assert_allclose([out["paper_variant"][k] for k in ("nme", "fr", "auc")],
                             [100 * ref[0], 100 * ref[1], ref[2]], rtol=1e-12)
  assert 0 < ref[1] < 1   # the case exercises both sides of the threshold


# ---------------------------------------------------------------- video metrics

def _video_nmj_ldeq(model_kpts, gt_kpts):
  """LDEQ utils/loss_function.py::video_NMJ, literally."""
  rms = lambda x, axis=0: np.sqrt(np.mean(x**2, axis=axis))
  x_scales = np.max(gt_kpts[:, :, 0], axis=1) - np.min(gt_kpts[:, :, 0], axis=1)
  y_scales = np.max(gt_kpts[:, :, 1], axis=1) - np.min(gt_kpts[:, :, 1], axis=1)
  faces_scales = np.sqrt(x_scales * y_scales / (256**2)).reshape(-1, 1)
  delta = gt_kpts - model_kpts
  nmjs = 100 * np.linalg.norm(delta[:-1] - delta[1:], axis=2) / faces_scales[1:]
  return rms(rms(nmjs, axis=1), axis=0)


def _square_face(t, k=5):
  """(t, k, 2) gt whose point box is 256 x 256 px, so LDEQ's face scale is exactly 1."""
  pts = np.array([[0, 0], [256, 256], [128, 64], [64, 200], [10, 100]], float)[:k]
  return np.tile(pts, (t, 1, 1))


def test_video_nme():
  nmes = np.array([0.1, 0.3, 0.1, 0.5])
  vids = np.array(["a", "a", "b", "a"])
  assert ev.video_nme(nmes, vids) == pytest.approx(0.2)   # (0.3 + 0.1) / 2, not 0.25


def test_nmf_constant_error_is_zero():
  gt = _square_face(6)
  assert ev.nmf(gt + [3.0, -2.0], gt, np.zeros(6)) == pytest.approx(0.0)


def test_nmf_alternating_and_single_step():
  gt = _square_face(6)
  d = 0.5
  sign = np.array([1, -1, 1, -1, 1, -1], float)[:, None, None]
  pred = gt + sign * [d, 0]
  assert ev.video_nmj(pred, gt) == pytest.approx(100 * 2 * d)     # every step jumps by 2d
  assert ev.video_nmj(pred, gt, face_size=np.full(6, 512.0)) == pytest.approx(100 * d)
  # One jump of 1 px out of two steps: RMS over time = 100 / sqrt(2).
  pred3 = _square_face(3) + np.array([0, 1, 1], float)[:, None, None] * [1, 0]
  assert ev.video_nmj(pred3, _square_face(3)) == pytest.approx(100 / np.sqrt(2))


def test_nmf_sorts_by_frame_index_and_skips_short_videos():
  rng = np.random.default_rng(3)
  gt_a = rng.uniform(0, 300, (7, 98, 2))
  pred_a = gt_a + rng.normal(size=gt_a.shape)
  gt_b = rng.uniform(0, 200, (4, 98, 2))
  pred_b = gt_b + rng.normal(size=gt_b.shape)
  expected = np.mean([_video_nmj_ldeq(pred_a, gt_a), _video_nmj_ldeq(pred_b, gt_b)])
  # Shuffle the rows, and add a one-frame video that must not change the result.
  pred = np.concatenate([pred_a, pred_b, pred_b[:1] + 5])
  gt = np.concatenate([gt_a, gt_b, gt_b[:1]])
  vids = np.array([7] * 7 + [3] * 4 + [9])
  frames = np.concatenate([np.arange(7) * 2 + 10, np.arange(4), [0]])
  perm = rng.permutation(len(vids))
  got = ev.nmf(pred[perm], gt[perm], vids[perm], frames[perm])
  assert got == pytest.approx(expected, rel=1e-12)
  assert np.isnan(ev.nmf(pred[:1], gt[:1], vids[:1]))
  with pytest.raises(ValueError, match="twice"):
    ev.nmf(pred[:2], gt[:2], [0, 0], [5, 5])


# ---------------------------------------------------------------- summarize

def test_summarize_subsets_mask_and_json():
  rng = np.random.default_rng(4)
  n = 12
  gt = _face98(rng, n)
  pred = gt + rng.normal(scale=rng.uniform(1, 15, (n, 1, 1)), size=gt.shape)
  pose = np.arange(n) % 3 == 0
  mask = np.arange(n) < 10                       # the last two rows are padding
  pred[10:], gt[10:] = 0, 0
  vids = np.arange(n) // 4
  # summarize gets the rows shuffled, with each row's frame index: its NMF must be that of the
  # frames in time order (computed below on the unshuffled rows), not of the shuffled order.
  perm = rng.permutation(n)
  assert any(np.any(np.diff(perm[vids[perm] == v]) < 0) for v in range(3))
  at = lambda rows: np.flatnonzero(np.isin(perm, rows))   # where original rows went
  out = ev.summarize(pred[perm], gt[perm], norm_kind="inter_ocular", video_ids=vids[perm],
                     frame_index=np.arange(n)[perm],
                     subsets={"pose": pose[perm], "first3": at([0, 1, 2]),
                              "none": np.zeros(n, bool), "pad": at([10, 11])},
                     paper_variant=True, mask=mask[perm])
  json.dumps(out, allow_nan=False)
  nmes = ev.per_image_nme(pred[:10], gt[:10], ev.normalizer(gt[:10], "inter_ocular"))
  assert out["num_images"] == 10
  assert out["nme"] == pytest.approx(100 * nmes.mean())
  assert out["fr"] == pytest.approx(100 * ev.failure_rate(nmes))
  assert out["auc"] == pytest.approx(ev.auc(nmes))
  assert out["video_nme"] == pytest.approx(100 * ev.video_nme(nmes, vids[:10]))
  want_nmf = ev.nmf(pred[:10], gt[:10], vids[:10])
  assert out["nmf"] == pytest.approx(want_nmf)
  kept = perm[mask[perm]]
  assert ev.nmf(pred[kept], gt[kept], vids[kept]) != pytest.approx(want_nmf)  # order matters
  assert out["num_videos"] == 3
  sub = out["per_subset"]
  p = pose[:10]
  assert sub["pose"]["n"] == 4
  assert sub["pose"]["nme"] == pytest.approx(100 * nmes[p].mean())
  assert sub["pose"]["auc"] == pytest.approx(ev.auc(nmes[p]))
  assert sub["first3"]["n"] == 3 and sub["first3"]["fr"] == pytest.approx(
      100 * ev.failure_rate(nmes[:3]))
  assert sub["first3"]["nme"] == pytest.approx(100 * nmes[:3].mean())
  assert sub["none"] == {"nme": None, "fr": None, "auc": None, "n": 0}
  assert sub["pad"]["n"] == 0
  assert out["paper_variant"]["nme"] == pytest.approx(out["nme"])
  assert "paper_variant" in sub["pose"]


def test_summarize_esie_maps_98_to_5():
  rng = np.random.default_rng(5)
  pred98 = rng.uniform(0, 100, (3, 98, 2))
  gt5 = ev.esie_from_wflw(pred98) + [1.0, 0.0]
  gt5[:, 3], gt5[:, 4] = [20, 50], [70, 50]          # pupils 50 px apart
  out = ev.summarize(pred98, gt5, norm_kind="inter_pupil")
  expected = np.linalg.norm(ev.esie_from_wflw(pred98) - gt5, axis=-1).mean() / 50
  assert out["nme"] == pytest.approx(100 * expected)
  # "auto" on 5-point data is the same eye distance.
  assert ev.summarize(pred98, gt5, norm_kind="auto") == out


# ---------------------------------------------------------------- plots

def _no_temp_files(directory):
  return not glob.glob(os.path.join(directory, ".*.tmp"))


def test_ced_image_draws_each_curve(monkeypatch):
  rng = np.random.default_rng(6)
  curves = {"a": rng.gamma(4, 0.011, 300), "b": rng.gamma(4, 0.015, 300)}
  from matplotlib.axes import Axes
  plotted, plot = [], Axes.plot

  def recording_plot(self, *args, **kwargs):
    lines = plot(self, *args, **kwargs)
    plotted.extend((l.get_xdata(), l.get_ydata(), l.get_label()) for l in lines)
    return lines

  monkeypatch.setattr(Axes, "plot", recording_plot)
  img = ev.ced_image(curves)
  assert img.shape == (540, 720, 3) and img.dtype == np.uint8
  assert (img[0, 0] == 255).all() and (img < 128).any()   # white figure, dark lines and text
  # Each line is the CED of its NMEs: the fraction of images at or below x, for x up to 0.1.
  assert len(plotted) == 2
  for (name, nmes), (xs, ys, label) in zip(curves.items(), plotted):
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    assert xs[0] == 0 and xs[-1] == pytest.approx(0.1) and np.all(np.diff(xs) > 0)
    want = np.array([np.count_nonzero(nmes <= x) / len(nmes) for x in xs])
    np.testing.assert_allclose(ys, want, atol=1e-12)
    assert 0 < ys[len(ys) // 2] < ys[-1] < 1     # the curve rises inside the plot
    assert label.startswith(f"{name} (AUC ") and f"NME {100 * np.mean(nmes):.2f}%" in label
  # A bad curve fails before anything is drawn.
  with pytest.raises(ValueError):
    ev.ced_image({"a": [0.03, np.nan]})


def test_prediction_grid():
  images = np.full((5, 40, 50, 3), 30, np.uint8)
  gt = np.tile(np.array([[10.0, 10.0], [30.0, 20.0]]), (5, 1, 1))
  pred = gt + [8.0, 8.0]
  grid = ev.prediction_grid(images, pred, gt, titles=[f"#{i}" for i in range(5)], ncols=3)
  assert grid.shape == (2 * (40 + 14), 3 * 50, 3) and grid.dtype == np.uint8
  # Tile 4 sits at row 1, column 1: its gt point green, its prediction red (RGB).
  y0, x0 = 54 + 14, 50
  assert tuple(grid[y0 + 10, x0 + 10]) == plots.GT_COLOR
  assert tuple(grid[y0 + 18, x0 + 18]) == plots.PRED_COLOR
  assert (grid[2 * 54:] == 0).all() and (grid[54:, 100:] == 0).all()   # the unused cell
  # Gray images without gt also work.
  assert ev.prediction_grid(np.zeros((2, 20, 20), np.uint8), pred[:2] / 2).shape == (20, 40, 3)
  with pytest.raises(ValueError, match="uint8"):
    ev.prediction_grid(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 1, 2)))


def test_write_atomic_removes_partial_file(tmp_path):
  path = str(tmp_path / "x.png")
  with open(path, "wb") as f:
    f.write(b"old")

  def partial(tmp):
    with open(tmp, "wb") as f:
      f.write(b"half")
    raise OSError("interrupted")

  with pytest.raises(OSError):
    files.write_atomic(path, partial)
  assert open(path, "rb").read() == b"old"
  assert _no_temp_files(tmp_path)


@pytest.mark.slow
def test_metrics_module_does_not_import_matplotlib():
  import subprocess
  import sys
  code = "import sys, evalign_jax.evaluators; print('matplotlib' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
  assert metrics.NORM_KINDS == ("inter_ocular", "inter_pupil", "bbox")
