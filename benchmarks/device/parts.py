"""The measurements of the device benchmark, one job per process (`bench.py` runs them).

  python benchmarks/device/parts.py JOB ARGS_JSON ROWS_PATH

Each job writes its results as rows (one JSON object per line, appended and flushed as soon as
each is measured), so a job killed at its time budget keeps everything it measured. Jobs check
their own deadline (`deadline` in ARGS, seconds since the epoch) before each measurement and
skip what no longer fits; `bench.py` kills a job that is still running past its deadline.

  events       chip, a bf16 matrix product (the chip's reachable rate), event representations
  train        our CMFA or SSMER train steps (float32 and bfloat16), and the CMFA step's profile
  official     the official PyTorch steps (float32, bf16 autocast, torch.compile)
  predict      windows/s of `evalign_jax.predict` on a simulated recording, and of the model
  input        samples/s of the grain input pipeline per worker count
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))   # benchmarks/: train_step, parity_torch, ...

# Dense (no sparsity) peak rates in TFLOP/s: (pattern in the device name, chip, bf16, tf32).
# From NVIDIA's datasheets, whose tensor-core figures are "with sparsity", i.e. twice these:
# H100 (2023): SXM BF16 1,979 / TF32 989, PCIe 1,513 / 756, NVL 1,671 / 835; H200 (2024): SXM
# 1,979 / 989, NVL 1,671 / 835; GH200 (2024): 1,979 / 989; A100 (2021): BF16 312 / TF32 156
# dense; L40S (2023): 362.05 / 183 dense; L4 (2023): 242 / 120. First match wins (GH200
# before H200, NVL and PCIe before the SXM parts, which the driver names plainly).
CHIP_PEAKS = (
    ("gh200", "GH200", 989.5, 494.5),
    ("h200 nvl", "H200 NVL", 835.5, 417.5),
    ("h200", "H200 SXM", 989.5, 494.5),
    ("h100 nvl", "H100 NVL", 835.5, 417.5),
    ("h100 pcie", "H100 PCIe", 756.5, 378.0),
    ("h100", "H100 SXM", 989.5, 494.5),
    ("a100", "A100", 312.0, 156.0),
    ("l40s", "L40S", 362.05, 183.0),
    ("l4", "L4", 121.0, 60.0),
)


def chip_peak(device_name: str) -> dict:
  """{"chip", "bf16_tflops", "tf32_tflops"} of a device name; None values for unknown ones."""
  name = device_name.lower()
  for pattern, chip, bf16, tf32 in CHIP_PEAKS:
    if pattern in name:
      return {"chip": chip, "bf16_tflops": bf16, "tf32_tflops": tf32}
  return {"chip": device_name, "bf16_tflops": None, "tf32_tflops": None}


# ---------------------------------------------------------------------------------------------
# Rows, deadlines, timing


class Rows:
  """Appends one JSON object per line to `path`, flushed and synced at once."""

  def __init__(self, path: str, job: str):
    self.path, self.job = path, job

  def add(self, part: str, **fields) -> dict:
    row = {"part": part, "job": self.job, **fields}
    with open(self.path, "a") as f:
      f.write(json.dumps(row, default=_jsonable) + "\n")
      f.flush()
      os.fsync(f.fileno())
    print(f"[{self.job}] {part}: " + ", ".join(f"{k}={_short(v)}" for k, v in fields.items()),
          flush=True)
    return row


def _jsonable(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  return str(x)


def _short(v):
  if isinstance(v, float):
    return f"{v:.4g}"
  text = str(v)
  return text if len(text) < 80 else text[:77] + "..."


class Deadline:
  """Seconds left before the job's deadline; `fits(s)`: whether s more seconds fit."""

  def __init__(self, deadline: float):
    self.deadline = deadline

  def left(self) -> float:
    return self.deadline - time.time()

  def fits(self, seconds: float) -> bool:
    return self.left() > seconds


def timed_runs(fn, steps: int, repeats: int, sync) -> float:
  """Median over `repeats` of the mean seconds per call over `steps` back-to-back calls (the
  device queue stays full, as in training), synchronising once per repeat."""
  means = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      fn()
    sync()
    means.append((time.perf_counter() - start) / steps)
  return statistics.median(means)


def error_text(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}".replace("\n", " ")
  return text[:300]


def is_out_of_memory(e: BaseException) -> bool:
  text = f"{type(e).__name__} {e}"
  return "RESOURCE_EXHAUSTED" in text or "OutOfMemory" in text or "out of memory" in text


# ---------------------------------------------------------------------------------------------
# JAX helpers


