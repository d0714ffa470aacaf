"""The one checkpoint wrapper: training state + data iterator + config, atomically, with Orbax.

A training workdir holds
  checkpoints/<step>/   the latest `keep` steps: {state, data_iter, config}
  best/<step>/          the step with the best validation metric (one kept): the same items
Orbax writes each step into a temporary folder and renames it when complete, so a step that was
being written when the process died is never restored. Saves are asynchronous: training goes on
while the arrays are written.

Multi-process jobs: every process calls save and restore on the same (shared) folder; each
writes its own shards of the state and its own data-iterator position
(data_iter/process_<i>-of-<n>.json), process 0 the metadata and the config. The state restores
onto any mesh (the abstract state carries the target shardings), so a run may resume on another
number of devices or processes; the data iterators then start afresh, since the examples are
split differently between processes.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

_ITEMS = ("state", "data_iter", "config")


def _manager(directory: str, *, keep: int, best_metric: str | None,
             async_save: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode="min",
      enable_async_checkpointing=async_save,
      create=True,
      # Processes synchronise each save with barriers named after the step; latest/ and best/
      # save the same step at once, so their barriers need distinct names.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=os.path.basename(os.path.normpath(directory))),
  )
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options, item_names=_ITEMS,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data_iter": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


class TrainCheckpoints:
  """Latest-N and best-by-metric checkpoints of one training run.

  Args:
    workdir: the stage's folder.
    keep: how many of the latest steps to keep.
    best_metric: the validation metric (lower is better) that picks `best/`, or None.
    async_save: write in the background (call `wait()` before reading what was written).
  """

  def __init__(self, workdir: str, *, keep: int = 2, best_metric: str | None = "val_nme",
               async_save: bool = True):
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep=keep, best_metric=None,
                           async_save=async_save)
    self.best_metric = best_metric
    self.best = (_manager(os.path.join(workdir, "best"), keep=1, best_metric=best_metric,
                          async_save=async_save) if best_metric else None)

  def save(self, step: int, state: Any, data_iter, config: dict,
           metrics: dict | None = None) -> None:
    """Saves to checkpoints/ and, when `metrics` holds the best metric, offers it to best/."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data_iter=grain.checkpoint.CheckpointSave(data_iter),
                              config=ocp.args.JsonSave(config))
    self.latest.save(step, args=args, force=True)
    if self.best is not None and metrics and self.best_metric in metrics:
      args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data_iter=grain.checkpoint.CheckpointSave(data_iter),
                                config=ocp.args.JsonSave(config))
      self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()},
                     force=True)

  def restore_latest(self, abstract_state: Any, data_iter) -> tuple[int, Any] | None:
    """(step, state) of the newest complete checkpoint, with `data_iter` moved to its position;
    None if there is none."""
    step = self.latest.latest_step()
    if step is None:
      return None
    logging.info("restoring step %d from %s", step, self.latest.directory)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if _has_iterator_of_this_process(self.latest.directory, step):
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    else:
      logging.warning("step %d was saved by another number of processes: restoring the state "
                      "only, the data iterator starts afresh", step)
    restored = self.latest.restore(step, args=ocp.args.Composite(**items))
    return step, restored.state

  def wait(self) -> None:
    self.latest.wait_until_finished()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    if self.best is not None:
      self.best.close()


def _has_iterator_of_this_process(directory, step: int) -> bool:
  """Whether the step holds this process's data-iterator position (grain's file name)."""
  name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  return os.path.exists(os.path.join(str(directory), str(step), "data_iter", name))


def restore_state(directory: str, abstract_state: Any, *, step: int | None = None) -> tuple[
    int, Any, dict]:
  """(step, state, config) from a stage's `checkpoints/` or `best/` folder (newest by default).

  Raises FileNotFoundError naming the folder when it holds no complete checkpoint.
  """
  mngr = ocp.CheckpointManager(os.path.abspath(directory), item_names=_ITEMS,
                               item_handlers={"state": ocp.StandardCheckpointHandler(),
                                              "config": ocp.JsonCheckpointHandler()})
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{directory}: no complete checkpoint")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore()))
  mngr.close()
  return step, restored.state, dict(restored.config)
