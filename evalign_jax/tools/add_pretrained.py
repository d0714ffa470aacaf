r"""Ships a stage's model with the package: evalign_jax/pretrained/<name>/.

    python -m evalign_jax.tools.add_pretrained --export=workdir/pretrain_rgb_slpt --name=rgb_slpt
    python -m evalign_jax.tools.add_pretrained --export=workdir/pretrain_ssmer --step=1000 \
        --name=ssmer

Copies the stage's export (its `state/` and `config.json`), or with `--step` exports the model
of that checkpoint of the stage's workdir first (a long run stopped before its end), and records
the sha256 of every file in evalign_jax/pretrained/SHA256SUMS; `init.*_from=pretrained:<name>`,
the eval stage and `predict --checkpoint=pretrained:<name>` then load it, after checking every
file against its checksum. How the shipped ones were made: configs/quickstart_pretrain.py.
"""

import json
import os
import shutil

import ml_collections
from absl import app
from absl import flags

from evalign_jax import export
from evalign_jax.trainers import alignment
from evalign_jax.trainers import loop
from evalign_jax.trainers import ssmer

_EXPORT = flags.DEFINE_string("export", None, "A stage's workdir, or an export folder.")
_NAME = flags.DEFINE_string("name", None, "The name it ships under (pretrained:<name>).")
_STEP = flags.DEFINE_integer("step", None, "Ship this checkpoint of the workdir's stage "
                             "instead of its final export.")


def export_step(workdir: str, step: int, directory: str) -> None:
  """Exports the model of `workdir`'s checkpoint at `step` to `directory` (the stage is rebuilt
  from the workdir's config.json, so its dataset must be built)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: not a stage workdir (no config.json)")
  with open(path) as f:
    config_dict = json.load(f)
  config = ml_collections.ConfigDict(config_dict)
  trainer = ssmer if config.stage == "ssmer" else alignment
  loop.export_checkpoint(trainer.build_stage(config), config_dict, workdir, step, directory)


def main(argv):
  del argv
  source = _EXPORT.value
  if _STEP.value is not None:
    source = os.path.join(os.path.expanduser(_EXPORT.value), f"export_step_{_STEP.value}")
    export_step(os.path.expanduser(_EXPORT.value), _STEP.value, source)
  try:
    target = export.add_pretrained(source, _NAME.value)
  finally:
    if _STEP.value is not None:
      shutil.rmtree(source, ignore_errors=True)
  print(f"shipped {_EXPORT.value}" + (f" (step {_STEP.value})" if _STEP.value else "")
        + f" as pretrained:{_NAME.value} in {target}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["export", "name"])
  app.run(main)