def jax_device_info() -> dict:
  import jax   # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  stats = d.memory_stats() or {}
  return {"platform": d.platform, "device": d.device_kind, "jax": jax.__version__,
          "memory_bytes": stats.get("bytes_limit"), **chip_peak(d.device_kind)}


def peak_bytes():
  """The process's peak device memory so far (None where the backend keeps no statistics)."""
  import jax   # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats()
  return stats.get("peak_bytes_in_use") if stats else None


def planned_bytes(compiled) -> int | None:
  """What XLA allocates for one call of `compiled`: arguments + outputs + temporaries - the
  donated arguments the outputs reuse."""
  try:
    m = compiled.memory_analysis()
  except Exception:   # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def flops_of(compiled) -> float | None:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get("flops")
  return float(flops) if flops else None


def compile_all(lowered: dict, threads: int) -> dict:
  """name -> (compiled or exception, seconds), compiling `threads` programs at once (XLA
  releases the GIL while it compiles; the jitted functions then reuse these executables)."""

  def one(item):
    name, low = item
    start = time.perf_counter()
    try:
      out = low.compile()
    except Exception as e:   # pylint: disable=broad-except
      out = e
    return name, (out, time.perf_counter() - start)

  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    return dict(pool.map(one, lowered.items()))


def mfu_fields(flops: float | None, step_s: float, dtype: str, info: dict) -> dict:
  """Achieved TFLOP/s and MFU against the chip's dense bf16 (or, for float32, TF32) peak."""
  out = {"tflops": flops / step_s / 1e12 if flops else None, "mfu": None, "peak_tflops": None}
  peak = info.get("bf16_tflops" if dtype == "bfloat16" else "tf32_tflops")
  if flops and peak:
    out.update(mfu=flops / step_s / (peak * 1e12), peak_tflops=peak)
  return out


# ---------------------------------------------------------------------------------------------
# events: chip, matrix product, representations


def job_events(a: dict, rows: Rows) -> None:
  import functools   # pylint: disable=g-import-not-at-top
  import jax   # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  from evalign_jax.events import representations_jax as rj   # pylint: disable=g-import-not-at-top
  from evalign_jax.events.events import Events   # pylint: disable=g-import-not-at-top

  budget = Deadline(a["deadline"])
  info = jax_device_info()
  rows.add("chip", **info)
  n = a["matmul"]
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (n, n), jnp.bfloat16)
  y = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda p, q: p @ q)
  matmul(x, y).block_until_ready()
  last = {}
  s = timed_runs(lambda: last.update(out=matmul(x, y)), 10, 3,
                 lambda: jax.block_until_ready(last["out"]))
  rows.add("chip_matmul", size=n, dtype="bfloat16", tflops=2 * n ** 3 / s / 1e12,
           peak_tflops=info["bf16_tflops"],
           fraction_of_peak=(2 * n ** 3 / s / 1e12 / info["bf16_tflops"]
                             if info["bf16_tflops"] else None))

  renderers = {
      "voxel": functools.partial(rj.voxel_grid, num_bins=5, convention="e2vid"),
      "frame": rj.event_frame,
      "time_surface": functools.partial(rj.time_surface, tau_us=30_000.0),
  }
  rng = np.random.default_rng(0)
  for sensor in map(tuple, a["sensors"]):
    h, w = sensor
    for count in a["counts"]:
      for batch in a["batches"]:
        per = count // batch
        windows = []
        for _ in range(batch):
          t = np.sort(rng.integers(0, 50_000, per))
          ev = Events(t, rng.integers(0, w, per), rng.integers(0, h, per),
                      rng.integers(0, 2, per), sensor)
          windows.append(ev.pad(per))
        padded = jax.device_put(jax.tree.map(lambda *z: np.stack(z), *windows))
        for kind, fn in renderers.items():
          if not budget.fits(a.get("reserve_s", 2.0)):
            rows.add("events", sensor=f"{h}x{w}", events=count, batch=batch, kind=kind,
                     skipped="time budget")
            continue
          render = jax.jit(jax.vmap(functools.partial(fn, sensor_size=sensor)))
          start = time.perf_counter()
          render(padded).block_until_ready()
          compile_s = time.perf_counter() - start
          last = {}
          s = timed_runs(lambda: last.update(out=render(padded)), 1, a["repeats"],
                         lambda: jax.block_until_ready(last["out"]))
          rows.add("events", sensor=f"{h}x{w}", events=count, batch=batch, kind=kind,
                   platform=info["platform"], mevents_per_s=count / s / 1e6,
                   ms_per_call=s * 1e3, compile_s=compile_s)
        del padded


# ---------------------------------------------------------------------------------------------
# train: our steps, the profile


