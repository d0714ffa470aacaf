"""Tests of the models: sizes, patch sampling, stage coupling, freezing, bf16, SimSiam, transfers,
PyTorch checkpoint conversion and Orbax checkpoints.

References are independent of the model code: parameter counts from the layer shapes, a float64
numpy version of the official patch sampling, a 6-pass SimSiam loss, and an explicit inverse of the
PyTorch name mapping. Compute tests use tiny models (64x64 images, 16x16 feature maps).
"""

import importlib.util
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from evalign_jax import config_utils
from evalign_jax import models
from evalign_jax.models import checkpoint_io
from evalign_jax.models import slpt as slpt_lib
from evalign_jax.tools import import_torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A checkout of the official CMFA-SSMER code, for the parity test only.
OFFICIAL_DIR = os.environ.get("EVALIGN_OFFICIAL_DIR", "/work/official/cmfa")

# The tiny variant's sizes (configs/<stage>.py:tiny).
TINY = config_utils.TINY_MODEL_SIZE


def _count(state) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def _mean_shape(k: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0.25, 0.75, (k, 2))


def _images(b, size=64, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, size, size, 3)), jnp.float32)


# --------------------------------------------------------------------------------------------------
# Analytic parameter counts (from the architecture description, not from the model code).
# --------------------------------------------------------------------------------------------------


def _conv(k, i, o):
  return k * k * i * o


def _bn(c):
  return 2 * c


def _hrnet_body(w=18, blocks=4):
  n = _conv(3, 3, 64) + _bn(64) + _conv(3, 64, 64) + _bn(64)
  for i in range(4):  # layer1 Bottlenecks, 64 planes, x4 expansion.
    cin = 64 if i == 0 else 256
    n += _conv(1, cin, 64) + _bn(64) + _conv(3, 64, 64) + _bn(64) + _conv(1, 64, 256) + _bn(256)
    n += _conv(1, cin, 256) + _bn(256) if cin != 256 else 0
  n += _conv(3, 256, w) + _bn(w) + _conv(3, 256, 2 * w) + _bn(2 * w)  # transition1
  n += _conv(3, 2 * w, 4 * w) + _bn(4 * w) + _conv(3, 4 * w, 8 * w) + _bn(8 * w)  # transition2, 3
  for nb in (2, 3, 4):
    ch = [w * 2**i for i in range(nb)]
    n += sum(blocks * 2 * (_conv(3, c, c) + _bn(c)) for c in ch)
    for i in range(nb):
      for j in range(nb):
        if j > i:
          n += _conv(1, ch[j], ch[i]) + _bn(ch[i])
        elif j < i:
          n += (i - j - 1) * (_conv(3, ch[j], ch[j]) + _bn(ch[j]))
          n += _conv(3, ch[j], ch[i]) + _bn(ch[i])
  return n


def _hrnet_head(out, c=270):
  return _conv(1, c, c) + c + _bn(c) + _conv(1, c, out) + out


def _mha(d):
  return 4 * d * d + 4 * d


def _decoder(k, d, layers, ffn, attns):
  layer = attns * _mha(d) + (d * ffn + ffn + ffn * d + d) + (attns + 1) * 2 * d
  return k * d + layers * layer + 2 * d  # landmark queries, layers, final norm


PATCH = 7 * 7 * 256 * 256


@pytest.fixture(scope="module")
def full_models():
  """Full-size models, built eagerly (fast: the initialisers draw with numpy)."""
  mean = _mean_shape(98)
  return {"slpt": models.SLPT(mean, rngs=nnx.Rngs(0)), "cmfa": models.CMFA(mean, rngs=nnx.Rngs(1)),
          "ssmer": models.SimSiam(rngs=nnx.Rngs(2))}


def test_parameter_counts(full_models):
  body, head = _hrnet_body(), _hrnet_head(256)
  assert (body, head) == (3_467_676, 143_086)
  hrnet = models.HRNet(256, rngs=nnx.Rngs(0))
  assert _count(nnx.state(hrnet, nnx.Param)) == body + head == 3_610_762
  assert _count(nnx.state(hrnet, nnx.All(nnx.Param, models.body_filter))) == body

  slpt = body + head + PATCH + 98 * 256 + _decoder(98, 256, 6, 1024, 2) + 256 * 2 + 2
  assert slpt == 13_193_868
  assert _count(nnx.state(full_models["slpt"], nnx.Param)) == slpt

  cmfa = full_models["cmfa"]
  frozen = body + head + PATCH + 98 * 256
  trainable = body + head + PATCH + 98 * 256 + _decoder(98, 256, 6, 1024, 3) + 256 * 2 + 2
  assert (frozen, trainable) == (6_847_114, 14_775_948)
  assert _count(nnx.state(cmfa, nnx.Param)) == frozen + trainable == 21_623_062
  assert _count(nnx.state(cmfa, nnx.All(nnx.Param, models.CMFA.frozen_filter))) == frozen
  assert _count(nnx.state(cmfa, models.CMFA.trainable_filter)) == trainable

  ssmer = full_models["ssmer"]
  projector = 2 * 2048 + 2048 * 2048 + 2 * 2048 + 2048 * 2048 + 2048  # BN, fc1, BN, fc2 (+bias)
  predictor = 2048 * 512 + 2 * 512 + 512 * 2048 + 2048
  enc = _count(nnx.state(ssmer.encoder, nnx.Param))
  proj = _count(nnx.state(ssmer.projector, (nnx.Param, models.FrozenParam)))
  assert enc == body + _hrnet_head(2048)
  assert enc + proj == body + _hrnet_head(2048) + projector == 12_495_242
  assert _count(nnx.state(ssmer.predictor, nnx.Param)) == predictor == 2_100_224
  # The frozen bias is state, not a trainable Param.
  assert _count(nnx.state(ssmer, models.FrozenParam)) == 2048


