"""Builds a dataset into ArrayRecord shards, without TensorFlow.

  python -m data_pipelines.build --dataset=synthetic_faces --data_dir=~/evalign_data
  python -m data_pipelines.build --dataset=wflw_v_events --data_dir=DIR --manual_dir=WFLW_V
  python -m data_pipelines.build --dataset=esie --config=rendered --manual_dir=ESIE --data_dir=DIR
  python -m data_pipelines.build --dataset=fes_events --manual_dir=FES --data_dir=DIR

Bad inputs (unreadable videos, label/frame count mismatches, NaN labels, missing pairs) are
reported by file and skipped with a count at the end, or fail the build with --on_error=fail.
tfds writes into a temporary folder and renames it when done, so an interrupted build leaves
nothing that loads as complete. Datasets: see data_pipelines/registry.py.
"""

from __future__ import annotations

import os
import time

import tensorflow_datasets as tfds
from absl import app
from absl import flags

from data_pipelines import registry
from data_pipelines import video_examples
from evalign_jax.events import io as events_io


def build(dataset: str, data_dir: str, *, config: str | None = None,
          manual_dir: str | None = None, on_error: str = "skip",
          sensor_size: tuple[int, int] | None = None) -> dict:
  """Builds one dataset config; returns the per-split build report.

  sensor_size: (height, width) of the event files, overriding theirs (fes_events).
  """
  data_dir = os.path.expanduser(data_dir)
  kwargs = {} if sensor_size is None else {"sensor_size": tuple(sensor_size)}
  b = registry.builder(dataset, data_dir=data_dir, config=config, on_error=on_error, **kwargs)
  start = time.perf_counter()
  b.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.path.expanduser(manual_dir) if manual_dir else None))
  seconds = time.perf_counter() - start
  report = {k[len("build_report_"):]: v for k, v in b.info.metadata.items()
            if k.startswith("build_report_")}
  print(f"\n{b.name}/{b.builder_config.name} {b.version} -> {b.data_path} in {seconds:.1f} s")
  for split, r in report.items():
    print(f"  {split:>10}: {r['examples']:>6} examples from {r['clips']} clips; "
          f"{r['skipped']} skipped; {r['mean_events_per_window']:.0f} events/window, "
          f"{100 * r['truncated_fraction']:.1f}% of windows truncated to "
          f"{b.builder_config.crop.event_capacity}")
    for key in sorted(set(r) - _REPORTED):   # dataset-specific checks
      print(f"      {key}: {r[key]}")
    for reason in r["skipped_inputs"]:
      print(f"      skipped: {reason}")
  return report


# Report entries printed in the line above; the others are printed one per line.
_REPORTED = {"examples", "clips", "skipped", "skipped_inputs", "truncated_windows",
             "truncated_fraction", "mean_events_per_window"}

FLAGS = flags.FLAGS


def ensure_built(dataset: str, data_dir: str) -> dict:
  """Builds `dataset` (name or name/config) unless a complete build is in data_dir already.

  Returns the build report ({} when nothing was built).
  """
  data_dir = os.path.expanduser(data_dir)
  if registry.is_built(dataset, data_dir=data_dir):
    return {}
  print(f"Building {dataset} into {data_dir} (first use only)...", flush=True)
  return build(dataset, data_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.dataset or not FLAGS.data_dir:
    raise app.UsageError("--dataset and --data_dir are required")
  sensor_size = None
  if FLAGS.sensor_size is not None:
    try:
      sensor_size = events_io.parse_sensor_size(FLAGS.sensor_size)
    except ValueError as e:
      raise app.UsageError(f"--sensor_size: {e}") from e
  build(FLAGS.dataset, FLAGS.data_dir, config=FLAGS.config, manual_dir=FLAGS.manual_dir,
        on_error=FLAGS.on_error, sensor_size=sensor_size)


def _define_flags():
  """Flags only for the command line, so importing this module defines none."""
  flags.DEFINE_string("dataset", None, "Dataset name (see data_pipelines/registry.py).")
  flags.DEFINE_string("data_dir", None, "Where to write the built dataset.")
  flags.DEFINE_string("manual_dir", None, "Folder holding the raw inputs.")
  flags.DEFINE_string("config", None, "Builder config name (default: the first).")
  flags.DEFINE_enum("on_error", "skip", list(video_examples.ON_ERROR),
                    "What to do with a bad input: skip it (and count) or fail.")
  flags.DEFINE_string("sensor_size", None, "HxW, height first (e.g. 720x1280): the event "
                      "files' sensor size, overriding theirs (fes_events).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
