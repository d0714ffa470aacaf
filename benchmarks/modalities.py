"""What each input carries in a trained model: test NME with its events or its RGB withheld.

  python benchmarks/modalities.py --exports=workdir/quickstart/cmfa,workdir/ablation/cmfa

Each export (a stage workdir or export folder) predicts its own dataset's test split three
ways: as trained; with every event slot marked invalid (an empty window: the event rendering
the model sees for no events); with the RGB crop a uniform grey. A model whose NME does not
move without events does not use them. Prints one table row per export and input.
"""

import os

import jax.numpy as jnp
from absl import app
from absl import flags
from flax import nnx

from data_pipelines import input_pipeline as ip
from evalign_jax import export
from evalign_jax import models
from evalign_jax.evaluators import landmarks as landmark_eval
from evalign_jax.evaluators import metrics
from evalign_jax.events.images import RenderConfig

_EXPORTS = flags.DEFINE_list("exports", None, "Exports (stage workdirs) to probe.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Where the datasets are built (default: the "
                                "export's own data_dir).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Crops per call.")


def withheld(predict, what: str):
  """`predict` on batches whose events (all slots invalid) or RGB (grey) are withheld."""
  if what == "events":
    return lambda state, b: predict(state, dict(b, events=dict(
        b["events"], valid=jnp.zeros_like(b["events"]["valid"]))))
  return lambda state, b: predict(state, dict(b, image=jnp.full_like(b["image"], 128)))


def main(argv):
  del argv
  print(f"{'export':<28}  {'inputs':<14}  {'NME %':>6}  {'FR@0.1 %':>8}")
  for path in _EXPORTS.value:
    model, cfg = export.load(path)
    size = cfg["image_size"]
    graphdef, state = nnx.split(model)
    predict = landmark_eval.make_predict(graphdef, cfg["model"], size,
                                         RenderConfig.from_config(cfg["render"]))
    source = ip.make_source(cfg["dataset"], os.path.expanduser(_DATA_DIR.value or cfg["data_dir"]),
                            "test")
    inputs = models.model_spec(cfg["model"]).inputs
    runs = [(" + ".join(inputs), predict)]
    if len(inputs) == 2:   # CMFA: each input withheld in turn
      runs += [("rgb only", withheld(predict, "events")), ("events only", withheld(predict, "rgb"))]
    for name, fn in runs:
      res = landmark_eval.predict_split(fn, state, landmark_eval.eval_dataset(
          source, size, _BATCH.value), num_images=0, image_size=size)
      nme = metrics.per_image_nme(res["pred"], res["gt"],
                                  metrics.normalizer(res["gt"], "inter_ocular"))
      print(f"{path:<28}  {name:<14}  {100 * nme.mean():>6.2f}  "
            f"{100 * metrics.failure_rate(nme):>8.2f}", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["exports"])
  app.run(main)
