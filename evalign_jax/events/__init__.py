"""The event core: containers, file I/O, representations and the video-to-event simulator.

Public API:
  Events, PaddedEvents, EventFileError     containers (events.py)
  read_events, iter_event_chunks, write_events, detect_format      file I/O (io.py)
  event_frame, voxel_grid, time_surface    float64 numpy references (representations.py)
  event_frame_jax, voxel_grid_jax, time_surface_jax   jit/vmap renderers (representations_jax.py)
  RenderConfig, render_image               representation -> 3-channel model image (images.py)
  simulate_events, SimulatorParams, PRESETS                   video -> events (simulator.py)
"""

from evalign_jax.events.events import EventFileError, Events, PaddedEvents
from evalign_jax.events.images import RenderConfig, render_image, representation_image
from evalign_jax.events.io import detect_format, iter_event_chunks, read_events, write_events
from evalign_jax.events.representations import event_frame, time_surface, voxel_grid
from evalign_jax.events.representations_jax import event_frame as event_frame_jax
from evalign_jax.events.representations_jax import time_surface as time_surface_jax
from evalign_jax.events.representations_jax import voxel_grid as voxel_grid_jax
from evalign_jax.events.simulator import PRESETS, SimulatorParams, simulate_events

__all__ = [
    "EventFileError", "Events", "PaddedEvents", "RenderConfig", "render_image",
    "representation_image", "detect_format", "iter_event_chunks", "read_events", "write_events",
    "event_frame", "time_surface", "voxel_grid", "event_frame_jax", "time_surface_jax",
    "voxel_grid_jax", "PRESETS", "SimulatorParams", "simulate_events",
]
