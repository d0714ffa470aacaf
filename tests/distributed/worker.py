"""One process of the multi-process tests, run by launch/local.sh (or alone for one process):

  launch/local.sh 2 -- tests/distributed/worker.py --stages=ssmer,cmfa --workdir=W \
      --data_dir=D --out=R.json --rgb_from=EXPORT [--steps=2] [--cmfa_fsdp=2]
  python tests/distributed/worker.py --mode=die --coordinator_address=... (process 1 dies)

mode=train: joins the job like evalign_jax.main; for each stage in turn (one process start for
all, they are slow), in W/<stage>, builds the stage's tiny runlocal config, then
  1. the loss of one step from the initial state on a fixed global batch: the first
     unaugmented batch of the training split as 2 processes split it (process i of 2 reads
     examples i::2, and the global batch is process 0's rows, then process 1's), the same
     examples in the same rows whatever the number of processes here (1 or 2), so even dropout
     draws the same masks;
  2. if the workdir holds checkpoints (written by another run): the newest one restored onto
     this run's mesh, compared with that run's export;
  3. trains to --steps with the stage's own loop (resuming if there are checkpoints).
  Process 0 writes what it measured to --out (JSON, by stage).
mode=die: one collective, then process 1 exits while process 0 keeps running collectives; the
  heartbeat timeout must stop process 0.
"""

import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import jax   # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp   # pylint: disable=wrong-import-position
import numpy as np   # pylint: disable=wrong-import-position
from absl import app   # pylint: disable=wrong-import-position
from absl import flags   # pylint: disable=wrong-import-position

from evalign_jax import distributed   # pylint: disable=wrong-import-position
from evalign_jax import sharding   # pylint: disable=wrong-import-position

PROBE_PROCESSES = 2

_MODE = flags.DEFINE_enum("mode", "train", ["train", "die"], "What to do.")
_STAGES = flags.DEFINE_list("stages", ["ssmer", "cmfa"], "Trainers to run, in order.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Stage workdirs go to <workdir>/<stage>.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where synthetic_faces/tiny is built.")
_OUT = flags.DEFINE_string("out", None, "JSON results (written by process 0).")
_STEPS = flags.DEFINE_integer("steps", 2, "Train to this step.")
_BATCH = flags.DEFINE_integer("batch", 4, "Global batch.")
_CMFA_FSDP = flags.DEFINE_integer("cmfa_fsdp", 1, "Size of cmfa's fsdp mesh axis.")
_RGB_FROM = flags.DEFINE_string("rgb_from", "", "cmfa: the frozen branch's export.")


def tiny_config(stage: str, workdir_steps: int):
  """The stage's tiny variant (configs/<stage>.py:tiny) with this job's batch, steps and mesh."""
  from evalign_jax import config_utils   # pylint: disable=g-import-not-at-top
  spec = "configs/ssmer.py:tiny" if stage == "ssmer" else "configs/cmfa.py:tiny"
  c = config_utils.load_config(os.path.join(REPO, spec))
  c.data_dir, c.batch_size = _DATA_DIR.value, _BATCH.value
  c.total_steps = workdir_steps
  c.checkpoint.every = 1000   # the last step always saves
  c.mesh = dict(data=-1, fsdp=_CMFA_FSDP.value if stage == "cmfa" else 1)
  if stage == "ssmer":
    c.representations = ("frame", "voxel")   # 2 views compile faster than 3; same code path
  else:
    c.evals.val.batch_size, c.evals.val.every = _BATCH.value, workdir_steps
    c.init.rgb_from = _RGB_FROM.value
  return c


