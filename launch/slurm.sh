#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per GPU, all joined into one JAX job.
#
#   sbatch --nodes=2 launch/slurm.sh --config=configs/cmfa.py --workdir=/shared/workdir/cmfa \
#       --config.init.event_from=/shared/workdir/ssmer --config.init.rgb_from=/shared/workdir/rgb_slpt
#
# Every argument goes to `python -m evalign_jax.main`. srun starts one task per GPU; inside a
# step, jax.distributed.initialize() reads SLURM_* (coordinator = first node, port from the job
# id, process id = SLURM_PROCID, local GPU = SLURM_LOCALID). --config.batch_size is the global
# batch: it must divide by the number of GPUs. The workdir (checkpoints, exports) and
# --config.data_dir must be on a filesystem every node sees; build the dataset once beforehand
# (python -m data_pipelines.build ...) rather than from a running job.
# Change the #SBATCH lines below (or override them on the sbatch command line) to fit the
# cluster: GPUs per node, CPUs per task, partition, time.
#SBATCH --job-name=evalign
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

# Run from the repository, in its environment: `sbatch` from the repository root, with the
# virtual environment active (or PYTHON set).
cd "${SLURM_SUBMIT_DIR:-.}"
python=${PYTHON:-python}

# --kill-on-bad-exit: one failed task ends the step at once; the JAX heartbeat would also stop
# the others, after --heartbeat_timeout_s.
srun --kill-on-bad-exit=1 "$python" -m evalign_jax.main --distributed=on "$@"
