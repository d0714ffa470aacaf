"""The device benchmark: the accelerator's throughput tables in one run, ours beside the official
PyTorch code on the same device (`run.sh` is the command; this is its entry point).

  bash benchmarks/device/run.sh [--out=DIR] [--official_dir=PATH] [--budget_s=400] [--jobs=...]
  bash benchmarks/device/run.sh --dry_run          # tiny sizes on the CPU, every part

Parts, each printed as a table:
  1 train    our CMFA (256 px, frozen RGB branch, batch 32 and 64) and SSMER (224 px, 3 views,
             the largest batch up to 256 that fits) train steps in float32 and bf16: step time,
             images/s, memory, compile time, MFU; the official steps at the same batches
             (float32, bf16 autocast, torch.compile) and the ratio ours / official
  2 events   voxel grid, event frame, time surface: M events/s on the device
  3 predict  windows/s of `evalign_jax.predict` (256 px CMFA and event-only SLPT, batch 64 and
             256) end to end on a simulated recording, and of the model alone
  4 profile  the CMFA train step: its 10 most expensive ops, its GPU kernels, and the layout and
             dtype of its convolutions
  5 input    samples/s of the grain input pipeline with 8 and 16 worker processes, against the
             train steps' samples/s

Each job runs in its own process under a time budget (`BUDGETS_S`; time a job leaves unused
goes to the next): a job that overruns is killed, its finished rows are kept, and the other
jobs still run. Rows go to DIR/rows.jsonl as they are measured; DIR/results.json and
DIR/tables.txt are rewritten after every job, so a run killed from outside still leaves every
finished measurement. The profiled step's trace and compiled HLO are written there too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OFFICIAL = os.path.join(REPO, ".official", "CMFA-SSMER")

# Seconds per job on an H100 / H200 (7 minutes with the wheels' install and the starts).
BUDGETS_S = {"events": 30, "train_cmfa": 125, "train_ssmer": 85, "official": 65, "predict": 55,
             "input": 40}
# The dry run on a loaded 2-core CPU (the test's limit is 10 minutes).
DRY_BUDGETS_S = {"events": 40, "train_cmfa": 150, "train_ssmer": 110, "official": 110,
                 "predict": 100, "input": 60}
GRACE_S = 10   # between a job's own deadline and its kill

TINY_MODEL_SIZE = dict(d_model=32, num_heads=2, num_layers=2, ffn_dim=32, backbone_width=4,
                       backbone_blocks=1)   # config_utils.TINY_MODEL_SIZE (no ml_collections here)
TINY_SSMER_SIZE = dict(dim=32, pred_dim=16, backbone_width=4, backbone_blocks=1)


def job_args(dry: bool) -> dict:
  """name -> (kind of parts.py job, its arguments) at the paper's sizes or the dry run's."""
  if not dry:
    return {
        "events": ("events", dict(sensors=[[260, 346], [720, 1280]],
                                  counts=[1_000_000, 10_000_000], batches=[1, 8], repeats=5,
                                  matmul=8192)),
        "train_cmfa": ("train", dict(task="cmfa", image_size=256, batches=[32, 64],
                                     dtypes=["float32", "bfloat16"], capacity=16384,
                                     events=8000, warmup=2, steps=10, repeats=3, timed_s=8,
                                     compile_threads=4,
                                     profile=dict(dtype="bfloat16", batch=64, steps=3))),
        "train_ssmer": ("train", dict(task="ssmer", image_size=224,
                                      batches=[256, 192, 128, 96, 64, 32],
                                      dtypes=["float32", "bfloat16"], capacity=16384,
                                      events=8000, warmup=2, steps=10, repeats=3,
                                      timed_s=8, compile_threads=2)),
        "official": ("official", dict(cmfa_batches=[32, 64], image_size=256, ssmer_size=224,
                                      ssmer_batch=64, precisions=["float32", "bfloat16"],
                                      compile=["float32", "bfloat16"],
                                      compile_backend="inductor", warmup=2, steps=10,
                                      repeats=3, timed_s=6, compile_reserve_s=40)),
        "predict": ("predict", dict(configs=[["cmfa", "float32", 64], ["cmfa", "float32", 256],
                                             ["slpt_event", "float32", 64],
                                             ["slpt_event", "float32", 256],
                                             ["slpt_event", "bfloat16", 256]],
                                    config_variant="", sensor=[260, 346], seconds=4.4,
                                    window_us=33_328, stride_us=4_166, capacity=16384,
                                    events=8000, steps=10, repeats=3, compile_threads=5)),
        "input": ("input", dict(tasks=["cmfa", "ssmer"], workers=[8, 16], batch_size=64,
                                batches=20, warmup=3, threads=2, fake_examples=64)),
    }
  return {
      "events": ("events", dict(sensors=[[26, 34]], counts=[20_000], batches=[1, 4], repeats=2,
                                matmul=256)),
      # One batch per dtype, and SSMER in bf16 only: compiling the steps is most of the dry
      # run's time on 2 cores (15-20 s a program, unoptimised).
      "train_cmfa": ("train", dict(task="cmfa", image_size=32, batches=[2],
                                   dtypes=["float32", "bfloat16"], model_size=TINY_MODEL_SIZE,
                                   capacity=512, events=256, warmup=1, steps=2, repeats=2,
                                   compile_threads=2,
                                   profile=dict(dtype="bfloat16", batch=2, steps=2))),
      # memory_limit_mb stands in for the device's memory on the CPU: small enough that the
      # first batch does not fit, so the search steps down (and recompiles) as on a GPU.
      "train_ssmer": ("train", dict(task="ssmer", image_size=32, batches=[4, 2],
                                    dtypes=["bfloat16"], model_size=TINY_SSMER_SIZE,
                                    capacity=512, events=256, warmup=1, steps=2, repeats=2,
                                    compile_threads=2, memory_limit_mb=1)),
      # The official CMFA runs at 64 px too; at 256 px a step takes ~20 s on the CPU.
      "official": ("official", dict(cmfa_batches=[1], image_size=64, ssmer_size=32,
                                    ssmer_batch=2, precisions=["float32", "bfloat16"],
                                    compile=["float32"], compile_backend="eager", warmup=1,
                                    steps=1, repeats=1, torch_threads=1)),
      "predict": ("predict", dict(configs=[["cmfa", "float32", 4], ["slpt_event", "float32", 4],
                                           ["slpt_event", "bfloat16", 8]],
                                  config_variant="tiny", sensor=[60, 80], seconds=0.15,
                                  window_us=33_328, stride_us=4_166, capacity=1024, events=256,
                                  steps=2, repeats=2, compile_threads=2)),
      "input": ("input", dict(tasks=["cmfa", "ssmer"], workers=[1, 2], batch_size=8, batches=3,
                              warmup=1, threads=1, fake_examples=8)),
  }


# ---------------------------------------------------------------------------------------------
# Running the jobs


def child_env(kind: str, dry: bool) -> dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  if dry or kind in ("official", "input"):
    # The official code and the input pipeline run without JAX's device (and must not
    # take its memory).
    env["JAX_PLATFORMS"] = "cpu"
  else:
    # The largest SSMER batch may use nearly all of the device.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  if dry:
    # Compiling is most of the dry run's time on the CPU; unoptimised CPU code runs the same
    # programs (the GPU's compiler is untouched).
    env["XLA_FLAGS"] = " ".join(filter(None, [
        env.get("XLA_FLAGS"), "--xla_backend_optimization_level=0",
        "--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1"]))
  return env


def run_job(name: str, kind: str, args: dict, deadline: float, rows_path: str, log,
            dry: bool) -> dict:
  """Runs one job to its end or its deadline; returns its status row."""
  args = dict(args, name=name, deadline=deadline - GRACE_S)
  cmd = [sys.executable, os.path.join(HERE, "parts.py"), kind, json.dumps(args), rows_path]
  start = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(kind, dry), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, process_group=0)

  def echo():
    for line in proc.stdout:
      line = line if line.startswith(f"[{name}]") else f"[{name}] {line}"
      sys.stdout.write(line)
      sys.stdout.flush()
      log.write(line)
      log.flush()

  reader = threading.Thread(target=echo, daemon=True)
  reader.start()
  status = "ok"
  try:
    proc.wait(timeout=max(1.0, deadline - time.time()))
    if proc.returncode:
      status = f"exit {proc.returncode}"
  except subprocess.TimeoutExpired:
    status = "cut at its time budget"
  finally:
    stop_group(proc)
  reader.join(timeout=5)
  return {"part": "job", "job": name, "status": status, "seconds": time.time() - start,
          "budget_s": deadline - start}


def stop_group(proc) -> None:
  """Ends the job and every process it started (grain workers, compile workers)."""
  for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(timeout=wait)
      if sig == signal.SIGTERM:
        os.killpg(proc.pid, signal.SIGKILL)   # workers that outlived their parent
      return
    except subprocess.TimeoutExpired:
      continue
    except ProcessLookupError:
      return


def append_row(path: str, row: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def read_rows(path: str) -> list[dict]:
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          pass   # a line cut by a kill
  return rows


def write_outputs(out: str, meta: dict, rows: list[dict]) -> str:
  """results.json (every row, by part) and tables.txt, each written whole and renamed."""
  parts = {}
  for r in rows:
    parts.setdefault(r["part"], []).append(r)
  text = render_tables(meta, rows)
  for name, content in (("results.json", json.dumps({"meta": meta, "parts": parts}, indent=1)),
                        ("tables.txt", text)):
    tmp = os.path.join(out, f".{name}.tmp")
    with open(tmp, "w") as f:
      f.write(content)
    os.replace(tmp, os.path.join(out, name))
  return text


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(v, spec=".3g", scale=1.0):
  if v is None:
    return "n/a"
  if isinstance(v, (int, float)):
    return format(v * scale, spec)
  return str(v)


def table(header: list, body: list) -> str:
  widths = [max(len(str(r[i])) for r in body + [header]) for i in range(len(header))]
  lines = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths)),
           "-+-".join("-" * w for w in widths)]
  lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in body]
  return "\n".join(lines)


def _by(rows, part, **match):
  return [r for r in rows if r["part"] == part and all(r.get(k) == v for k, v in match.items())]


def _status(r) -> str | None:
  return r.get("error") or (f"skipped: {r['skipped']}" if r.get("skipped") else None)


def ours_rate(rows, step: str, batch=None, dtype=None) -> dict | None:
  """Our fastest measured row of `step` (at `batch` / `dtype` if given)."""
  cand = [r for r in _by(rows, "train", impl="ours", step=step) if r.get("images_per_s")
          and (batch is None or r["batch"] == batch) and (dtype is None or r["dtype"] == dtype)]
  return max(cand, key=lambda r: r["images_per_s"]) if cand else None


def render_tables(meta: dict, rows: list[dict]) -> str:
  out = [f"Device benchmark{' (DRY RUN: tiny sizes, numbers mean nothing)' if meta['dry_run'] else ''}"
         f" — {meta['date']}, command: {meta['command']}"]
  chip = next(iter(_by(rows, "chip")), None)
  if chip:
    mm = next(iter(_by(rows, "chip_matmul")), {})
    out.append(f"device: {chip['device']} ({chip['platform']}; peaks: {chip['chip']} "
               f"bf16 {fmt(chip['bf16_tflops'])} / TF32 {fmt(chip['tf32_tflops'])} TFLOP/s dense); "
               f"JAX {chip['jax']}; memory {fmt(chip.get('memory_bytes'), '.1f', 2**-30)} GiB; "
               f"bf16 {mm.get('size')}^3 matmul: {fmt(mm.get('tflops'), '.1f')} TFLOP/s")
  setup = next(iter(_by(rows, "official_setup")), None)
  if setup:
    out.append(f"official: PyTorch {setup['torch']} on {setup['device']} (cuDNN TF32 "
               f"{setup['cudnn_tf32']}, matmul TF32 {setup['matmul_tf32']})")

  # 1. train
  body = []
  for r in _by(rows, "train", impl="ours"):
    st = _status(r)
    body.append([r["step"], r["batch"], r["dtype"]] + ([st] + [""] * 8 if st else [
        fmt(r["step_s"], ".1f", 1e3), fmt(r["images_per_s"], ".1f"), fmt(r["compile_s"], ".0f"),
        fmt(r["planned_mib"], ".0f"), fmt(r["peak_mib"], ".0f"), fmt(r["gflop_per_step"], ".0f"),
        fmt(r["tflops"], ".1f"), fmt(r["mfu"], ".1f", 100),
        "; ".join(r["search"]) if r.get("search") else ""]))
  out += ["", "1. Train steps, ours (events rendered on the device inside the step)",
          table(["step", "batch", "dtype", "ms/step", "images/s", "compile s", "planned MiB",
                 "peak MiB", "GFLOP/step", "TFLOP/s", "MFU %", "batch search"], body)
          if body else "(no rows)"]
  body = []
  for r in _by(rows, "train", impl="official"):
    st = _status(r)
    ours = ours_rate(rows, r["step"], r["batch"], r["dtype"])
    body.append([r["step"], r["batch"], r["mode"]] + ([st] + [""] * 5 if st else [
        fmt(r["step_s"], ".1f", 1e3), fmt(r["images_per_s"], ".1f"),
        fmt(r["first_call_s"], ".1f"), fmt(r["peak_mib"], ".0f"),
        fmt(ours and ours["images_per_s"], ".1f"),
        fmt(ours and ours["images_per_s"] / r["images_per_s"], ".2f")]))
  out += ["", "1. Train steps, official PyTorch (pre-rendered images; same device, same batch; "
          "ours at the same dtype)",
          table(["step", "batch", "mode", "ms/step", "images/s", "first call s", "peak MiB",
                 "ours images/s", "ours/official"], body) if body else "(no rows)"]
  out += ["", "Targets (ours: fastest dtype at the largest CMFA batch / SSMER's batch):",
          *targets(rows),
          "images/s counts clips for SSMER (one clip = 3 views). float32: JAX's default on GPUs "
          "(TF32 matmuls and convolutions); PyTorch's (TF32 convolutions, float32 matmuls). MFU: "
          "XLA's FLOPs of the step / step time / the chip's dense bf16 (float32: TF32) peak. "
          "planned MiB: XLA's memory plan of the step; peak MiB: the process's peak so far."]

  # 2. events
  body = []
  for r in _by(rows, "events"):
    st = _status(r)
    body.append([r["sensor"], f"{r['events'] / 1e6:g} M", r["batch"], r["kind"]]
                + ([st, "", ""] if st else [fmt(r["mevents_per_s"], ".0f"),
                                            fmt(r["ms_per_call"], ".2f"),
                                            fmt(r["compile_s"], ".2f")]))
  out += ["", "2. Event representations on the device (the batch's windows share the events; "
          "JAX, events already on the device)",
          table(["sensor", "events", "windows", "representation", "M events/s", "ms/call",
                 "compile s"], body) if body else "(no rows)"]

  # 3. predict
  rec = next(iter(_by(rows, "predict_recording")), None)
  body = []
  for r in _by(rows, "predict"):
    st = _status(r)
    goal = ""
    if not st and r["model"] == "slpt_event":
      goal = "met" if r["model_host_batch_windows_per_s"] >= 1000 else "NOT met"
    body.append([r["model"], r["dtype"], r["batch"]] + ([st] + [""] * 7 if st else [
        r["windows"], fmt(r["end_to_end_windows_per_s"], ".0f"),
        fmt(r["run_model_windows_per_s"], ".0f"), fmt(r["model_host_batch_windows_per_s"], ".0f"),
        fmt(r["model_device_batch_windows_per_s"], ".0f"), fmt(r["compile_s"], ".0f"), goal]))
  out += ["", "3. Prediction (`evalign_jax.predict`, 33.3 ms windows every 4.2 ms = 240 Hz, "
          "no overlay" + (f"; simulated {rec['sensor']} recording, {rec['events']} events, "
                          f"{rec['seconds']:.1f} s)" if rec else ")"),
          table(["model", "dtype", "batch", "windows", "end to end w/s", "in predict: model w/s",
                 "model, host batch w/s", "model, device batch w/s", "compile s",
                 "goal >= 1000 w/s"], body) if body else "(no rows)"]

  # 4. profile
  out += ["", "4. Where the CMFA train step's time goes"]
  convs = next(iter(_by(rows, "profile_convs")), None)
  if convs:
    out.append(f"convolutions in the compiled step ({convs['dtype']}, batch {convs['batch']}): "
               f"{convs['convs']}, NHWC {convs['nhwc']}, bf16 {convs['bf16']}; "
               + "; ".join(f"{k}: {n}" for k, n in sorted(convs["by_kind"].items())))
  summary = next(iter(_by(rows, "profile_summary")), None)
  ops = _by(rows, "profile")
  if summary:
    out.append(f"source: {summary['source']}; {fmt(summary['ops_ms_per_step'], '.1f')} ms of "
               f"ops per step, {summary['distinct_ops']} distinct ops")
  body = [[r["rank"], r["op"][:70], fmt(r["ms_per_step"], ".2f"), fmt(r["share"], ".1f", 100),
           fmt(r["calls_per_step"], ".0f")] for r in ops if "rank" in r]
  out.append(table(["rank", "op", "ms/step", "share %", "calls/step"], body) if body
             else "; ".join(filter(None, (_status(r) for r in ops))) or "(no rows)")
  if summary and summary.get("top_kernels"):
    out.append(f"GPU kernels: {fmt(summary['kernels_ms_per_step'], '.1f')} ms/step; "
               f"convolution kernels {fmt(summary['conv_kernel_share'], '.0f', 100)}% of it, of "
               f"which tensor-core kernels {fmt(summary['conv_tensor_core_share'], '.0f', 100)}%"
               f", NHWC-named {fmt(summary['conv_nhwc_share'], '.0f', 100)}%")
    out.append(table(["kernel", "hlo op", "ms/step", "share %"],
                     [[k["kernel"][:90], k["hlo_op"][:40], fmt(k["ms_per_step"], ".2f"),
                       fmt(k["share"], ".1f", 100)] for k in summary["top_kernels"]]))
  elif summary:
    out.append("GPU kernels: n/a on CPU")

  # 5. input
  body = []
  for r in _by(rows, "input"):
    st = _status(r)
    step = ours_rate(rows, r["task"])
    step_rate = step and step["images_per_s"]
    ratio = r.get("samples_per_s") and step_rate and r["samples_per_s"] / step_rate
    verdict = "" if ratio is None else ("input is the bottleneck" if ratio < 1 else "ok")
    body.append([r["task"], r["workers"], r["source"]] + ([st] + [""] * 4 if st else [
        fmt(r["samples_per_s"], ".0f"), fmt(r["cores_busy"], ".1f"), fmt(step_rate, ".0f"),
        fmt(ratio, ".2f"), verdict]))
  out += ["", "5. Input pipeline (grain, host only) vs our fastest train step",
          table(["task", "workers", "source", "samples/s", "cores busy", "step samples/s",
                 "input/step", ""], body) if body else "(no rows)"]

  body = [[r["job"], r["status"], fmt(r["seconds"], ".0f"), fmt(r["budget_s"], ".0f")]
          for r in _by(rows, "job")]
  errors = [f"{r['job']}: {r['error']}" for r in _by(rows, "job_error")]
  out += ["", "Jobs", table(["job", "status", "seconds", "budget s"], body) if body
          else "(none yet)", *errors]
  return "\n".join(out) + "\n"


def targets(rows) -> list[str]:
  lines = []
  official = [r for r in _by(rows, "train", impl="official") if r.get("images_per_s")]
  for step in ("cmfa", "ssmer"):
    mine = [r for r in _by(rows, "train", impl="ours", step=step) if r.get("images_per_s")]
    if not mine:
      lines.append(f"  {step}: no measurement of ours")
      continue
    batch = max(r["batch"] for r in mine)
    best = max((r for r in mine if r["batch"] == batch), key=lambda r: r["images_per_s"])
    for mode, target in (("eager", 3.0), ("eager autocast", 1.5)):
      ref = [r for r in official if r["step"] == step and r["mode"] == mode]
      if not ref:
        lines.append(f"  {step} vs official {mode}: not measured")
        continue
      ref = max(ref, key=lambda r: r["batch"])
      ratio = best["images_per_s"] / ref["images_per_s"]
      lines.append(f"  {step} ours {best['dtype']} b{best['batch']} "
                   f"{best['images_per_s']:.1f} / official {mode} b{ref['batch']} "
                   f"{ref['images_per_s']:.1f} = {ratio:.2f}x (target >= {target}x: "
                   f"{'met' if ratio >= target else 'NOT met'})")
  bf16 = [r for r in _by(rows, "train", impl="ours", step="cmfa", dtype="bfloat16")
          if r.get("mfu") is not None]
  if bf16:
    r = max(bf16, key=lambda r: r["batch"])
    lines.append(f"  cmfa bf16 MFU at batch {r['batch']}: {r['mfu'] * 100:.1f}% (target >= 35%: "
                 f"{'met' if r['mfu'] >= 0.35 else 'NOT met'})")
  else:
    lines.append("  cmfa bf16 MFU: n/a (no bf16 step measured, or no known peak for this chip)")
  return lines


# ---------------------------------------------------------------------------------------------


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dry_run", action="store_true",
                      help="tiny sizes on the CPU; exercises every part")
  parser.add_argument("--out", default=os.environ.get("OUT")
                      or os.path.join(REPO, "workdir", "device_benchmark"))
  parser.add_argument("--official_dir", default=DEFAULT_OFFICIAL,
                      help="checkout of the official CMFA-SSMER code (CMFA/, SSMER/)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="total seconds (default: the sum of the jobs' budgets)")
  parser.add_argument("--jobs", default="", help="comma-separated subset of the jobs")
  parser.add_argument("--budgets", default="",
                      help="per-job seconds, e.g. train_cmfa=200,input=30")
  parser.add_argument("--data_dir", default="",
                      help="a built synthetic_faces for the input part (else a fake source)")
  args = parser.parse_args()

  dry = args.dry_run
  budgets = dict(DRY_BUDGETS_S if dry else BUDGETS_S)
  for item in filter(None, args.budgets.split(",")):
    name, _, seconds = item.partition("=")
    if name not in budgets:
      parser.error(f"--budgets: unknown job {name!r}; jobs: {sorted(budgets)}")
    budgets[name] = float(seconds)
  plan = job_args(dry)
  names = [n for n in plan if not args.jobs or n in args.jobs.split(",")]
  os.makedirs(args.out, exist_ok=True)
  rows_path = os.path.join(args.out, "rows.jsonl")
  if os.path.exists(rows_path):
    os.remove(rows_path)
  meta = {"dry_run": dry, "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "command": " ".join(["bash benchmarks/device/run.sh"] + sys.argv[1:]),
          "budgets_s": {n: budgets[n] for n in names}, "python": sys.version.split()[0]}
  start = time.time()
  end = start + min(args.budget_s or 1e9, sum(budgets[n] for n in names))
  log = open(os.path.join(args.out, "jobs.log"), "w")
  write_outputs(args.out, meta, [])

  def on_term(signum, frame):   # a kill from outside: leave the tables of what was measured
    del frame
    write_outputs(args.out, meta, read_rows(rows_path))
    sys.exit(128 + signum)

  signal.signal(signal.SIGTERM, on_term)
  for i, name in enumerate(names):
    kind, job = plan[name]
    deadline = end - sum(budgets[n] for n in names[i + 1:])
    if kind == "official":
      if not os.path.isdir(os.path.join(args.official_dir, "CMFA")):
        append_row(rows_path, {"part": "job", "job": name, "seconds": 0, "budget_s": 0,
                               "status": f"skipped: no official checkout at {args.official_dir}"})
        continue
      job = dict(job, official_dir=os.path.abspath(args.official_dir))
      # The official SSMER step at the batch our search found (float32).
      found = [r for r in _by(read_rows(rows_path), "train", impl="ours", step="ssmer",
                              dtype="float32") if r.get("images_per_s")]
      if found:
        job["ssmer_batch"] = found[0]["batch"]
    if kind == "input" and args.data_dir:
      job = dict(job, data_dir=args.data_dir)
    if kind == "train":
      job = dict(job, out_dir=args.out)
    print(f"== {name}: until {deadline - start:.0f} s of {end - start:.0f} s", flush=True)
    status = run_job(name, kind, job, deadline, rows_path, log, dry)
    append_row(rows_path, status)
    write_outputs(args.out, meta, read_rows(rows_path))
  meta["seconds"] = time.time() - start
  print("\n" + write_outputs(args.out, meta, read_rows(rows_path)), flush=True)
  print(f"(results in {args.out}: tables.txt, results.json, rows.jsonl, jobs.log)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