def job_train(a: dict, rows: Rows) -> None:
  """Our train step of `a["task"]` for every dtype and batch; CMFA also gets the profile.

  All programs are lowered, then compiled `compile_threads` at a time, then timed one after
  another. SSMER's batch is the largest of `batches` (descending) whose compiled step fits in
  the device's memory (XLA's own memory plan, checked before running) and then runs.
  """
  import jax   # pylint: disable=g-import-not-at-top
  import train_step as ts   # pylint: disable=g-import-not-at-top

  budget = Deadline(a["deadline"])
  info = jax_device_info()
  task = a["task"]
  setup = ts.cmfa_train_setup if task == "cmfa" else ts.ssmer_train_setup
  limit = info["memory_bytes"] or (a.get("memory_limit_mb") or 0) * 2 ** 20 or None
  fit = a.get("fit_fraction", 0.9)
  batches = list(a["batches"])
  search = task == "ssmer"
  # name -> dict(dtype, batch, step, state holder, batch data)
  configs = {}
  start = time.perf_counter()
  for dtype in a["dtypes"]:
    for batch in (batches[:1] if search else batches):
      step, state, data, _ = setup(batch, a["image_size"], dtype, a["capacity"], a["events"],
                                   a.get("model_size"))
      configs[f"{dtype}/{batch}"] = dict(dtype=dtype, batch=batch, step=step,
                                        holder={"state": state}, data=data)
  build_s = time.perf_counter() - start
  start = time.perf_counter()
  lowered = {k: c["step"].lower(c["holder"]["state"], c["data"]) for k, c in configs.items()}
  lower_s = time.perf_counter() - start
  compiled = compile_all(lowered, a.get("compile_threads", 1))
  rows.add("train_setup", impl="ours", step=task, build_s=build_s, lower_s=lower_s,
           programs=len(lowered), compile_threads=a.get("compile_threads", 1),
           compile_wall_s=time.perf_counter() - start, **info)

  order = sorted(configs, key=lambda k: (configs[k]["batch"], k))
  if task == "cmfa":   # the profiled config (the MFU target) first, should time run out
    key = f"{a['profile']['dtype']}/{a['profile']['batch']}"
    order = [key] + [k for k in order if k != key] if key in configs else order
  profile_target = None
  for key in order:
    c = configs[key]
    dtype, batch = c["dtype"], c["batch"]
    exe, compile_s = compiled[key]
    tried = []
    while True:
      if isinstance(exe, Exception):
        rows.add("train", impl="ours", step=task, dtype=dtype, batch=batch,
                 error=error_text(exe), compile_s=compile_s)
        break
      plan = planned_bytes(exe)
      if search and limit and plan and plan > fit * limit and batch != batches[-1]:
        tried.append(f"{batch}: planned {plan / 2**20:.0f} MiB > {fit:.0%} of "
                     f"{limit / 2**20:.0f} MiB")
        batch = next_batch(batches, batch, plan, fit * limit)
      elif not budget.fits(a.get("reserve_s", 5.0)):
        rows.add("train", impl="ours", step=task, dtype=dtype, batch=batch,
                 skipped="time budget")
        break
      else:
        try:
          row = time_our_step(c, exe, a, info, plan, compile_s, batch)
        except Exception as e:   # pylint: disable=broad-except
          if not (search and is_out_of_memory(e) and batch != batches[-1]):
            rows.add("train", impl="ours", step=task, dtype=dtype, batch=batch,
                     error=error_text(e), compile_s=compile_s)
            break
          tried.append(f"{batch}: {error_text(e)[:120]}")
          batch = batches[batches.index(batch) + 1]
        else:
          rows.add("train", impl="ours", step=task, dtype=dtype, batch=batch,
                   search=tried or None, **row)
          if task == "cmfa" and key == order[0]:
            profile_target = (c, exe)
          break
      # Build and compile the step at the smaller batch (SSMER's search only).
      if not budget.fits(a.get("reserve_s", 5.0)):
        rows.add("train", impl="ours", step=task, dtype=dtype, batch=batch,
                 skipped="time budget", search=tried)
        break
      c["data"] = None
      step, state, data, _ = setup(batch, a["image_size"], dtype, a["capacity"], a["events"],
                                   a.get("model_size"))
      c.update(step=step, holder={"state": state}, data=data, batch=batch)
      start = time.perf_counter()
      exe = step.lower(state, data).compile()
      compile_s = time.perf_counter() - start
  if profile_target is not None:
    profile_step(*profile_target, a, rows, budget)


