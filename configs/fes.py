"""FES (Faces in Event Streams): the event-only SLPT, and SSMER pretraining, on real Prophesee
Gen4 recordings (5 points and a face box per annotated face; no RGB, hence no CMFA).

Build the dataset once from the downloaded release (its layout: data_pipelines/fes_events):

  python -m data_pipelines.build --dataset=fes_events --manual_dir=~/FES --data_dir=~/evalign_data

then train and evaluate (eval: NME by the eye distance, points 3 and 4, and by the face box):

  python -m evalign_jax.main --config=configs/fes.py --workdir=workdir/fes_slpt
  python -m evalign_jax.main --config=configs/fes.py:model=ssmer --workdir=workdir/fes_ssmer
  python -m evalign_jax.main --config=configs/fes.py --workdir=workdir/fes_slpt_ssmer \
      --config.init.event_from=workdir/fes_ssmer
  python -m evalign_jax.main --config=configs/eval.py --workdir=workdir/fes_eval \
      --config.dataset=fes_events --config.checkpoint=workdir/fes_slpt

and at the 2-core size:

  python -m evalign_jax.main --config=configs/fes.py:runlocal --workdir=workdir/fes_slpt_local
  python -m evalign_jax.main --config=configs/fes.py:runlocal,model=ssmer \
      --workdir=workdir/fes_ssmer_local
  python -m evalign_jax.main --config=configs/fes.py:runlocal \
      --workdir=workdir/fes_slpt_ssmer_local --config.init.event_from=workdir/fes_ssmer_local
  python -m evalign_jax.main --config=configs/eval.py:runlocal --workdir=workdir/fes_eval_local \
      --config.dataset=fes_events --config.checkpoint=workdir/fes_slpt_local

The models predict FES's 5 points (the mean shape of its training split); the loss and the
validation NME are normalised by the distance of the two eyes. Defaults are the stage configs'
(configs/cmfa.py:model=slpt_event, configs/ssmer.py) with the dataset `fes_events` (33 ms
windows; `--config.dataset=fes_events/window50ms` or `window100ms` for the longer builds).
Variants: model=slpt_event|ssmer, runlocal (2 CPU cores), tiny (tests).
"""

import os

from evalign_jax import config_utils

DATASET = "fes_events"


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, runlocal=False, tiny=False, model="slpt_event")
  size = config_utils.size_variant(arg)
  if arg.model == "slpt_event":
    config = config_utils.alignment_training("cmfa", "slpt_event", size=size, batch_size=64,
                                             num_epochs=200, lr=1e-4)
  elif arg.model == "ssmer":
    # SSMER's own config, its sizes included, on FES's windows.
    variant = "" if size == "paper" else f":{size}"
    config = config_utils.load_config(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), f"ssmer.py{variant}"))
  else:
    raise config_utils.ConfigError(
        f"model must be slpt_event or ssmer, got {arg.model!r} (FES has no RGB: no CMFA)")
  config.dataset = DATASET
  return config