def test_frozen_filter_selects_exactly_the_rgb_branch(full_models):
  cmfa = full_models["cmfa"]
  frozen = nnx.to_flat_state(nnx.state(cmfa, models.CMFA.frozen_filter))
  assert frozen and all(path[0] == "rgb" for path, _ in frozen)
  assert {path[1] for path, _ in frozen} == {"backbone", "patch_embed", "structure_encoding"}
  trainable = nnx.to_flat_state(nnx.state(cmfa, models.CMFA.trainable_filter))
  assert all(path[0] == "event" for path, _ in trainable)


# --------------------------------------------------------------------------------------------------
# Sparse local patches against a float64 numpy version of the official sampling.
# --------------------------------------------------------------------------------------------------


def _official_patches(fmap_nchw, anchors, half, s=7, grid=64):
  """get_roi + interpolation_layer + view/permute(0, 3, 2, 1), in float64 numpy.

  Returns patches (B, K, S, S, C) in (y, x) order, window min and size, and the per-sample corner
  indices / weights for the adjoint.
  """
  b, c, h, w = fmap_nchw.shape
  k = anchors.shape[1]
  lo = np.clip(anchors - half / grid, 0.0, 1.0)
  hi = np.clip(anchors + half / grid, 0.0, 1.0)
  # F.interpolate(linear, align_corners=True) of [min, max] to S samples.
  src = np.arange(s) / (s - 1)
  lam = src - np.floor(src)
  lerp = lambda a, z: np.where(np.floor(src) >= 1, z[..., None],
                               (1 - lam) * a[..., None] + lam * z[..., None])
  xs, ys = lerp(lo[..., 0], hi[..., 0]), lerp(lo[..., 1], hi[..., 1])  # (B, K, S)
  grid_pts = np.stack(np.broadcast_arrays(xs[:, :, :, None], ys[:, :, None, :]), -1)  # [i=x, j=y]
  pts = grid_pts.reshape(b, k * s * s, 2) * (h - 1)
  pts = np.clip(pts, 0, h - 1)
  lt, rb = np.floor(pts).astype(int), np.ceil(pts).astype(int)
  lb = np.stack([lt[..., 0], rb[..., 1]], -1)
  rt = np.stack([rb[..., 0], lt[..., 1]], -1)
  bi = np.arange(b)[:, None]
  val = lambda p: fmap_nchw[bi, :, p[..., 1], p[..., 0]]  # (B, N, C)
  d = pts - lt
  top = val(lt) + (val(rt) - val(lt)) * d[..., 0:1]
  bottom = val(lb) + (val(rb) - val(lb)) * d[..., 0:1]
  out = top + (bottom - top) * d[..., 1:2]  # (B, K*S*S, C)
  patches = out.reshape(b, k, s, s, c).transpose(0, 1, 3, 2, 4)  # the (0, 3, 2, 1) permute
  dx, dy = d[..., 0], d[..., 1]
  corners = [(lt, (1 - dx) * (1 - dy)), (rt, dx * (1 - dy)), (lb, (1 - dx) * dy), (rb, dx * dy)]
  return patches, lo, hi - lo, corners


def test_registry_builds_each_model_from_its_config():
  mean = _mean_shape(98)
  for name, cls in (("rgb_slpt", models.SLPT), ("slpt_event", models.SLPT), ("cmfa", models.CMFA),
                    ("ssmer", models.SimSiam)):
    config = {"model": name, "dtype": "bfloat16", "rgb_bn_train": True,
              "model_size": TINY if name != "ssmer" else SIMSIAM_TINY}
    model = models.build_model(config, mean if models.model_spec(name).landmarks else None)
    assert type(model) is cls
    backbone = model.encoder if name == "ssmer" else (
        model.event.backbone if name == "cmfa" else model.backbone)
    assert backbone.conv1.kernel.shape[-1] == 64 and backbone.conv1.dtype == jnp.bfloat16
    if name == "cmfa":
      assert model.rgb_bn_train and model.event.decoder.layers.linear1.kernel.shape == (
          TINY["num_layers"], TINY["d_model"], TINY["ffn_dim"])
  assert models.model_spec("cmfa").inputs == ("rgb", "events")
  assert models.model_spec("cmfa").trainable is models.CMFA.trainable_filter
  assert models.LANDMARK_MODELS == ("rgb_slpt", "slpt_event", "cmfa")
  with pytest.raises(ValueError, match=r"unknown model 'resnet'; valid models: \['cmfa'"):
    models.build_model({"model": "resnet"})
  with pytest.raises(ValueError, match="needs a mean shape"):
    models.build_model({"model": "cmfa", "rgb_bn_train": False})
  with pytest.raises(ValueError, match="unknown dtype"):
    models.build_model({"model": "ssmer", "dtype": "float16"})


