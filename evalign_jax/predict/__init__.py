"""Landmarks on event recordings: `python -m evalign_jax.predict` (flags in `__main__.py`).

recording.py   the run: windows -> face crops -> the model in batches -> sensor pixels
windows.py     cutting a recording into windows, the face crop, the face box (found, tracked)
rgb.py         timestamped RGB frames for the models that take RGB
outputs.py     landmarks.csv, the overlay and summary.json, published only when complete
"""

from evalign_jax.predict.recording import DEFAULT_WINDOW_US
from evalign_jax.predict.recording import Options
from evalign_jax.predict.recording import Predictor
from evalign_jax.predict.recording import crop_to_sensor
from evalign_jax.predict.recording import load_predictor
from evalign_jax.predict.recording import run

__all__ = ["DEFAULT_WINDOW_US", "Options", "Predictor", "crop_to_sensor", "load_predictor", "run"]
