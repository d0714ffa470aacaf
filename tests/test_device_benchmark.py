"""The GPU benchmark's dry run: `bash benchmarks/device/run.sh --dry_run` measures every part at
tiny sizes on the CPU and writes its tables, so the command is known to work before a GPU runs it.

The official PyTorch code's part runs when its checkout is there (EVALIGN_OFFICIAL_DIR, else
.official/CMFA-SSMER, which `run.sh --prepare` makes) and is skipped otherwise.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_DIR = os.environ.get("EVALIGN_OFFICIAL_DIR",
                              os.path.join(REPO, ".official", "CMFA-SSMER"))


def _ok(rows):
  return [r for r in rows if not r.get("error") and not r.get("skipped")]


@pytest.mark.slow
def test_dry_run_measures_every_part(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop("OUT", None)
  proc = subprocess.run(
      ["bash", "benchmarks/device/run.sh", "--dry_run", f"--out={tmp_path}",
       f"--official_dir={OFFICIAL_DIR}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=660)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  tables = (tmp_path / "tables.txt").read_text()
  assert tables in proc.stdout   # the tables are printed, not only written
  for title in ("1. Train steps, ours", "1. Train steps, official PyTorch",
                "2. Event representations", "3. Prediction", "4. Where the CMFA train step",
                "5. Input pipeline", "Jobs"):
    assert title in tables
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["meta"]["dry_run"]
  parts = results["parts"]
  jobs = {r["job"]: r["status"] for r in parts["job"]}
  official = os.path.isdir(os.path.join(OFFICIAL_DIR, "CMFA"))
  assert jobs == {"events": "ok", "train_cmfa": "ok", "train_ssmer": "ok", "predict": "ok",
                  "input": "ok",
                  "official": "ok" if official else
                              f"skipped: no official checkout at {OFFICIAL_DIR}"}, jobs
  assert "job_error" not in parts

  # 1: our steps in both dtypes, with FLOPs; SSMER's batch search stepped down.
  ours = _ok(r for r in parts["train"] if r["impl"] == "ours")
  assert {(r["step"], r["dtype"]) for r in ours} >= {
      ("cmfa", "float32"), ("cmfa", "bfloat16"), ("ssmer", "bfloat16")}
  for r in ours:
    assert r["images_per_s"] > 0 and r["gflop_per_step"] > 0 and r["compile_s"] > 0
  assert any(r["step"] == "ssmer" and r.get("search") for r in ours)
  if official:
    theirs = _ok(r for r in parts["train"] if r["impl"] == "official")
    assert {(r["step"], r["mode"]) for r in theirs} >= {
        ("cmfa", "eager"), ("ssmer", "eager"), ("cmfa", "eager autocast"),
        ("ssmer", "eager autocast"), ("cmfa", "torch.compile"), ("ssmer", "torch.compile")}
  # 2: every representation at every size.
  events = _ok(parts["events"])
  assert {r["kind"] for r in events} == {"voxel", "frame", "time_surface"}
  assert len(events) == len(parts["events"])
  # 3: both models through predict, end to end and alone.
  predict = _ok(parts["predict"])
  assert {r["model"] for r in predict} == {"cmfa", "slpt_event"}
  assert all(r["windows"] > 0 and r["end_to_end_windows_per_s"] > 0 for r in predict)
  # 4: ten ranked ops and the convolutions' layouts.
  assert [r["rank"] for r in parts["profile"]] == list(range(1, 11))
  assert parts["profile_convs"][0]["convs"] > 0
  # 5: both pipelines at both worker counts.
  assert len(_ok(parts["input"])) == 4