def test_patch_sampling_matches_official_float64():
  rng = np.random.default_rng(0)
  b, c, h = 2, 5, 16
  fmap = rng.normal(size=(b, c, h, h))
  anchors = rng.uniform(-0.05, 1.05, size=(b, 6, 2))
  anchors[0, 0] = [0.0, 1.0]  # corners: windows clamped on two sides
  anchors[1, 1] = [5 / 15, 7 / 15]  # samples on exact grid nodes (floor == ceil)
  fmap_nhwc = jnp.asarray(fmap.transpose(0, 2, 3, 1), jnp.float32)
  for half in (8.0, 4.0, 2.0):
    want, want_lo, want_size, corners = _official_patches(fmap, anchors, half)
    points, lo, size = models.roi_sample_points(jnp.asarray(anchors, jnp.float32), half)
    got = models.sample_patches(fmap_nhwc, points)
    np.testing.assert_allclose(lo, want_lo, atol=1e-6)
    np.testing.assert_allclose(size, want_size, atol=1e-6)
    np.testing.assert_allclose(got, want, atol=2e-5)

    # The backward pass (a scatter-add) is the exact adjoint of the official sampling.
    cot = rng.normal(size=want.shape)
    grad = jax.grad(lambda f: jnp.sum(models.sample_patches(f, points) * cot))(fmap_nhwc)
    cot_flat = cot.transpose(0, 1, 3, 2, 4).reshape(b, -1, c)  # back to the official order
    adjoint = np.zeros((b, h, h, c))
    for p, wgt in corners:
      np.add.at(adjoint, (np.arange(b)[:, None], p[..., 1], p[..., 0]), cot_flat * wgt[..., None])
    np.testing.assert_allclose(grad, adjoint, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Forward and backward passes on tiny models.
# --------------------------------------------------------------------------------------------------


def _batch_stats(module):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.BatchStat))]


def test_batchnorm_statistics_match_flax_and_trace_without_origin_messages(monkeypatch):
  # Our BatchNorm is nnx.BatchNorm with statistics that rebind when traced: the same outputs and
  # statistics, jitted and eager, and tracing never asks JAX for a tracer's origin message
  # (built by walking the whole trace, it made tracing quadratic in the number of BatchNorms).
  from evalign_jax.models import batchnorm   # pylint: disable=g-import-not-at-top
  from jax._src.interpreters import partial_eval as pe   # pylint: disable=g-import-not-at-top
  calls = []
  origin_msg = pe.DynamicJaxprTracer._origin_msg   # pylint: disable=protected-access
  monkeypatch.setattr(pe.DynamicJaxprTracer, "_origin_msg",
                      lambda self: calls.append(1) or origin_msg(self))
  kw = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False)
  x = jax.random.normal(jax.random.key(0), (4, 3, 3, 6)) * 3 + 1

  def run(make, jit):
    stack = nnx.List([make(6, rngs=nnx.Rngs(0), **kw) for _ in range(3)])
    def f(s, x):
      for bn in s:
        x = bn(x, use_running_average=False)
      return x
    out = (nnx.jit(f) if jit else f)(stack, x)
    return np.asarray(out), _batch_stats(stack)

  for jit in (True, False):
    want, want_stats = run(nnx.BatchNorm, jit)
    flax_calls = len(calls)
    got, got_stats = run(batchnorm.BatchNorm, jit)
    assert len(calls) == flax_calls   # ours asked for none
    np.testing.assert_array_equal(got, want)
    assert len(got_stats) == 6
    for a, b in zip(got_stats, want_stats):
      np.testing.assert_array_equal(a, b)
  assert flax_calls > 0   # flax's own path still does (else this workaround can go)


def test_cmfa_gradients_frozen_rgb_and_stage_stop_gradient():
  """One training-mode backward pass of a tiny CMFA checks three things."""
  k = 5
  model = models.CMFA(_mean_shape(k), rngs=nnx.Rngs(0), **TINY)
  model.train()
  rgb_stats, event_stats = _batch_stats(model.rgb), _batch_stats(model.event)
  x_rgb, x_ev = _images(2, seed=1), _images(2, seed=2)

  def loss(m):
    out = m(x_rgb, x_ev)
    return jnp.mean(out ** 2), out

  # Differentiate w.r.t. the whole RGB branch and the event head. (Leaving out the event backbone
  # only keeps the test fast: its backward pass dominates compilation.)
  wrt = nnx.All(nnx.Param, nnx.Any(models.CMFA.frozen_filter, nnx.PathContains("decoder"),
                                   nnx.PathContains("out_layer")))
  grads, out = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, wrt), has_aux=True))(model)
  assert out.shape == (2, 3, 2, k, 2) and out.dtype == jnp.float32

  # 1. No gradient reaches the frozen RGB branch; the event decoder gets one everywhere.
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["rgb"]))
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads["event"]["decoder"]))

  # 2. The frozen RGB BatchNorm runs in eval mode while the event backbone's trains (default).
  assert any(not np.allclose(a, b) for a, b in zip(event_stats, _batch_stats(model.event)))
  assert all(np.array_equal(a, b) for a, b in zip(rgb_stats, _batch_stats(model.rgb)))

  # 3. Anchors are constants between stages. Landmarks are window_min + window_size * (W h + b),
  # so with constant windows d loss / d b_c = 2 / N * sum(out[..., c] * window_size[..., c]); a
  # gradient leaking through the previous stage's prediction into the windows would add terms.
  out = np.asarray(out, np.float64)
  anchors = [np.broadcast_to(model.mean_shape[...], (2, k, 2)), out[:, 0, -1], out[:, 1, -1]]
  sizes = np.stack([np.asarray(models.roi_sample_points(jnp.asarray(a, jnp.float32), h)[2])
                    for a, h in zip(anchors, (8.0, 4.0, 2.0))], axis=1)  # (B, stages, K, 2)
  expected = 2.0 / out.size * np.sum(out * sizes[:, :, None], axis=(0, 1, 2, 3))
  np.testing.assert_allclose(grads["event"]["out_layer"]["bias"][...], expected, rtol=1e-4)


