"""The whole method end to end on the embedded synthetic faces, sized for 2 CPU cores.

  python -m evalign_jax.main --config=configs/quickstart.py --workdir=workdir/quickstart
  python -m evalign_jax.main --config=configs/quickstart.py:scratch --workdir=workdir/qs_scratch
  python -m evalign_jax.main --config=configs/quickstart.py:ablation --workdir=workdir/ablation
  python -m evalign_jax.main --config=configs/quickstart.py:tiny --workdir=/tmp/quickstart_tiny

As the paper does, CMFA starts from a trained RGB SLPT (its frozen branch, and the start of its
decoder) and an SSMER event encoder: by default the shipped `pretrained:rgb_slpt` and
`pretrained:ssmer` (runlocal-size models made by configs/quickstart_pretrain.py on
synthetic_faces/pretrain, whose subjects are in no test split). The quick start fine-tunes the
event-only SLPT (from the RGB SLPT) and CMFA on synthetic_faces/small, then runs the eval stage
on the mean shape, the RGB SLPT (on RGB crops), the event-only SLPT and CMFA on the held-out
test split; prints the table and writes <workdir>/summary.json.

Variants: scratch trains the RGB SLPT and SSMER in the run instead (rgb_slpt -> ssmer ->
slpt_event -> cmfa; tiny does too, at the test size); ablation adds cmfa_no_ssmer (CMFA whose
event backbone starts from the RGB SLPT's instead of SSMER's) on the default synthetic_faces
with more steps (benchmarks/ablation.py). Each stage's config is its own config's runlocal
variant (tiny: its tiny variant) with the overrides below, and runs in <workdir>/<stage>/
(`init` paths naming a stage are that stage's workdir). `--config.steps.<stage>=N` sets a
stage's steps (and its evaluation and checkpoint cadence); `dataset`, `data_dir` and `seed`
apply to every stage; anything else of a stage is `--config.stages.<stage>.<field>=...` (the
eval stage: `--config.eval.<field>`).
"""

import ml_collections

from evalign_jax import config_utils

# Fine-tuning from trained weights: 5x below the runlocal rate, which trains from scratch.
FINETUNE_LR = 2e-4
FINETUNE_STEPS = 300


def get_config(arg=None):
  arg = config_utils.parse_arg(arg, tiny=False, scratch=False, ablation=False)
  variant = "tiny" if arg.tiny else "runlocal"
  stage = lambda spec: config_utils.load_config(f"configs/{spec}")
  config = ml_collections.ConfigDict()
  config.stage = "quickstart"
  config.stages = ml_collections.ConfigDict(sort_keys=False)   # trained in this order
  if arg.scratch or arg.tiny:
    config.stages.rgb_slpt = stage(f"rgb_slpt.py:{variant}")
    config.stages.ssmer = stage(f"ssmer.py:{variant}")
    rgb, ssmer = "rgb_slpt", "ssmer"
  else:
    rgb, ssmer = "pretrained:rgb_slpt", "pretrained:ssmer"
  config.stages.slpt_event = stage(f"cmfa.py:{variant},model=slpt_event")
  config.stages.slpt_event.init.aligner_from = rgb
  config.stages.cmfa = stage(f"cmfa.py:{variant}")
  config.stages.cmfa.init.update(rgb_from=rgb, aligner_from=rgb, event_from=ssmer)
  if arg.ablation:
    config.stages.cmfa_no_ssmer = stage(f"cmfa.py:{variant}")
    config.stages.cmfa_no_ssmer.init.update(rgb_from=rgb, aligner_from=rgb)
  for name in ("slpt_event", "cmfa", "cmfa_no_ssmer"):
    if name in config.stages and not arg.tiny:
      config.stages[name].optimizer.lr = FINETUNE_LR
      config.stages[name].total_steps = FINETUNE_STEPS
  config.eval = stage(f"eval.py:{variant}")
  # Evaluated on the test split, in the table's order: "mean_shape" (the baseline), a stage
  # of this run, or any export ("pretrained:rgb_slpt" sees RGB crops, as it was trained).
  config.compare = ("mean_shape", rgb) + tuple(
      n for n in ("slpt_event", "cmfa_no_ssmer", "cmfa") if n in config.stages)
  if arg.ablation:
    # The default synthetic_faces (1,920 training crops), batches of 16, longer runs.
    for c in config.stages.values():
      c.batch_size = 16
      c.total_steps = 2000
      c.optimizer.decay_epochs = (12.5, 15)     # x0.1 at steps 1,500 and 1,800
      c.evals.val.every = 100

  # Knobs of every stage, written once: the stages' fields refer to these.
  first = next(iter(config.stages.values()))
  config.dataset = "synthetic_faces" if arg.ablation else first.dataset
  config.data_dir, config.seed = first.data_dir, first.seed
  config.steps = {name: config.stages[name].total_steps for name in config.stages}
  for name, c in config.stages.items():
    c.dataset, c.data_dir = config.get_ref("dataset"), config.get_ref("data_dir")
    c.seed = config.get_ref("seed")
    c.total_steps = c.checkpoint.every = config.steps.get_ref(name)
    for entry in c.evals.values():
      if not arg.ablation:
        entry.every = config.steps.get_ref(name)
      entry.batch_size = c.batch_size   # validation batches as large as the training ones
  config.eval.dataset, config.eval.data_dir = config.get_ref("dataset"), config.get_ref("data_dir")
  config.eval.evals.test.batch_size = first.batch_size
  return config