def next_batch(batches: list, batch: int, plan: int, limit: float) -> int:
  """The largest candidate below `batch` that the plan of `batch`, scaled linearly, fits in."""
  smaller = [b for b in batches if b < batch]
  fitting = [b for b in smaller if plan * b / batch <= limit]
  return fitting[0] if fitting else smaller[-1]


def time_our_step(c: dict, exe, a: dict, info: dict, plan, compile_s: float,
                  batch: int) -> dict:
  """Runs the compiled step (it donates the state): warm-up, then timed runs."""
  import jax   # pylint: disable=g-import-not-at-top
  holder, data = c["holder"], c["data"]
  last = {}

  def run():
    holder["state"], last["metrics"] = exe(holder["state"], data)

  start = time.perf_counter()
  for _ in range(a["warmup"]):
    run()
  jax.block_until_ready(last["metrics"])
  estimate = (time.perf_counter() - start) / max(1, a["warmup"])
  loss = float(last["metrics"]["loss"])
  # At most `timed_s` of timed steps.
  steps = max(1, min(a["steps"], int(a.get("timed_s", 1e9) / (a["repeats"] * estimate))))
  step_s = timed_runs(run, steps, a["repeats"],
                      lambda: jax.block_until_ready(last["metrics"]))
  flops = flops_of(exe)
  return {"step_s": step_s, "images_per_s": batch / step_s, "compile_s": compile_s,
          "timed_steps": steps * a["repeats"],
          "gflop_per_step": flops / 1e9 if flops else None, "planned_mib": _mib(plan),
          "peak_mib": _mib(peak_bytes()), "loss": loss, "device": info["device"],
          "platform": info["platform"], **mfu_fields(flops, step_s, c["dtype"], info)}


def _mib(n):
  return n / 2 ** 20 if n is not None else None


def profile_step(c: dict, exe, a: dict, rows: Rows, budget: Deadline) -> None:
  """A jax.profiler trace of a few steps: the 10 most expensive ops, the GPU kernels, and the
  convolutions' layout and dtype as XLA compiled them."""
  import jax   # pylint: disable=g-import-not-at-top
  p = a["profile"]
  hlo = exe.as_text()
  rows.add("profile_convs", step="cmfa", dtype=c["dtype"], batch=c["batch"],
           **conv_summary(hlo))
  out_dir = a.get("out_dir")
  if out_dir:
    with gzip.open(os.path.join(out_dir, "cmfa_step.hlo.txt.gz"), "wt") as f:
      f.write(hlo)
  if not budget.fits(a.get("profile_s", 10.0)):
    rows.add("profile", skipped="time budget")
    return
  holder, data = c["holder"], c["data"]
  tmp = tempfile.mkdtemp(prefix="evalign_profile_")
  try:
    last = {}
    with jax.profiler.trace(tmp):
      for _ in range(p["steps"]):
        holder["state"], last["m"] = exe(holder["state"], data)
      jax.block_until_ready(last["m"])
    traces = [os.path.join(d, f) for d, _, fs in os.walk(tmp) for f in fs
              if f.endswith(".trace.json.gz")]
    if not traces:
      rows.add("profile", error="the profiler wrote no trace")
      return
    summary = summarize_trace(traces[0], p["steps"])
    for i, op in enumerate(summary.pop("top_ops")):
      rows.add("profile", rank=i + 1, dtype=c["dtype"], batch=c["batch"], **op)
    rows.add("profile_summary", dtype=c["dtype"], batch=c["batch"], **summary)
    if out_dir and os.path.getsize(traces[0]) < 15 * 2 ** 20:
      shutil.copy(traces[0], os.path.join(out_dir, "cmfa_step.trace.json.gz"))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