@nnx.jit
def _forward(model, image):
  return model(image)


def test_slpt_bfloat16_compute_stays_close_to_float32():
  k = 5
  f32 = models.SLPT(_mean_shape(k), rngs=nnx.Rngs(0), **TINY)
  bf16 = models.SLPT(_mean_shape(k), dtype=jnp.bfloat16, rngs=nnx.Rngs(1), **TINY)
  nnx.update(bf16, nnx.state(f32))
  f32.eval()
  bf16.eval()
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  x = _images(2)
  a, b = _forward(f32, x), _forward(bf16, x)
  assert a.shape == b.shape == (2, 3, 2, k, 2) and b.dtype == jnp.float32
  assert np.max(np.abs(a - b)) < 0.02  # in [0, 1] crop units
  assert np.mean(np.abs(a - b)) < 0.005
  # ... but not identical: a model that ignored `dtype` would pass the bounds above.
  assert np.max(np.abs(a - b)) > 0
  # The decoder's matmuls (projections, FFN) run in bf16; the float32 model's in float32.
  # Tracing only, nothing is compiled.
  def decoder_jaxpr(model):
    graphdef, state = nnx.split(model.decoder)
    tokens = jnp.zeros((2, k, TINY["d_model"]), jnp.float32)
    return str(jax.make_jaxpr(lambda s, t, e: nnx.merge(graphdef, s)(t, e))(
        state, tokens, model.structure_encoding[...]))
  bf16_dots = r"bf16\[[0-9,]*\] = dot_general"
  assert len(re.findall(bf16_dots, decoder_jaxpr(bf16))) >= 10   # 2 x 4 projections + FFN
  assert not re.findall(bf16_dots, decoder_jaxpr(f32))
  assert re.findall(r"f32\[[0-9,]*\] = dot_general", decoder_jaxpr(f32))


# --------------------------------------------------------------------------------------------------
# A float64 numpy decoder written from the PyTorch semantics (nn.MultiheadAttention, the official
# pre-norm TransformerDecoderLayer), with PyTorch's (out, in) weight layout.
# --------------------------------------------------------------------------------------------------


def _np_layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)   # biased, as torch.nn.LayerNorm
  return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _np_linear(x, weight, bias):
  return x @ weight.T + bias   # torch.nn.Linear: weight is (out, in)


def _np_mha(query, key, value, p, heads):
  """torch.nn.MultiheadAttention(batch_first=True), no masks, no dropout.

  `p`: in_proj_weight (3D, D) = [W_q; W_k; W_v], in_proj_bias (3D,), out_proj weight / bias.
  """
  d = query.shape[-1]
  dh = d // heads
  w_q, w_k, w_v = np.split(p["in_proj_weight"], 3)
  b_q, b_k, b_v = np.split(p["in_proj_bias"], 3)
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, dh).transpose(0, 2, 1, 3)
  q = split(_np_linear(query, w_q, b_q)) * dh ** -0.5   # torch scales q before q k^T
  k, v = split(_np_linear(key, w_k, b_k)), split(_np_linear(value, w_v, b_v))
  logits = q @ k.transpose(0, 1, 3, 2)                   # (B, h, Lq, Lk)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = (w @ v).transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], d)
  return _np_linear(out, p["out_proj_weight"], p["out_proj_bias"])


def _np_decoder_layer(tgt, query_pos, memory, pos, p, heads, ref=None, ref_pos=None):
  """The official forward_pre: [modal-attn (CMFA),] self-attn, cross-attn, FFN, each pre-norm."""
  if ref is not None:   # CMFA: attend to the RGB tokens, structure encoding on the keys
    tgt = tgt + _np_mha(_np_layer_norm(tgt, p["modal_norm"]) + query_pos, ref + ref_pos, ref,
                        p["modal_attn"], heads)
  x = _np_layer_norm(tgt, p["self_norm"])
  tgt = tgt + _np_mha(x + query_pos, x + query_pos, x, p["self_attn"], heads)
  x = _np_layer_norm(tgt, p["cross_norm"])
  tgt = tgt + _np_mha(x + query_pos, memory + pos, memory, p["cross_attn"], heads)
  x = _np_layer_norm(tgt, p["ffn_norm"])
  hidden = np.maximum(_np_linear(x, p["linear1"]["weight"], p["linear1"]["bias"]), 0.0)
  return tgt + _np_linear(hidden, p["linear2"]["weight"], p["linear2"]["bias"])


def _torch_layout(layer_params: dict) -> dict:
  """An NNX DecoderLayer's params (flax (in, out) kernels) -> the torch layout, float64."""
  f = lambda x: np.asarray(x, np.float64)
  out = {}
  for name, sub in layer_params.items():
    if "query" in sub:   # MultiHeadAttention
      qkv = ("query", "key", "value")
      out[name] = {
          "in_proj_weight": np.concatenate([f(sub[n]["kernel"]).T for n in qkv]),
          "in_proj_bias": np.concatenate([f(sub[n]["bias"]) for n in qkv]),
          "out_proj_weight": f(sub["out"]["kernel"]).T, "out_proj_bias": f(sub["out"]["bias"])}
    elif "kernel" in sub:
      out[name] = {"weight": f(sub["kernel"]).T, "bias": f(sub["bias"])}
    else:
      out[name] = {k: f(v) for k, v in sub.items()}
  return out


