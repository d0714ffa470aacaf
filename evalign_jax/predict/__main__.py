"""Landmarks on an event recording.

  python -m evalign_jax.predict --checkpoint=workdir/slpt_event --events=rec.aedat4 \
      --out=pred [--window_us=33333 [--stride_us=...] | --window_events=N] \
      [--box=x0,y0,x1,y1] [--rgb=FRAMES_DIR_OR_VIDEO [--rgb_times=FILE]] [--overlay=png]

Writes pred/landmarks.csv, pred/overlay.mp4 (or pred/overlay/*.png) and pred/summary.json
(see `evalign_jax/predict/outputs.py`); prints the windows/s. Bad input is a one-line error
naming the input (exit status 1), and no output is published.
"""

from absl import app
from absl import flags

from evalign_jax import predict
from evalign_jax import runtime
from evalign_jax.events import io as events_io
from evalign_jax.predict import outputs

_DEFAULT = predict.Options()   # the defaults, written once in `Options`
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Stage workdir or export folder.")
_EVENTS = flags.DEFINE_string("events", None, "Event file (AEDAT4, EVT2/2.1/3 .raw, DAT, "
                              "HDF5, npz).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_WINDOW_US = flags.DEFINE_integer("window_us", None, "Window length in µs (default "
                                  f"{predict.DEFAULT_WINDOW_US} unless --window_events).")
_STRIDE_US = flags.DEFINE_integer("stride_us", None, "One window every stride_us (divides "
                                  "window_us; default window_us).")
_WINDOW_EVENTS = flags.DEFINE_integer("window_events", None, "Windows of this many events "
                                      "instead of fixed time.")
_BOX = flags.DEFINE_list("box", None, "Face box x0,y0,x1,y1 in sensor pixels (default: found "
                         "from the event density of the first windows).")
_TRACK = flags.DEFINE_bool("track", _DEFAULT.track, "Crop each window around the previous "
                           "window's prediction (one window per device call).")
_RGB = flags.DEFINE_string("rgb", None, "RGB frames: a folder of <µs>.png/.jpg, or a video "
                           "with a timestamps file (CMFA and rgb_slpt need it).")
_RGB_TIMES = flags.DEFINE_string("rgb_times", None, "Video frame times, one µs per line "
                                 "(default <video>.times.txt).")
_RGB_MAX_GAP_US = flags.DEFINE_integer("rgb_max_gap_us", _DEFAULT.rgb_max_gap_us, "Largest "
                                       "distance from a window's end to its RGB frame.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULT.batch_size, "Windows per device call "
                                  "with --notrack.")
_CAPACITY = flags.DEFINE_integer("capacity", _DEFAULT.capacity, "Event slots per crop.")
_MIN_EVENTS = flags.DEFINE_integer("min_events", _DEFAULT.min_events, "Skip windows with fewer "
                                   "events in the crop.")
_OVERLAY = flags.DEFINE_enum("overlay", _DEFAULT.overlay, list(outputs.OVERLAY_KINDS),
                             "Overlay output.")
_OVERLAY_CAPACITY = flags.DEFINE_integer("overlay_capacity", _DEFAULT.overlay_capacity, "Event "
                                         "slots per overlay image (the latest kept).")
_FORMAT = flags.DEFINE_string("format", None, "Event file format, if detection cannot tell.")
_SENSOR_SIZE = flags.DEFINE_string("sensor_size", None, "HxW, height first (e.g. 480x640): "
                                    "overrides the file's (else read or inferred).")
flags.mark_flags_as_required(["checkpoint", "events", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.quiet_library_logs()   # checkpoint loading logs every read at INFO
  runtime.enable_compilation_cache()
  with runtime.user_errors_as_one_line():
    options = predict.Options(
        window_us=_WINDOW_US.value, stride_us=_STRIDE_US.value,
        window_events=_WINDOW_EVENTS.value,
        box=tuple(float(v) for v in _BOX.value) if _BOX.value else None,
        track=_TRACK.value, batch_size=_BATCH_SIZE.value, capacity=_CAPACITY.value,
        min_events=_MIN_EVENTS.value, rgb=_RGB.value, rgb_times=_RGB_TIMES.value,
        rgb_max_gap_us=_RGB_MAX_GAP_US.value, overlay=_OVERLAY.value,
        overlay_capacity=_OVERLAY_CAPACITY.value, format=_FORMAT.value,
        sensor_size=(events_io.parse_sensor_size(_SENSOR_SIZE.value)
                     if _SENSOR_SIZE.value is not None else None))
    summary = predict.run(_CHECKPOINT.value, _EVENTS.value, _OUT.value, options)
  rate = lambda k: f"{summary[k]:.1f}" if summary[k] is not None else "-"
  print(f"{summary['predicted_windows']} of {summary['windows']} windows predicted "
        f"(skipped: {summary['skipped']}); {rate('windows_per_s')} windows/s end to end, "
        f"{rate('model_windows_per_s')} in the model ({summary['device']}); wrote "
        f"{', '.join(summary['outputs'].values())}")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