DEF_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[[\d,]*\]\{([\d,]*)")
CONV_OPERAND_RE = re.compile(
    r"(?:custom-call|convolution)\((?:(\w+)\[[\d,]*\]\{([\d,]*)\}\s*)?%?([\w.\-]+)")
CONV_TARGET_RE = re.compile(r'custom_call_target="(__cudnn\$conv[^"]*)"')
DIM_LABELS_RE = re.compile(r"dim_labels=([0-9bf]+)_[0-9io]+->([0-9bf]+)")


def conv_summary(hlo: str) -> dict:
  """Counts the compiled program's convolutions by input dtype and physical layout.

  A convolution is an HLO `convolution` (CPU, or inside a fusion) or a cuDNN custom call
  (`__cudnn$conv...`). Its data operand's dtype and minor-to-major layout are printed beside it
  by older XLAs and otherwise read off the operand's own definition; its logical dimensions
  come from `dim_labels` (b = batch, f = feature, digits = spatial; a cuDNN backward-input
  convolution's data operand is the output gradient, labelled by the part after "->"), so
  e.g. b01f with {3,2,1,0} is NHWC.
  """
  defs = {}
  lines = hlo.splitlines()
  for line in lines:
    m = DEF_RE.match(line)
    if m:
      defs[m.group(1)] = (m.group(2), m.group(3))
  counts = {}
  for line in lines:
    if "convolution(" not in line and "__cudnn$conv" not in line:
      continue
    operand, labels = CONV_OPERAND_RE.search(line), DIM_LABELS_RE.search(line)
    if not operand or not labels:
      continue
    dtype, layout = operand.group(1), operand.group(2)
    if dtype is None:
      dtype, layout = defs.get(operand.group(3), ("?", ""))
    target = CONV_TARGET_RE.search(line)
    kind = target.group(1) if target else "convolution"
    dims = labels.group(2) if "BackwardInput" in kind else labels.group(1)
    key = f"{dtype} {physical_layout(dims, layout)} {kind}"
    counts[key] = counts.get(key, 0) + 1
  total = sum(counts.values())
  nhwc = sum(n for k, n in counts.items() if k.split()[1] == "NHWC")
  bf16 = sum(n for k, n in counts.items() if k.startswith("bf16"))
  return {"convs": total, "nhwc": nhwc, "bf16": bf16, "by_kind": counts}


def physical_layout(labels: str, minor_to_major: str) -> str:
  """'b01f' + '3,2,1,0' -> 'NHWC' (major to minor); '?' where they do not fit together."""
  names = {"b": "N", "f": "C", "0": "H", "1": "W", "2": "D"}
  order = [int(i) for i in minor_to_major.split(",") if i != ""]
  if len(order) != len(labels):
    return "?"
  return "".join(names.get(labels[i], "?") for i in reversed(order))


TENSOR_CORE_MARKS = ("gmma", "xmma", "hmma", "mma_", "16816", "1688", "tensorop", "cutlass")


def summarize_trace(path: str, steps: int) -> dict:
  """The 10 most expensive ops of a jax.profiler trace (time per step, share), and on a GPU
  its 10 most expensive kernels with whether they use tensor cores and NHWC.

  On a GPU the ops are the device's "XLA Ops" line (else kernels grouped by their HLO op); on
  the CPU, the XLA op events of the host's compute threads.
  """
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  events = trace.get("traceEvents", [])
  pids, tids = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      pids[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      tids[e["pid"], e["tid"]] = e["args"]["name"]
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  device = {p for p, name in pids.items() if name.startswith("/device:")}
  kernels = [e for e in complete if e["pid"] in device
             and "stream" in tids.get((e["pid"], e["tid"]), "").lower()]
  ops = [e for e in complete if e["pid"] in device
         and tids.get((e["pid"], e["tid"]), "") == "XLA Ops"]
  if device and not ops:
    ops = [dict(e, name=e.get("args", {}).get("hlo_op", e["name"])) for e in kernels]
  source = "device XLA ops"
  if not device:
    source = "host XLA ops (CPU)"
    ops = [e for e in complete if tids.get((e["pid"], e["tid"]), "").startswith("tf_XLA")
           and "::" not in e["name"] and not e["name"].startswith("end:")]
  by_op = {}
  for e in ops:
    t, n = by_op.get(e["name"], (0.0, 0))
    by_op[e["name"]] = (t + e["dur"], n + 1)
  total = sum(t for t, _ in by_op.values()) or 1.0
  top = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:10]
  out = {"source": source, "ops_ms_per_step": total / 1e3 / steps, "distinct_ops": len(by_op),
         "top_ops": [{"op": name, "ms_per_step": t / 1e3 / steps, "share": t / total,
                      "calls_per_step": n / steps} for name, (t, n) in top]}
  if kernels:
    by_kernel = {}
    for e in kernels:
      t, n, op = by_kernel.get(e["name"], (0.0, 0, e.get("args", {}).get("hlo_op", "")))
      by_kernel[e["name"]] = (t + e["dur"], n + 1, op)
    ktotal = sum(t for t, _, _ in by_kernel.values()) or 1.0
    conv = {k: v for k, v in by_kernel.items() if "conv" in v[2] or "conv" in k.lower()}
    ctotal = sum(t for t, _, _ in conv.values())
    out.update(
        kernels_ms_per_step=ktotal / 1e3 / steps,
        conv_kernel_share=ctotal / ktotal,
        conv_tensor_core_share=(sum(t for k, (t, _, _) in conv.items()
                                    if any(m in k.lower() for m in TENSOR_CORE_MARKS))
                                / ctotal if ctotal else None),
        conv_nhwc_share=(sum(t for k, (t, _, _) in conv.items() if "nhwc" in k.lower())
                         / ctotal if ctotal else None),
        top_kernels=[{"kernel": k[:160], "hlo_op": op, "ms_per_step": t / 1e3 / steps,
                      "share": t / ktotal}
                     for k, (t, _, op) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:10]])
  return out