def _randomise_params(module, seed):
  """Every Param to random values (LayerNorm scales near 1), so zero biases hide nothing."""
  rng = np.random.default_rng(seed)
  state = nnx.state(module, nnx.Param)
  flat = [(path, jnp.asarray((1.0 if path[-1] == "scale" else 0.0)
                             + 0.3 * rng.normal(size=v.shape), jnp.float32))
          for path, v in nnx.to_flat_state(state)]
  nnx.update(module, nnx.from_flat_state(flat))


def _pure(module) -> dict:
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


@pytest.mark.parametrize("cross_modal", [False, True])
def test_decoder_layer_matches_float64_torch_semantics(cross_modal):
  d, heads, ffn, b, k, m, r = 8, 2, 16, 2, 3, 5, 4   # k queries, m memory tokens, r RGB tokens
  layer = slpt_lib.DecoderLayer(d, heads, ffn, cross_modal=cross_modal, rngs=nnx.Rngs(0))
  _randomise_params(layer, 1)
  rng = np.random.default_rng(2)
  tgt, memory = rng.normal(size=(b, k, d)), rng.normal(size=(b, m, d))
  query_pos, pos = rng.normal(size=(1, k, d)), rng.normal(size=(1, m, d))
  ref, ref_pos = (rng.normal(size=(b, r, d)), rng.normal(size=(1, r, d))) if cross_modal else (
      None, None)
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  got = layer(f32(tgt), f32(query_pos), f32(memory), f32(pos), f32(ref), f32(ref_pos))
  want = _np_decoder_layer(tgt, query_pos, memory, pos, _torch_layout(_pure(layer)), heads, ref,
                           ref_pos)
  assert np.max(np.abs(want - tgt)) > 0.5   # the layer does something
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cross_modal", [False, True])
def test_landmark_decoder_stacks_layers_like_the_official_decoder(cross_modal):
  """Zero content query, learned queries as query_pos, layers in order, the final norm on each
  layer's output (return_intermediate), dropout off in eval mode."""
  d, heads, ffn, layers, b, k = 8, 2, 16, 3, 2, 4
  decoder = slpt_lib.LandmarkDecoder(k, d, heads, layers, ffn, cross_modal=cross_modal,
                                     rngs=nnx.Rngs(0))
  _randomise_params(decoder, 3)
  decoder.eval()
  rng = np.random.default_rng(4)
  tokens, pos = rng.normal(size=(b, k, d)), rng.normal(size=(k, d))
  ref, ref_pos = (rng.normal(size=(b, k, d)), rng.normal(size=(k, d))) if cross_modal else (
      None, None)
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  got = decoder(f32(tokens), f32(pos), f32(ref), f32(ref_pos))
  p = _pure(decoder)
  tgt, want = np.zeros((b, k, d)), []
  for i in range(layers):
    layer_p = _torch_layout(jax.tree.map(lambda x: x[i], p["layers"]))
    tgt = _np_decoder_layer(tgt, np.asarray(p["landmark_query"], np.float64)[None], tokens,
                            pos[None], layer_p, heads, ref,
                            None if ref_pos is None else ref_pos[None])
    want.append(_np_layer_norm(tgt, {n: np.asarray(v, np.float64) for n, v in p["norm"].items()}))
  assert got.shape == (b, layers, k, d)
  np.testing.assert_allclose(np.asarray(got, np.float64), np.stack(want, axis=1), rtol=1e-5,
                             atol=1e-5)


def test_rgb_branch_from_slpt_copies_the_tokeniser():
  k = 5
  slpt = models.SLPT(_mean_shape(k), rngs=nnx.Rngs(0), **TINY)
  cmfa = models.CMFA(_mean_shape(k), rngs=nnx.Rngs(1), **TINY)
  event_before = jax.tree.map(np.asarray, nnx.state(cmfa.event, nnx.Param))
  models.rgb_branch_from_slpt(cmfa, slpt)
  for name in ("backbone", "patch_embed"):
    for a, b in zip(jax.tree.leaves(nnx.state(getattr(slpt, name))),
                    jax.tree.leaves(nnx.state(getattr(cmfa.rgb, name)))):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(slpt.structure_encoding[...], cmfa.rgb.structure_encoding[...])
  for a, b in zip(jax.tree.leaves(event_before), jax.tree.leaves(nnx.state(cmfa.event, nnx.Param))):
    np.testing.assert_array_equal(a, b)