def fixed_batch_loss(stage, config, trainer_task: str) -> float:
  """The train step's loss from a copy of the initial state on the fixed global batch."""
  from data_pipelines import augment   # pylint: disable=g-import-not-at-top
  from data_pipelines import datasets   # pylint: disable=g-import-not-at-top
  from data_pipelines import input_pipeline as ip   # pylint: disable=g-import-not-at-top
  size = config.image_size
  source = ip.make_source(config.dataset, datasets.data_dir(config), "train",
                          decode_image=trainer_task == "cmfa")
  aug = (augment.AlignmentAugment(out_size=size) if trainer_task == "cmfa"
         else augment.SsmerAugment(out_size=size, num_views=len(config.representations)))
  shards = PROBE_PROCESSES // jax.process_count()   # of the 2-process split, this one's
  parts = [ip.make_dataset(source, task=trainer_task, train=False,
                           global_batch_size=config.batch_size, augment_config=aug,
                           process_index=i, process_count=PROBE_PROCESSES)[0]
           for i in range(jax.process_index() * shards, (jax.process_index() + 1) * shards)]
  batch, _ = ip.split_host_fields(jax.tree.map(lambda *x: np.concatenate(x), *parts))
  batch = sharding.global_batch(batch, stage.batch_sharding)
  state = jax.tree.map(jnp.copy, stage.state)   # the step donates its state
  _, metrics = stage.train_step(state, batch)
  return float(metrics["loss"])


def restored_vs_export(stage, workdir: str) -> float | None:
  """Max |restored - exported| over the model's parameters, None without checkpoints."""
  from evalign_jax import checkpoints   # pylint: disable=g-import-not-at-top
  from evalign_jax.models import checkpoint_io   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import loop   # pylint: disable=g-import-not-at-top
  from flax import nnx   # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  _, state, _ = checkpoints.restore_state(os.path.join(workdir, "checkpoints"),
                                          loop.abstract_state(stage.state))
  model = nnx.merge(stage.graphdef, state)[0]
  ours = sharding.to_host(checkpoint_io.model_state_dict(model))
  theirs = checkpoint_io.read_model_state(os.path.join(workdir, "export", "state"))
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)),
                                                 initial=0.0)), ours, theirs)
  return max(jax.tree.leaves(diffs))


def train_mode():
  from evalign_jax.trainers import alignment   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import loop   # pylint: disable=g-import-not-at-top
  from evalign_jax.trainers import ssmer   # pylint: disable=g-import-not-at-top
  results = {}
  for name in _STAGES.value:
    config = tiny_config(name, _STEPS.value)
    workdir = os.path.join(_WORKDIR.value, name)
    stage = (ssmer if name == "ssmer" else alignment).build_stage(config)
    r = results[name] = {
        "process_count": jax.process_count(), "device_count": jax.device_count(),
        "mesh": dict(sharding.make_mesh(config.mesh).shape),
        "fsdp_split_leaves": sum(1 for s in jax.tree.leaves(stage.state)
                                 if any(s.sharding.spec)),
        "restored_vs_export": restored_vs_export(stage, workdir),
        "fixed_batch_loss": fixed_batch_loss(stage, config, name),
    }
    r["final_eval"] = loop.run_training(stage, config, workdir)
  if distributed.is_primary():
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)


def die_mode():
  mesh = sharding.make_mesh({"data": -1})
  x = sharding.global_batch(np.ones((jax.local_device_count(),), np.float32),
                            sharding.batch_sharding(mesh, jax.device_count()))
  total = jax.jit(jnp.sum, out_shardings=sharding.replicated(mesh))
  total(x).block_until_ready()
  print(f"process {jax.process_index()} joined", file=sys.stderr, flush=True)
  if jax.process_index() == 1:
    os._exit(7)   # pylint: disable=protected-access
  while True:   # the survivor keeps needing the dead process
    total(x).block_until_ready()
    time.sleep(0.1)


def main(argv):
  del argv
  distributed.initialize_from_flags()
  if os.environ.get("EVALIGN_JAX_CACHE"):   # as evalign_jax.main does
    jax.config.update("jax_compilation_cache_dir", os.environ["EVALIGN_JAX_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  train_mode() if _MODE.value == "train" else die_mode()   # pylint: disable=expression-not-assigned


if __name__ == "__main__":
  app.run(main)