# ---------------------------------------------------------------------------------------------
# official: the PyTorch code on the same device


def job_official(a: dict, rows: Rows) -> None:
  """The official steps at our batches: float32 (cuDNN's default TF32 convolutions), bf16
  autocast, then torch.compile of each, as far as the time budget goes."""
  import torch   # pylint: disable=g-import-not-at-top
  import parity_torch   # pylint: disable=g-import-not-at-top
  import train_step as ts   # pylint: disable=g-import-not-at-top

  budget = Deadline(a["deadline"])
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if a.get("torch_threads"):
    torch.set_num_threads(a["torch_threads"])
  name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  # As the official training scripts set it: cuDNN picks the fastest algorithm per shape.
  torch.backends.cudnn.benchmark = True
  start = time.perf_counter()
  cmfa, simsiam, criterion = parity_torch.official_models(a["official_dir"], device)
  rows.add("official_setup", torch=torch.__version__, device=name, build_s=time.perf_counter()
           - start, cudnn_tf32=torch.backends.cudnn.allow_tf32,
           matmul_tf32=torch.backends.cuda.matmul.allow_tf32, **chip_peak(name))
  amp = {"float32": None, "bfloat16": torch.bfloat16}
  plan = []
  for compiled in (False, True):
    # torch.compile at the largest batch only: a second shape would recompile (dynamic).
    cmfa_batches = a["cmfa_batches"][-1:] if compiled else a["cmfa_batches"]
    for precision in (a["compile"] if compiled else a["precisions"]):
      for b in cmfa_batches:
        plan.append(("cmfa", b, precision, compiled))
      plan.append(("ssmer", a["ssmer_batch"], precision, compiled))
  models = {}
  for step, batch, precision, compiled in plan:
    label = dict(impl="official", step=step, dtype=precision, batch=batch,
                 mode=("torch.compile" if compiled else "eager")
                 + (" autocast" if precision == "bfloat16" else ""))
    # torch.compile's first call compiles (tens of seconds with inductor): not started late.
    if not budget.fits(a.get("compile_reserve_s" if compiled else "reserve_s", 5.0)):
      rows.add("train", **label, skipped="time budget")
      continue
    try:
      if compiled and step not in models:
        # Dynamo imports the traced code's modules by name, which official_models dropped
        # from sys.modules (CMFA's top-level `backbone`, ...): let it find them again.
        root = os.path.join(a["official_dir"], "CMFA")
        if step == "cmfa" and root not in sys.path:
          sys.path.append(root)
        module = cmfa if step == "cmfa" else simsiam
        models[step] = torch.compile(module, backend=a.get("compile_backend", "inductor"))
      net = models.get(step) if compiled else None
      while True:
        try:
          row = time_official(torch, ts, cmfa, simsiam, criterion, net, step, batch,
                              amp[precision], device, a)
          break
        except torch.cuda.OutOfMemoryError as e:
          _free(torch, device)
          if batch <= 8:
            raise
          rows.add("train", **label, error=f"out of memory at batch {batch}: "
                   + error_text(e)[:100])
          batch //= 2
          label["batch"] = batch
      rows.add("train", **label, **row)
    except Exception as e:   # pylint: disable=broad-except
      rows.add("train", **label, error=error_text(e))
    _free(torch, device)


def _free(torch, device: str) -> None:
  if device == "cuda":
    torch.cuda.empty_cache()


def time_official(torch, ts, cmfa, simsiam, criterion, net, step: str, batch: int, amp_dtype,
                  device: str, a: dict) -> dict:
  """Images/s of one official step (net: its torch.compile'd module, else None)."""
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  if step == "cmfa":
    fn = ts.official_cmfa_steps(
        cmfa if net is None else net, batch=batch, image_size=a["image_size"], device=device,
        amp_dtype=amp_dtype,
        optimizer=torch.optim.Adam([p for p in cmfa.parameters() if p.requires_grad],
                                   lr=1e-4))["cmfa train"]
  else:
    fn = ts.official_ssmer_step(simsiam if net is None else net, criterion, batch=batch,
                                image_size=a["ssmer_size"], device=device, amp_dtype=amp_dtype,
                                optimizer=torch.optim.SGD(simsiam.parameters(), 0.05,
                                                          momentum=0.9, weight_decay=1e-4))
  start = time.perf_counter()
  fn()   # the first call: cuDNN's algorithm search, torch.compile's compilation
  first_s = time.perf_counter() - start
  estimate = first_s
  if a["warmup"] > 1:
    start = time.perf_counter()
    for _ in range(a["warmup"] - 1):
      fn()
    estimate = (time.perf_counter() - start) / (a["warmup"] - 1)
  # At most `timed_s` of timed calls (large SSMER batches take a second a step).
  steps = max(1, min(a["steps"], int(a.get("timed_s", 1e9) / (a["repeats"] * estimate))))
  step_s = timed_runs(fn, steps, a["repeats"], lambda: None)   # each call synchronises
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  return {"step_s": step_s, "images_per_s": batch / step_s, "first_call_s": first_s,
          "timed_calls": steps * a["repeats"],
          "peak_mib": _mib(peak), "device": device}