def test_aligner_from_slpt_starts_cmfa_as_the_slpt_attending_to_rgb():
  k = 5
  slpt = models.SLPT(_mean_shape(k), rngs=nnx.Rngs(0), **TINY)
  cmfa = models.CMFA(_mean_shape(k, seed=1), rngs=nnx.Rngs(1), **TINY)
  models.rgb_branch_from_slpt(cmfa, slpt)
  models.aligner_from_slpt(cmfa, slpt)
  flat = lambda m: {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                    jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(
                        nnx.state(m, checkpoint_io.MODEL_STATE)))}
  event, dec, src = cmfa.event, cmfa.event.decoder, slpt.decoder
  for a, b in ((event.backbone, slpt.backbone), (event.patch_embed, slpt.patch_embed),
               (event.out_layer, slpt.out_layer), (dec.norm, src.norm),
               (dec.layers.modal_attn, src.layers.cross_attn),
               (dec.layers.modal_norm, src.layers.cross_norm),
               (dec.layers.self_attn, src.layers.self_attn),
               (dec.layers.linear1, src.layers.linear1)):
    got, want = flat(a), flat(b)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
  np.testing.assert_array_equal(dec.landmark_query[...], src.landmark_query[...])
  np.testing.assert_array_equal(cmfa.mean_shape[...], np.float32(_mean_shape(k, seed=1)))
  assert not np.any(dec.layers.cross_attn.out.kernel[...])
  # The event cross-attention's output starts at zero: from the official zero decoder state the
  # fresh CMFA predicts from the RGB crop alone, whatever the event image.
  cmfa.eval()
  rgb = _images(2)
  a, b = cmfa(rgb, _images(2, seed=1)), cmfa(rgb, _images(2, seed=2))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  # An SLPT target takes every weight but keeps its own dataset's mean shape.
  target = models.SLPT(_mean_shape(k, seed=2), rngs=nnx.Rngs(2), **TINY)
  models.aligner_from_slpt(target, slpt)
  got, want = flat(target), flat(slpt)
  for key in want:
    if key != "['mean_shape']":
      np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
  np.testing.assert_array_equal(target.mean_shape[...], np.float32(_mean_shape(k, seed=2)))


# --------------------------------------------------------------------------------------------------
# SSMER.
# --------------------------------------------------------------------------------------------------

SIMSIAM_TINY = config_utils.TINY_SSMER_SIZE


def test_simsiam_three_pass_loss_equals_official_six_pass():
  """Encoding each view once gives the official 6-pass (two passes per pair) loss and gradient.

  The model part: in train mode a view's (z, p) does not depend on which pass encodes it (each
  pass normalises with its own batch statistics), checked on a real tiny SimSiam. The loss part:
  value and gradient w.r.t. every pass's (z, p), summed per view - the parameter gradient then
  follows by the chain rule.
  """
  model = models.SimSiam(rngs=nnx.Rngs(0), **SIMSIAM_TINY)
  model.train()
  views = [_images(4, size=32, seed=s) for s in range(3)]
  encode = nnx.jit(lambda m, x: m(x))
  once = [encode(model, v) for v in views]
  owners = [0, 1, 1, 2, 0, 2]  # official trio_train: model(x1, x2) for (0,1), (1,2), (0,2)
  six = [encode(model, views[v]) for v in owners]
  for (z, p), v in zip(six, owners):
    np.testing.assert_allclose(z, once[v][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, once[v][1], rtol=1e-5, atol=1e-6)

  def cos(a, b):  # torch.nn.CosineSimilarity(dim=1)
    return jnp.sum(a * b, 1) / jnp.maximum(
        jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1), 1e-8)

  def six_pass(zs, ps):  # official: p1, p2, z1.detach(), z2.detach() per pair
    total = 0.0
    for i in range(3):
      z1, z2 = jax.lax.stop_gradient(zs[2 * i]), jax.lax.stop_gradient(zs[2 * i + 1])
      total += -(cos(ps[2 * i], z2).mean() + cos(ps[2 * i + 1], z1).mean()) * 0.5
    return total

  z6, p6 = [z for z, _ in six], [p for _, p in six]
  z3, p3 = [z for z, _ in once], [p for _, p in once]
  l6, (gz6, gp6) = jax.value_and_grad(six_pass, argnums=(0, 1))(z6, p6)
  l3, (gz3, gp3) = jax.value_and_grad(
      lambda z, p: models.simsiam_loss(p, z), argnums=(0, 1))(z3, p3)
  np.testing.assert_allclose(l3, l6, rtol=1e-5)
  assert -3.0 <= float(l3) <= 3.0
  # Views stacked on axis 1, (B, V, D), as a training step collects them.
  np.testing.assert_allclose(models.simsiam_loss(jnp.stack(p3, 1), jnp.stack(z3, 1)), l3, rtol=1e-6)
  for v in range(3):
    per_view = sum(gp6[i] for i, o in enumerate(owners) if o == v)
    np.testing.assert_allclose(gp3[v], per_view, rtol=1e-4, atol=1e-7)
    assert not np.any(gz3[v])
  assert not any(np.any(g) for g in gz6)


def test_simsiam_frozen_bias_is_state_not_param():
  model = models.SimSiam(rngs=nnx.Rngs(0), **SIMSIAM_TINY)
  assert isinstance(model.projector.fc2.bias, models.FrozenParam)
  assert "bias" not in nnx.state(model.projector.fc2, nnx.Param)
  assert "bias" in nnx.state(model.projector.fc2, models.FrozenParam)


def test_ssmer_encoder_body_transfers_to_cmfa_backbone_head_kept():
  ssmer = models.SimSiam(rngs=nnx.Rngs(0), **SIMSIAM_TINY)
  cmfa = models.CMFA(_mean_shape(5), rngs=nnx.Rngs(1), **TINY)
  target = cmfa.event.backbone
  head_before = jax.tree.map(np.asarray, nnx.state(target.head))
  models.load_encoder_body(target, ssmer)
  body_src = dict(nnx.to_flat_state(models.encoder_body_state(ssmer)))
  body_dst = dict(nnx.to_flat_state(nnx.state(target, models.body_filter)))
  assert body_src.keys() == body_dst.keys() and body_src
  for path, v in body_src.items():
    np.testing.assert_array_equal(v[...], body_dst[path][...])
  for a, b in zip(jax.tree.leaves(head_before), jax.tree.leaves(nnx.state(target.head))):
    np.testing.assert_array_equal(a, b)
  assert target.head.conv2.kernel.shape[-1] == 32


