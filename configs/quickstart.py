"""The whole method end to end on the embedded synthetic faces, sized for 2 CPU cores.

  python -m evalign_jax.main --config=configs/quickstart.py --workdir=workdir/quickstart
  python -m evalign_jax.main --config=configs/quickstart.py:tiny --workdir=/tmp/quickstart_tiny
  python -m evalign_jax.main --config=configs/quickstart.py:ablation --workdir=workdir/ablation

rgb_slpt -> ssmer -> slpt_event -> cmfa, then the eval stage on the mean shape, slpt_event and
cmfa; prints the table and writes <workdir>/summary.json. Each stage's config is its own
config's runlocal variant (tiny: its tiny variant; tests use it) with the overrides below, and
runs in <workdir>/<stage>/ (`init` paths are relative to the quick start's workdir).
`--config.steps.<stage>=N` sets a stage's steps (and its evaluation and checkpoint cadence);
`dataset`, `data_dir` and `seed` apply to every stage; anything else of a stage is
`--config.stages.<stage>.<field>=...` (the eval stage: `--config.eval.<field>`).
The ablation variant adds cmfa_no_ssmer, CMFA whose event backbone starts from scratch
instead of the SSMER encoder (benchmarks/ablation.py runs it longer).
"""

import ml_collections

from evalign_jax import config_utils


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, tiny=False, ablation=False)
  variant = "tiny" if arg.tiny else "runlocal"
  stage = lambda spec: config_utils.load_config(f"configs/{spec}")
  config = ml_collections.ConfigDict()
  config.stage = "quickstart"
  config.stages = ml_collections.ConfigDict(sort_keys=False)   # trained in this order
  config.stages.rgb_slpt = stage(f"rgb_slpt.py:{variant}")
  config.stages.ssmer = stage(f"ssmer.py:{variant}")
  config.stages.slpt_event = stage(f"cmfa.py:{variant},model=slpt_event")
  config.stages.cmfa = stage(f"cmfa.py:{variant}")
  config.stages.cmfa.init.event_from = "ssmer"
  config.stages.cmfa.init.rgb_from = "rgb_slpt"
  config.eval = stage(f"eval.py:{variant}")
  # Evaluated on the test split, in the table's order ("mean_shape": the baseline).
  config.compare = ("mean_shape", "slpt_event", "cmfa")
  if arg.ablation:
    config.stages.cmfa_no_ssmer = stage(f"cmfa.py:{variant}")
    config.stages.cmfa_no_ssmer.init.rgb_from = "rgb_slpt"
    config.compare = ("mean_shape", "slpt_event", "cmfa_no_ssmer", "cmfa")

  # Knobs of every stage, written once: the stages' fields refer to these.
  first = config.stages.rgb_slpt
  config.dataset, config.data_dir, config.seed = first.dataset, first.data_dir, first.seed
  config.steps = {name: config.stages[name].total_steps for name in config.stages}
  for name, c in config.stages.items():
    c.dataset, c.data_dir = config.get_ref("dataset"), config.get_ref("data_dir")
    c.seed = config.get_ref("seed")
    c.total_steps = c.checkpoint.every = config.steps.get_ref(name)
    for entry in c.evals.values():
      entry.every = config.steps.get_ref(name)
      entry.batch_size = c.batch_size   # validation batches as large as the training ones
  config.eval.dataset, config.eval.data_dir = config.get_ref("dataset"), config.get_ref("data_dir")
  config.eval.evals.test.batch_size = first.batch_size
  return config