# ---------------------------------------------------------------------------------------------
# predict: windows/s end to end and in the model


def job_predict(a: dict, rows: Rows) -> None:
  """`evalign_jax.predict` on a simulated recording (HDF5 events + the RGB frames the
  simulator saw) for each (model, dtype, batch), and its model alone on a batch of crops."""
  import jax   # pylint: disable=g-import-not-at-top
  import cv2   # pylint: disable=g-import-not-at-top
  from evalign_jax import config_utils   # pylint: disable=g-import-not-at-top
  from evalign_jax import export   # pylint: disable=g-import-not-at-top
  from evalign_jax import models   # pylint: disable=g-import-not-at-top
  from evalign_jax import predict   # pylint: disable=g-import-not-at-top
  from evalign_jax.events import scenes, simulate_events, write_events   # pylint: disable=g-import-not-at-top
  from evalign_jax.predict import recording   # pylint: disable=g-import-not-at-top

  budget = Deadline(a["deadline"])
  info = jax_device_info()
  tmp = tempfile.mkdtemp(prefix="evalign_predict_")
  try:
    # The recording: a drifting texture seen by the simulator at 30 fps, its frames as the
    # registered RGB (named by their µs timestamps, as predict --rgb reads a folder).
    h, w = a["sensor"]
    fps = 30.0
    frames, ts_us = scenes.moving_texture_video(h, w, int(a["seconds"] * fps) + 2, fps=fps,
                                                seed=0)
    start = time.perf_counter()
    events = simulate_events(frames, ts_us, preset="v2e_default", seed=0)
    events_path = os.path.join(tmp, "recording.h5")
    write_events(events_path, events)
    rgb_dir = os.path.join(tmp, "rgb")
    os.makedirs(rgb_dir)
    for frame, t in zip(frames, ts_us):
      cv2.imwrite(os.path.join(rgb_dir, f"{int(t)}.png"), cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    rows.add("predict_recording", sensor=f"{h}x{w}", events=len(events), frames=len(frames),
             seconds=float(ts_us[-1] - ts_us[0]) / 1e6, simulate_and_write_s=time.perf_counter()
             - start)
    box = (w / 2 - 0.3 * h, 0.2 * h, w / 2 + 0.3 * h, 0.8 * h)

    # Exports and predictors; every program compiled before anything is timed.
    predictors = {}
    mean = np.random.default_rng(0).uniform(0.3, 0.7, (98, 2)).astype(np.float32)
    for kind, dtype, batch in a["configs"]:
      variant = ",".join(filter(None, [f"model={kind}", a.get("config_variant")]))
      if (kind, dtype) not in predictors:
        config = config_utils.load_config(f"configs/cmfa.py:{variant}")
        cfg = json.loads(config.to_json())
        cfg.update(dtype=dtype, num_landmarks=len(mean))
        path = os.path.join(tmp, f"{kind}_{dtype}")
        export.export(models.build_model(cfg, mean), cfg, path)
        predictors[kind, dtype] = (path, predict.load_predictor(path))
    lowered, batches = {}, {}
    for kind, dtype, batch in a["configs"]:
      _, p = predictors[kind, dtype]
      crops = random_crops(recording._batch([], batch, p, a["capacity"]),  # pylint: disable=protected-access
                           p.image_size, a["events"])
      batches[kind, dtype, batch] = crops
      lowered[kind, dtype, batch] = p.predict.lower(p.state, crops)
    start = time.perf_counter()
    compiled = compile_all(lowered, a.get("compile_threads", 1))
    rows.add("predict_setup", programs=len(lowered), compile_wall_s=time.perf_counter() - start,
             **info)

    for kind, dtype, batch in a["configs"]:
      label = dict(model=kind, dtype=dtype, batch=batch)
      exe, compile_s = compiled[kind, dtype, batch]
      if isinstance(exe, Exception):
        rows.add("predict", **label, error=error_text(exe))
        continue
      if not budget.fits(a.get("reserve_s", 5.0)):
        rows.add("predict", **label, skipped="time budget")
        continue
      try:
        path, p = predictors[kind, dtype]
        crops = batches[kind, dtype, batch]
        host = timed_runs(lambda: np.asarray(p.predict(p.state, crops)), 1, a["repeats"],
                          lambda: None)
        on_device = jax.device_put(crops)
        last = {}
        dev = timed_runs(lambda: last.update(out=p.predict(p.state, on_device)), a["steps"],
                         a["repeats"], lambda: jax.block_until_ready(last["out"]))
        # The batched path: a fixed box (tracking sends one window per call).
        options = predict.Options(window_us=a["window_us"], stride_us=a["stride_us"], box=box,
                                  track=False, batch_size=batch, capacity=a["capacity"],
                                  overlay="none", rgb=rgb_dir if p.needs_rgb else None)
        summary = predict.run(path, events_path, os.path.join(tmp, "out"), options,
                              predictor=p)
        rows.add("predict", **label, windows=summary["predicted_windows"],
                 end_to_end_windows_per_s=summary["windows_per_s"],
                 run_model_windows_per_s=summary["model_windows_per_s"],
                 model_host_batch_windows_per_s=batch / host,
                 model_device_batch_windows_per_s=batch / dev, compile_s=compile_s,
                 planned_mib=_mib(planned_bytes(exe)), platform=info["platform"],
                 device=info["device"])
      except Exception as e:   # pylint: disable=broad-except
        rows.add("predict", **label, error=error_text(e))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def random_crops(batch: dict, size: int, events: int) -> dict:
  """`batch` (predict's fixed-shape batch) with `events` random events in every crop."""
  rng = np.random.default_rng(0)
  ev = batch["events"]
  b, capacity = ev["x"].shape
  n = min(events, capacity)
  ev["x"][:, :n] = rng.integers(0, size, (b, n))
  ev["y"][:, :n] = rng.integers(0, size, (b, n))
  ev["t"][:, :n] = np.sort(rng.integers(1, 33_000, (b, n)), axis=1)
  ev["p"][:, :n] = rng.integers(0, 2, (b, n))
  ev["valid"][:, :n] = True
  batch["window_us"][:] = 33_000
  if "image" in batch:
    batch["image"][:] = rng.integers(0, 255, batch["image"].shape)
  return batch


# ---------------------------------------------------------------------------------------------
# input: the grain pipeline


def job_input(a: dict, rows: Rows) -> None:
  """Samples/s of the training input pipelines (benchmarks/input_pipeline.py) per worker count."""
  import argparse   # pylint: disable=g-import-not-at-top
  from absl import flags   # pylint: disable=g-import-not-at-top
  import input_pipeline as bench_ip   # pylint: disable=g-import-not-at-top

  flags.FLAGS(sys.argv[:1])   # grain's workers read absl flags
  budget = Deadline(a["deadline"])
  args = argparse.Namespace(dataset=a.get("dataset", "synthetic_faces"),
                            data_dir=a.get("data_dir") or None, split="train",
                            fake_examples=a["fake_examples"], batch_size=a["batch_size"],
                            warmup=a["warmup"], batches=a["batches"], threads=a["threads"])
  cores = len(os.sched_getaffinity(0))
  sources = {}
  for task in a["tasks"]:
    decode = task == "cmfa"   # SSMER never needs the RGB
    if decode not in sources:
      with contextlib.redirect_stderr(sys.stdout):
        sources[decode] = bench_ip.open_source(args, decode_image=decode)
    source, name = sources[decode]
    for workers in a["workers"]:
      label = dict(task=task, workers=workers, source=name, batch=a["batch_size"], cores=cores)
      if not budget.fits(a.get("reserve_s", 10.0)):
        rows.add("input", **label, skipped="time budget")
        continue
      try:
        wall, per_cpu = bench_ip.throughput(source, task, workers, args)
        rows.add("input", **label, samples_per_s=wall, samples_per_cpu_s=per_cpu,
                 cores_busy=wall / per_cpu)
      except Exception as e:   # pylint: disable=broad-except
        rows.add("input", **label, error=error_text(e))


JOBS = {"events": job_events, "train": job_train, "official": job_official,
        "predict": job_predict, "input": job_input}


def main() -> None:
  job, args, rows_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
  rows = Rows(rows_path, args.get("name", job))
  try:
    JOBS[job](args, rows)
  except Exception as e:   # pylint: disable=broad-except
    import traceback   # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    rows.add("job_error", error=error_text(e))
    sys.exit(1)


if __name__ == "__main__":
  main()