# --------------------------------------------------------------------------------------------------
# PyTorch name mapping: an explicit inverse, official counts pinned.
# --------------------------------------------------------------------------------------------------

# Official state-dict sizes (tensors without num_batches_tracked; elements incl. BN statistics),
# read once from the official modules.
OFFICIAL_SIZES = {"cmfa": (1329, 21_652_198), "slpt": (705, 13_208_948), "ssmer": (608, 14_623_346)}


def _flat(tree, prefix=()):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, prefix + (k,)))
    return out
  return {prefix: np.asarray(tree)}


def _hrnet_name(path):
  """Our HRNet sub-path -> official name (leaf renames; ConvBN conv/bn -> Sequential .0/.1)."""
  *mods, leaf = [str(p) for p in path]
  if mods[0] == "head":
    mods = ["head", {"conv1": "0", "bn": "1", "conv2": "3"}[mods[1]]]
  mods = [{"conv": "0", "bn": "1"}.get(m, m) for m in mods]
  leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean",
          "var": "running_var"}.get(leaf, leaf)
  return ".".join(mods + [leaf])


def _torch_value(leaf, value):
  if leaf == "kernel":
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
  return value


def _decoder_to_torch(tree, prefix, cross_modal, out):
  norms = ({"modal_norm": "norm1", "self_norm": "norm2", "cross_norm": "norm3", "ffn_norm": "norm4"}
           if cross_modal else {"self_norm": "norm1", "cross_norm": "norm2", "ffn_norm": "norm3"})
  attns = {"self_attn": "self_attn", "cross_attn": "multihead_attn", "modal_attn": "modal_attn"}
  out[prefix + "landmark_query"] = tree["landmark_query"][None]
  out[prefix + "Transformer_block.norm.weight"] = tree["norm"]["scale"]
  out[prefix + "Transformer_block.norm.bias"] = tree["norm"]["bias"]
  layers = tree["layers"]
  for l in range(layers["linear1"]["kernel"].shape[0]):
    q = f"{prefix}Transformer_block.layers.{l}."
    for ours, theirs in norms.items():
      out[q + theirs + ".weight"] = layers[ours]["scale"][l]
      out[q + theirs + ".bias"] = layers[ours]["bias"][l]
    for ours, theirs in attns.items():
      if ours not in layers:
        continue
      a = layers[ours]
      qkv = ("query", "key", "value")
      out[q + theirs + ".in_proj_weight"] = np.concatenate([a[p]["kernel"][l].T for p in qkv])
      out[q + theirs + ".in_proj_bias"] = np.concatenate([a[p]["bias"][l] for p in qkv])
      out[q + theirs + ".out_proj.weight"] = a["out"]["kernel"][l].T
      out[q + theirs + ".out_proj.bias"] = a["out"]["bias"][l]
    for lin in ("linear1", "linear2"):
      out[q + lin + ".weight"] = layers[lin]["kernel"][l].T
      out[q + lin + ".bias"] = layers[lin]["bias"][l]


def _to_torch(kind, tree):
  """Our pure state dict -> a fake official state dict (written independently of import_torch)."""
  out = {}

  def hrnet(sub, prefix, head_prefix=None):
    for path, v in _flat(sub).items():
      name = _hrnet_name(path)
      if head_prefix and name.startswith("head."):
        name = head_prefix + name[len("head."):]
      else:
        name = prefix + name
      out[name] = _torch_value(path[-1], v)
      if path[-1] == "mean":
        out[name[:-len("running_mean")] + "num_batches_tracked"] = np.array(7)

  def linear(sub, name):
    out[name + ".weight"] = sub["kernel"].T
    if "bias" in sub:
      out[name + ".bias"] = sub["bias"]

  def bn1d(sub, name):
    out[name + ".running_mean"], out[name + ".running_var"] = sub["mean"], sub["var"]
    if "scale" in sub:
      out[name + ".weight"], out[name + ".bias"] = sub["scale"], sub["bias"]

  patch = lambda k: k.transpose(3, 2, 0, 1)
  if kind == "slpt":
    hrnet(tree["backbone"], "backbone.")
    out["feature_extractor.weight"] = patch(tree["patch_embed"]["kernel"])
    out["Transformer.structure_encoding"] = tree["structure_encoding"][None]
    _decoder_to_torch(tree["decoder"], "Transformer.", False, out)
    linear(tree["out_layer"], "out_layer")
    out["feature_norm.weight"], out["feature_norm.bias"] = np.ones(256), np.zeros(256)  # unused
  elif kind == "cmfa":
    hrnet(tree["rgb"]["backbone"], "backbone.")
    hrnet(tree["event"]["backbone"], "backbone_event.")
    out["feature_extractor.weight"] = patch(tree["rgb"]["patch_embed"]["kernel"])
    out["feature_extractor_event.weight"] = patch(tree["event"]["patch_embed"]["kernel"])
    out["Transformer.structure_encoding"] = tree["rgb"]["structure_encoding"][None]
    out["Transformer_event.structure_encoding"] = tree["event"]["structure_encoding"][None]
    _decoder_to_torch(tree["event"]["decoder"], "Transformer_event.", True, out)
    linear(tree["event"]["out_layer"], "out_layer_event")
  else:
    hrnet(tree["encoder"], "encoder.", head_prefix="encoder.head.0.")  # head.{0,1,3} nested at 0
    pr = tree["projector"]
    bn1d(pr["bn0"], "encoder.head.1")
    linear(pr["fc1"], "encoder.head.3")
    bn1d(pr["bn1"], "encoder.head.4")
    linear(pr["fc2"], "encoder.head.6")
    bn1d(pr["bn2"], "encoder.head.7")
    pd = tree["predictor"]
    linear(pd["fc1"], "predictor.0")
    bn1d(pd["bn1"], "predictor.1")
    linear(pd["fc2"], "predictor.3")
  return out


