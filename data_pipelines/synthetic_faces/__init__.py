"""synthetic_faces: the procedural face-video generator behind the embedded default dataset.

face_model.py holds the geometry (98 WFLW points in 3-D, identity, expression, pose, projection),
render.py the RGB drawing, clips.py the entry point `render_clip`; the tfds builder is
synthetic_faces_dataset_builder.py.
"""

from data_pipelines.synthetic_faces.clips import (CONDITIONS, Clip, ClipSpec, render_clip,
                                                  render_still, sample_subject)

__all__ = ["CONDITIONS", "Clip", "ClipSpec", "render_clip", "render_still", "sample_subject"]