@pytest.mark.parametrize("kind", ["slpt", "cmfa", "ssmer"])
def test_import_torch_round_trip(full_models, kind):
  model = full_models[kind]
  ours = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, checkpoint_io.MODEL_STATE)))
  # Distinct BN statistics, so a mean/var or scale/bias swap would show.
  noise = lambda a: np.random.default_rng(a.size).normal(size=a.shape).astype(a.dtype)
  ours = jax.tree.map(lambda a: a + noise(a), ours)
  fake = _to_torch(kind, ours)
  tensors = {k: v for k, v in fake.items() if not k.endswith("num_batches_tracked")}
  assert len(tensors) == OFFICIAL_SIZES[kind][0]
  assert sum(v.size for v in tensors.values()) == OFFICIAL_SIZES[kind][1]
  wrapped = {"state_dict": {"module." + k: v for k, v in fake.items()}}  # DataParallel .pth.tar
  mean = ours.get("mean_shape")
  converted = import_torch.convert_state_dict(kind, wrapped, mean)
  got, want = _flat(converted), _flat(ours)
  assert got.keys() == want.keys()
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=str(path))
  checkpoint_io.update_from_pure_dict(model, converted)   # raises if the layout does not fit


@pytest.mark.slow
def test_import_torch_command_writes_an_export(full_models, tmp_path):
  torch = pytest.importorskip("torch")
  from evalign_jax import export   # pylint: disable=g-import-not-at-top
  model = full_models["slpt"]
  ours = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, checkpoint_io.MODEL_STATE)))
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in
              _to_torch("slpt", ours).items()}, tmp_path / "slpt.pth")
  np.savez(tmp_path / "init.npz", init_face=ours["mean_shape"] * 256.0)
  cmd = [sys.executable, "-m", "evalign_jax.tools.import_torch", "--kind=slpt",
         f"--checkpoint={tmp_path / 'slpt.pth'}", f"--mean_shape={tmp_path / 'init.npz'}",
         f"--out={tmp_path / 'out'}"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  # An export like a stage's: the rgb_slpt model of the official size, every array as given.
  loaded, config = export.load(str(tmp_path / "out"))
  assert config["model"] == "rgb_slpt" and config["image_size"] == 256
  assert config["model_size"] == dict(d_model=256, num_layers=6, ffn_dim=1024)
  got = _flat(jax.tree.map(np.asarray, nnx.to_pure_dict(
      nnx.state(loaded, checkpoint_io.MODEL_STATE))))
  want = _flat(ours)
  assert got.keys() == want.keys()
  for path in want:
    np.testing.assert_allclose(got[path], want[path], rtol=1e-6, atol=1e-7, err_msg=str(path))
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "exists" in again.stderr   # never overwrites


def test_import_torch_errors():
  with pytest.raises(ValueError, match="mean shape"):
    import_torch.convert_state_dict("slpt", {})
  with pytest.raises(KeyError, match="lacks"):
    import_torch.convert_state_dict("ssmer", {"encoder.conv1.weight": np.zeros((64, 3, 3, 3))})


# --------------------------------------------------------------------------------------------------
# Orbax model-state checkpoints.
# --------------------------------------------------------------------------------------------------


def test_model_state_checkpoint_round_trip(tmp_path):
  a = models.SLPT(_mean_shape(5, seed=1), rngs=nnx.Rngs(0), **TINY)
  b = models.SLPT(_mean_shape(5, seed=2), rngs=nnx.Rngs(1), **TINY)
  path = str(tmp_path / "slpt")
  checkpoint_io.save_model_state(path, a)
  saved = checkpoint_io.read_model_state(path)
  assert set(saved) == {"backbone", "patch_embed", "structure_encoding", "decoder", "out_layer",
                        "mean_shape"}
  assert checkpoint_io.load_model_state(path, b) == []
  for x, y in zip(jax.tree.leaves(nnx.state(a, checkpoint_io.MODEL_STATE)),
                  jax.tree.leaves(nnx.state(b, checkpoint_io.MODEL_STATE))):
    np.testing.assert_array_equal(x, y)
  wider = models.SLPT(_mean_shape(6), rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(ValueError, match="does not match"):
    checkpoint_io.load_model_state(path, wider)
  left = checkpoint_io.load_model_state(path, wider, strict=False)
  assert "mean_shape" in left and "backbone/conv1/kernel" not in left


# --------------------------------------------------------------------------------------------------
# Parity with the official PyTorch code (only where torch and the official checkout exist).
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_parity_with_official_pytorch():
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (pip install .[torch])")
  if not os.path.isdir(os.path.join(OFFICIAL_DIR, "CMFA")):
    pytest.skip(f"no official CMFA-SSMER checkout at {OFFICIAL_DIR}")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "parity_torch.py"),
       f"--official_dir={OFFICIAL_DIR}", "--size=64", "--ssmer_size=64"],
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "max_abs_diff cmfa=" in result.stdout
