"""Reading and writing event files: AEDAT4, Prophesee EVT2/EVT2.1/EVT3 and DAT, HDF5 and npz.

Every reader returns `Events` (t int64 µs, x/y uint16, p uint8 0/1) and validates each block it
reads: coordinates on the sensor, timestamps non-decreasing within and across blocks. AEDAT4,
EVT2, EVT3 and DAT are decoded by faery; EVT2.1 is decoded here (faery 0.7.1 panics on it); HDF5
goes through h5py; npz through zipfile, so streaming never holds a whole array. Every problem
with a file is an `EventFileError` naming the file. Writers are atomic: a temporary file in the
target directory, then `os.replace`.

The sensor size is the caller's `sensor_size`, else the file's (a Prophesee header's geometry),
else inferred: from the camera a Prophesee header names (`cameras.py`), else from the events'
extent (Prophesee: the smallest known sensor of the format holding them; npz/HDF5: the largest
coordinates). An inferred size is announced once per open, by a warning naming the file and the
guess, and recorded as `metadata["sensor_size_inferred"]` = {"sensor_size": [h, w], "from": how}.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import re
import tempfile
import warnings
import zipfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from evalign_jax.events import cameras, prophesee
from evalign_jax.events.events import EventFileError, Events, check_coordinates, first_decrease

SUPPORTED_FORMATS = ("aedat4", "evt2", "evt2.1", "evt3", "dat", "hdf5", "npz")
WRITABLE_FORMATS = ("aedat4", "evt2", "evt3", "dat", "hdf5", "npz")

_BLOCK = 1 << 15                 # events (or words) per read: bounded memory, few Python steps
_DEFAULT_CHUNK_EVENTS = 1_000_000
_MAGIC = ((b"#!AER-DAT4.0", "aedat4"), (b"\x89HDF\r\n\x1a\n", "hdf5"), (b"PK\x03\x04", "npz"))
_EXTENSIONS = {".aedat4": "aedat4", ".h5": "hdf5", ".hdf5": "hdf5", ".npz": "npz", ".dat": "dat"}
_ALIASES = {"h5": "hdf5", "aedat": "aedat4", "evt21": "evt2.1", "evt2.0": "evt2", "evt3.0": "evt3"}
_FAERY_TYPE = {"aedat4": "aedat", "evt2": "evt", "evt3": "evt", "dat": "dat"}
# Largest sensor side each faery format can address (EVT: 11-bit x/y, DAT2: 14-bit x/y).
_MAX_SIDE = {"evt2": 2048, "evt3": 2048, "dat": 16384, "aedat4": 32767}



# ----------------------------------------------------------------------------------------------
# Errors and small checks


def _foreign_problem(e: BaseException, kind: str, size_note: str = "") -> str:
  """Plain words for a library exception (faery's Rust errors arrive as strings)."""
  low = str(e).lower()
  if isinstance(e, FileNotFoundError) or "no such file" in low:
    what = "file not found"
  elif isinstance(e, EOFError) or "failed to fill whole buffer" in low or "truncat" in low:
    what = f"truncated {kind} file (it ends in the middle of its data)"
  elif isinstance(e, zipfile.BadZipFile):
    what = f"corrupt or truncated {kind} file (not a readable zip archive)"
  elif "not yet implemented" in low or "unsupported" in low:
    what = f"unsupported {kind} content"
  elif "overflow" in low:
    what = f"corrupt {kind} data or wrong sensor size (an event lies outside the sensor{size_note})"
  else:
    what = f"corrupt {kind} file"
  return f"{what} ({type(e).__name__}: {e})"


@contextlib.contextmanager
def _foreign_errors(path, kind: str, writing: bool = False, size_note: str = ""):
  """Re-raises library errors (and faery's Rust panics) as EventFileError naming `path`.

  `size_note` follows "an event lies outside the sensor" when the library says so.
  """
  try:
    yield
  except EventFileError:
    raise
  except BaseException as e:
    # pyo3's PanicException derives from BaseException; KeyboardInterrupt etc. must pass.
    if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
      raise
    if writing:
      raise EventFileError(f"{path}: writing {kind} failed ({type(e).__name__}: {e})") from e
    raise EventFileError(f"{path}: {_foreign_problem(e, kind, size_note)}") from e


def _existing_file(path) -> pathlib.Path:
  path = pathlib.Path(os.fspath(path))
  try:
    size = path.stat().st_size
  except FileNotFoundError:
    raise EventFileError(f"{path}: file not found") from None
  except OSError as e:
    raise EventFileError(f"{path}: cannot read ({e})") from e
  if not path.is_file():
    raise EventFileError(f"{path}: not a regular file")
  if size == 0:
    raise EventFileError(f"{path}: empty file (0 bytes)")
  return path


def _format_name(format: str, path) -> str:
  fmt = _ALIASES.get(str(format).lower(), str(format).lower())
  if fmt not in SUPPORTED_FORMATS:
    raise EventFileError(f"{path}: unknown format {format!r}; supported: {SUPPORTED_FORMATS}")
  return fmt


def _sensor_size(sensor_size, path) -> tuple[int, int] | None:
  if sensor_size is None:
    return None
  h, w = (int(s) for s in sensor_size)
  if not (0 < h < 65536 and 0 < w < 65536):
    raise EventFileError(f"{path}: sensor_size must be (height, width) in 1..65535, got {h, w}")
  return h, w


def parse_sensor_size(text: str) -> tuple[int, int]:
  """(height, width) from "HxW" text, e.g. "480x640" (command lines); ValueError otherwise.

  Note the order: height first, as `sensor_size` everywhere here (Prophesee headers write
  width x height).
  """
  match = re.fullmatch(r"\s*(\d+)[xX](\d+)\s*", str(text))
  size = tuple(int(v) for v in match.groups()) if match else None
  if size is None or not all(0 < v < 65536 for v in size):
    raise ValueError(f"sensor size must be HxW (height x width, each 1..65535), e.g. 480x640; "
                     f"got {text!r}")
  return size


def _size_from_coordinates(max_x: int, max_y: int) -> tuple[tuple[int, int], str]:
  """npz/HDF5 without a size: the smallest sensor holding every event, and how it was found."""
  return (int(max_y) + 1, int(max_x) + 1), f"the largest coordinates (x={max_x}, y={max_y})"


def _size_from_extent(source: "_Source", fmt: str) -> tuple[tuple[int, int], str]:
  """A Prophesee file naming no size or camera: the smallest known `fmt` sensor holding every
  event, found by decoding the whole file once (bounded memory), and how it was found."""
  max_x = max_y = -1
  for _, _, x, y, _ in source.blocks():
    if len(x):
      max_x, max_y = max(max_x, int(np.max(x))), max(max_y, int(np.max(y)))
  lacking = f"{source.path}: the {fmt} header gives no sensor geometry and names no known camera"
  if max_x < 0:
    raise EventFileError(f"{lacking}, and there are no events to infer it from; pass "
                         "sensor_size=(height, width)")
  size = cameras.sensor_size_from_extent(fmt, max_x, max_y)
  known = ", ".join(f"{w}x{h}" for h, w in cameras.KNOWN_SENSORS[fmt])
  if size is None:
    raise EventFileError(f"{lacking}, and its events (x up to {max_x}, y up to {max_y}) fit no "
                         f"known {fmt} sensor ({known}, width x height); pass "
                         "sensor_size=(height, width)")
  return size, (f"the events' extent (x up to {max_x}, y up to {max_y}: the smallest of the "
                f"known {fmt} sensors {known} holding them)")


# ----------------------------------------------------------------------------------------------
# Format detection


def detect_format(path) -> str:
  """The format of an event file, from its first bytes, else from its extension.

  Returns one of SUPPORTED_FORMATS. Raises EventFileError for a missing or empty file, a .raw
  whose header does not give the EVT version (pass format=), or an unknown format.
  """
  path = _existing_file(path)
  with open(path, "rb") as f:
    head = f.read(16)
  for magic, fmt in _MAGIC:
    if head.startswith(magic):
      return fmt
  suffix = path.suffix.lower()
  if head.startswith(b"%"):
    hdr = prophesee.read_header(path)
    if hdr.evt is not None:
      if hdr.evt.startswith("?"):
        raise EventFileError(f"{path}: unsupported EVT version {hdr.evt[1:]!r} in the header")
      return hdr.evt
    if hdr.dat is not None or suffix == ".dat":
      return "dat"
  if suffix in (".raw", ".evt"):
    raise EventFileError(f"{path}: the header does not say which EVT version this .raw file "
                         "uses; pass format='evt2', 'evt2.1' or 'evt3'")
  if suffix in _EXTENSIONS:
    return _EXTENSIONS[suffix]
  raise EventFileError(f"{path}: unknown event file format (neither its first bytes nor the "
                       f"extension {suffix!r} identify it); supported: {SUPPORTED_FORMATS}")


# ----------------------------------------------------------------------------------------------
# Sources: one per format; each knows its sensor size and yields raw blocks in file order.


class _Source:
  path: pathlib.Path
  sensor_size: tuple[int, int]
  metadata: dict[str, Any] = {}
  size_origin: str | None = None   # where a Prophesee file's size came from, for messages
  inferred: str | None = None      # how the size was guessed; None when given or stored

  def blocks(self, t_start=None, t_end=None) -> Iterator[tuple]:
    """Yields (index of first event, t, x, y, p) raw arrays; the window is only a hint."""
    raise NotImplementedError


class _FaerySource(_Source):
  """AEDAT4, EVT2, EVT3 and DAT through faery, packet by packet."""

  size_note = ""       # for faery's "overflow": the header size it bounded the events by
  strip_size = False   # decode a copy without the header's size (a larger sensor_size given)

  def __init__(self, path, fmt, sensor_size):
    import faery
    self.path, self.fmt = path, fmt
    self.kwargs: dict[str, Any] = {"file_type": _FAERY_TYPE[fmt]}
    self.has_data = True
    if fmt == "aedat4":
      with _foreign_errors(path, fmt):
        w, h = faery.events_stream_from_file(path, **self.kwargs).dimensions()
      self.sensor_size = sensor_size or (h, w)
    else:
      layout = self.layout = prophesee.PropheseeLayout(path, fmt, sensor_size)
      self.has_data = layout.has_data
      # faery bounds events by the header's size when it has one, else by this fallback: the
      # format's whole address space, so that our own check (which names the event) decides.
      self.kwargs.update(dimensions_fallback=(_MAX_SIDE[fmt],) * 2,
                         version_fallback=layout.version)
      header = layout.header.size
      self.size_note = "" if header is None else (
          f": {header[1]}x{header[0]} (width x height) from {layout.header.size_lines}; pass "
          "sensor_size=(height, width) if it is wrong")
      # A larger explicit size than the header's is read from a copy without the header's size.
      self.strip_size = sensor_size is not None and header is not None and (
          sensor_size[0] > header[0] or sensor_size[1] > header[1])
      self.sensor_size, self.size_origin = layout.sensor_size, layout.size_origin
      if layout.inferred:
        if self.sensor_size is None:
          self.sensor_size, self.size_origin = _size_from_extent(self, fmt)
        self.inferred = self.size_origin

  def blocks(self, t_start=None, t_end=None):
    if not self.has_data:   # faery cannot read a header-only DAT; nothing to decode anyway
      return
    import faery
    first, path = 0, self.path
    if self.strip_size:
      path = self._copy_without_size()
    try:
      with _foreign_errors(self.path, self.fmt, size_note=self.size_note):
        packets = iter(faery.events_stream_from_file(path, **self.kwargs))
        with contextlib.closing(packets):
          for packet in packets:
            yield first, packet["t"], packet["x"], packet["y"], packet["on"]
            first += len(packet)
    finally:
      if path != self.path:
        path.unlink(missing_ok=True)

  def _copy_without_size(self) -> pathlib.Path:
    fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix)
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
      prophesee.copy_without_size(self.path, self.layout.header, tmp)
    except OSError as e:
      tmp.unlink(missing_ok=True)
      raise EventFileError(f"{self.path}: sensor_size is larger than the header's geometry, "
                           f"and copying the file without it to {tmp.parent} failed ({e})") from e
    return tmp


class _Evt21Source(_Source):
  """EVT2.1 decoded here, vectorised per block of 64-bit words (Prophesee's public spec).

  Word layout (type in the top 4 bits): EVT_NEG 0x0 / EVT_POS 0x1 carry 6 timestamp LSBs (bits
  59..54), the x of a 32-pixel group (53..43), y (42..32) and a 32-bit mask of which pixels
  x..x+31 fired; EVT_TIME_HIGH 0x8 carries timestamp >> 6 (bits 59..32). Other types carry no
  CD events. Events before the first TIME_HIGH are dropped (their time is unknown), as OpenEB does.
  """

  def __init__(self, path, sensor_size):
    self.path, self.layout = path, prophesee.PropheseeLayout(path, "evt2.1", sensor_size)
    self.sensor_size, self.size_origin = self.layout.sensor_size, self.layout.size_origin
    if self.layout.inferred:
      if self.sensor_size is None:
        self.sensor_size, self.size_origin = _size_from_extent(self, "evt2.1")
      self.inferred = self.size_origin

  def blocks(self, t_start=None, t_end=None):
    state = {"raw": None, "loops": 0, "base": -1}
    first = 0
    with open(self.path, "rb") as f:
      f.seek(self.layout.data_offset)
      while buf := f.read(8 * _BLOCK):
        if len(buf) % 8:
          raise EventFileError(f"{self.path}: truncated evt2.1 file (a partial 8-byte word)")
        t, x, y, p = prophesee.decode_evt21(np.frombuffer(buf, "<u8"), state, self.layout.header)
        yield first, t, x, y, p
        first += len(t)


class _Hdf5Source(_Source):
  """DSEC layout (events/{x,y,t,p} + root t_offset) or flat root x, y, t, p datasets."""

  def __init__(self, path, sensor_size):
    import h5py
    self.path = path
    with _foreign_errors(path, "HDF5"), h5py.File(path, "r") as f:
      if isinstance(f.get("events"), h5py.Group):
        self.group = "events"
      elif all(k in f for k in "xytp"):
        self.group = "/"
      else:
        raise EventFileError(f"{path}: no event datasets in the HDF5 file (expected events/x, "
                             f"events/y, events/t, events/p or root x, y, t, p; found {list(f)})")
      g = f[self.group]
      missing = [k for k in "xytp" if not isinstance(g.get(k), h5py.Dataset)]
      if missing:
        raise EventFileError(f"{path}: HDF5 group {self.group!r} lacks datasets {missing}")
      shapes = {k: g[k].shape for k in "xytp"}
      if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise EventFileError(f"{path}: HDF5 x, y, t, p must be 1-D and of equal length, got "
                             f"{shapes}")
      self.n = shapes["t"][0]
      self.t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0
      self.metadata = json.loads(f.attrs["metadata"]) if "metadata" in f.attrs else {}
      stored = next(((int(o.attrs["height"]), int(o.attrs["width"])) for o in (f, g)
                     if "height" in o.attrs and "width" in o.attrs), None)
      stored = _sensor_size(stored, path)
      if sensor_size is None and stored is None:
        if not self.n:
          raise EventFileError(f"{path}: no sensor size stored and no events to infer it from; "
                               "pass sensor_size=(height, width)")
        max_x = max(int(g["x"][i:i + _BLOCK].max()) for i in range(0, self.n, _BLOCK))
        max_y = max(int(g["y"][i:i + _BLOCK].max()) for i in range(0, self.n, _BLOCK))
        stored, self.inferred = _size_from_coordinates(max_x, max_y)
    self.sensor_size = sensor_size or stored

  def _lower_bound(self, t_ds, t_us) -> int:
    """First index whose timestamp is >= t_us, by bisection (log2(N) single-element reads)."""
    lo, hi = 0, self.n
    while lo < hi:
      mid = (lo + hi) // 2
      if t_ds[mid].item() + self.t_offset < t_us:
        lo = mid + 1
      else:
        hi = mid
    return lo

  def blocks(self, t_start=None, t_end=None):
    import h5py
    with _foreign_errors(self.path, "HDF5"), h5py.File(self.path, "r") as f:
      g = f[self.group]
      lo = 0 if t_start is None else self._lower_bound(g["t"], t_start)
      hi = self.n if t_end is None else max(lo, self._lower_bound(g["t"], t_end))
      for i in range(lo, hi, _BLOCK):
        j = min(i + _BLOCK, hi)
        t = g["t"][i:j]
        if self.t_offset:
          t = t.astype(np.int64 if np.issubdtype(t.dtype, np.integer) else np.float64)
          t = t + self.t_offset
        yield i, t, g["x"][i:j], g["y"][i:j], g["p"][i:j]


class _NpyMember:
  """A 1-D array inside an npz read block by block from its (possibly deflated) zip stream."""

  def __init__(self, zf: zipfile.ZipFile, name: str, path):
    self.stream = zf.open(name + ".npy")
    fmt = np.lib.format
    try:
      version = fmt.read_magic(self.stream)
      reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
      shape, fortran, self.dtype = reader(self.stream)
    except ValueError as e:
      raise EventFileError(f"{path}: corrupt .npy header for array {name!r} ({e})") from e
    if fortran or len(shape) != 1 or self.dtype.hasobject:
      raise EventFileError(f"{path}: array {name!r} must be a 1-D numeric C-order array, got "
                           f"shape {shape}, dtype {self.dtype}, fortran_order={fortran}")
    self.n, self.name, self.path = shape[0], name, path

  def read(self, n: int) -> np.ndarray:
    buf = self.stream.read(n * self.dtype.itemsize)
    if len(buf) != n * self.dtype.itemsize:
      raise EventFileError(f"{self.path}: truncated npz file (array {self.name!r} ends early)")
    return np.frombuffer(buf, self.dtype)


class _NpzSource(_Source):
  """Keys t, x, y, p (+ sensor_size as (height, width), + metadata as a JSON string)."""

  def __init__(self, path, sensor_size):
    self.path = path
    with _foreign_errors(path, "npz"), zipfile.ZipFile(path) as zf:
      names = set(zf.namelist())
      missing = [k for k in "txyp" if k + ".npy" not in names]
      if missing:
        raise EventFileError(f"{path}: npz file lacks arrays {missing} (needs t, x, y, p)")
      lengths = {k: _NpyMember(zf, k, path).n for k in "txyp"}
      if len(set(lengths.values())) != 1:
        raise EventFileError(f"{path}: npz arrays t, x, y, p differ in length: {lengths}")
      self.n = lengths["t"]
      read = lambda k: np.lib.format.read_array(zf.open(k + ".npy"), allow_pickle=False)
      self.metadata = json.loads(str(read("metadata"))) if "metadata.npy" in names else {}
      stored = None
      if "sensor_size.npy" in names:
        stored = tuple(int(s) for s in np.ravel(read("sensor_size")))
        if len(stored) != 2:
          raise EventFileError(f"{path}: sensor_size must hold (height, width), got {stored}")
        stored = _sensor_size(stored, path)
      elif sensor_size is None:
        if not self.n:
          raise EventFileError(f"{path}: no sensor size stored and no events to infer it from; "
                               "pass sensor_size=(height, width)")
        maxima = {}
        for k in "xy":
          member = _NpyMember(zf, k, path)
          maxima[k] = max(int(member.read(min(_BLOCK, self.n - i)).max())
                          for i in range(0, self.n, _BLOCK))
        stored, self.inferred = _size_from_coordinates(maxima["x"], maxima["y"])
    self.sensor_size = sensor_size or stored

  def blocks(self, t_start=None, t_end=None):
    with _foreign_errors(self.path, "npz"), zipfile.ZipFile(self.path) as zf:
      members = [_NpyMember(zf, k, self.path) for k in "txyp"]
      for i in range(0, self.n, _BLOCK):
        m = min(_BLOCK, self.n - i)
        yield (i, *(member.read(m) for member in members))


def _open(path, format, sensor_size) -> _Source:
  """The file's source; an inferred sensor size is announced here, once per open."""
  path = _existing_file(path)
  fmt = detect_format(path) if format is None else _format_name(format, path)
  size = _sensor_size(sensor_size, path)
  if fmt == "npz":
    source = _NpzSource(path, size)
  elif fmt == "hdf5":
    source = _Hdf5Source(path, size)
  elif fmt == "evt2.1":
    source = _Evt21Source(path, size)
  else:
    source = _FaerySource(path, fmt, size)
  if source.inferred:
    # stacklevel 3: the caller of read_events / iter_event_chunks.
    warnings.warn(f"{path}: no sensor size in the file; inferred (height, width)="
                  f"{source.sensor_size} from {source.inferred}. Pass sensor_size=(height, "
                  "width) to set it.", stacklevel=3)
    source.metadata = {**source.metadata, "sensor_size_inferred": {
        "sensor_size": list(source.sensor_size), "from": source.inferred}}
  return source


def _validated(source: _Source, on_decrease: Callable[[int, Any, Any], None],
               t_start=None, t_end=None) -> Iterator[Events]:
  """Non-empty Events blocks in file order, each checked and sorted within itself.

  `on_decrease(index, t_before, t_after)` is called where time first runs backwards in a block or
  across a block boundary; it raises, or records that the caller must sort.
  """
  last = None
  for first, t, x, y, p in source.blocks(t_start, t_end):
    if len(t) == 0:
      continue
    if source.size_origin is not None:
      try:
        check_coordinates(x, y, source.sensor_size, str(source.path))
      except EventFileError as e:
        raise EventFileError(f"{e}; the size comes from {source.size_origin}; pass "
                             "sensor_size=(height, width) if it is wrong") from None
    ev = Events.from_arrays(t, x, y, p, source.sensor_size, metadata=source.metadata,
                            source=str(source.path), sort=True)
    bad = first_decrease(np.asarray(t))
    if last is not None and t[0] < last:
      on_decrease(first, last, t[0])
    elif bad is not None:
      on_decrease(first + bad, t[bad - 1], t[bad])
    last = int(ev.t[-1])
    yield ev


def _joined(parts: list[Events], source: _Source) -> Events:
  if not parts:
    return Events.empty(source.sensor_size, source.metadata)
  return parts[0] if len(parts) == 1 else Events.concatenate(parts)


# ----------------------------------------------------------------------------------------------
# Public readers


def read_events(path, *, format: str | None = None, t_start_us: int | None = None,
                t_end_us: int | None = None, sensor_size: Sequence[int] | None = None,
                sort: bool = False) -> Events:
  """Reads an event file, or only the events with t_start_us <= t < t_end_us.

  Args:
    path: the file; its format comes from `format` or `detect_format`.
    format: one of SUPPORTED_FORMATS to skip detection.
    t_start_us, t_end_us: optional half-open window in µs (either may be None). Without
      `sort`, reading stops at the window's end (HDF5 seeks to it by bisection), so only the
      part of the file read so far is checked.
    sensor_size: (height, width); overrides the file's (events outside it are an
      EventFileError). Without it the size is the file's, else inferred with a warning (see the
      module docstring): e.g. an old Prophesee recording naming only its camera.
    sort: if timestamps decrease, sort them stably and warn (default: EventFileError).

  Returns:
    Events with the file's metadata (npz/HDF5 written by `write_events`).
  """
  source = _open(path, format, sensor_size)
  decreases = []

  def on_decrease(index, before, after):
    if not sort:
      raise EventFileError(f"{source.path}: timestamps decrease at event {index} ({before} µs -> "
                           f"{after} µs); pass sort=True to sort them")
    decreases.append(index)

  lo = -np.inf if t_start_us is None else t_start_us
  hi = np.inf if t_end_us is None else t_end_us
  windowed = t_start_us is not None or t_end_us is not None
  hint = (None, None) if sort else (t_start_us, t_end_us)
  parts = []
  with contextlib.closing(_validated(source, on_decrease, *hint)) as blocks:
    for ev in blocks:
      past_end = not sort and ev.t[-1] >= hi
      if windowed:
        ev = ev[(ev.t >= lo) & (ev.t < hi)]
      if len(ev):
        parts.append(ev)
      if past_end:
        break
  events = _joined(parts, source)
  if decreases:
    warnings.warn(f"{source.path}: timestamps decrease (first at event {decreases[0]}); sorted "
                  "them (stable sort)", stacklevel=2)
    events = events[np.argsort(events.t, kind="stable")]
  return events


def iter_event_chunks(path, *, chunk_us: int | None = None, chunk_events: int | None = None,
                      format: str | None = None,
                      sensor_size: Sequence[int] | None = None) -> Iterator[Events]:
  """Streams a file of any size in bounded memory, as consecutive Events chunks.

  Args:
    chunk_events: chunks of exactly this many events (the last may be shorter). The default
      (when neither is given) is 1_000_000.
    chunk_us: windows [t0 + k*chunk_us, t0 + (k+1)*chunk_us), t0 the first event's time, from
      the first window to the one holding the last event, empty windows included, so the k-th
      chunk always covers that span.
    format, sensor_size: as for `read_events`.

  The file is opened and its header checked at call time; decreasing timestamps raise
  EventFileError while iterating (streaming cannot sort; use read_events(sort=True)).
  """
  if chunk_us is not None and chunk_events is not None:
    raise ValueError("give chunk_us or chunk_events, not both")
  if chunk_us is None and chunk_events is None:
    chunk_events = _DEFAULT_CHUNK_EVENTS
  size = chunk_us if chunk_us is not None else chunk_events
  if int(size) != size or size <= 0:
    raise ValueError(f"chunk size must be a positive integer, got {size}")
  source = _open(path, format, sensor_size)

  def on_decrease(index, before, after):
    raise EventFileError(f"{source.path}: timestamps decrease at event {index} ({before} µs -> "
                         f"{after} µs); streaming cannot sort them, use read_events(path, "
                         "sort=True)")

  blocks = _validated(source, on_decrease)
  if chunk_us is not None:
    return _by_time(blocks, int(chunk_us), source)
  return _by_count(blocks, int(chunk_events), source)


def _by_count(blocks: Iterator[Events], n: int, source: _Source) -> Iterator[Events]:
  # Blocks are copied straight into a chunk-sized buffer: no list of pieces plus a
  # concatenated copy, so memory stays near one chunk (plus the one the caller holds).
  fields = (("t", np.int64), ("x", np.uint16), ("y", np.uint16), ("p", np.uint8))
  buf, filled = None, 0
  with contextlib.closing(blocks):
    for ev in blocks:
      i = 0
      while i < len(ev):
        if buf is None:
          buf, filled = {k: np.empty(n, dtype) for k, dtype in fields}, 0
        take = min(n - filled, len(ev) - i)
        for k, _ in fields:
          buf[k][filled:filled + take] = getattr(ev, k)[i:i + take]
        filled, i = filled + take, i + take
        if filled == n:
          yield Events(**buf, sensor_size=source.sensor_size, metadata=dict(source.metadata))
          buf = None
  if buf is not None and filled:
    yield Events(**{k: buf[k][:filled].copy() for k, _ in fields},
                 sensor_size=source.sensor_size, metadata=dict(source.metadata))


def _by_time(blocks: Iterator[Events], width: int, source: _Source) -> Iterator[Events]:
  pending, end = [], None
  with contextlib.closing(blocks):
    for ev in blocks:
      if end is None:
        end = int(ev.t[0]) + width
      while True:
        i = int(np.searchsorted(ev.t, end, side="left"))
        if i == len(ev):
          pending.append(ev)
          break
        if i:
          pending.append(ev[:i])
        yield _joined(pending, source)   # empty when no event fell in this window
        pending, end, ev = [], end + width, ev[i:]
  if end is not None:
    yield _joined(pending, source)


# ----------------------------------------------------------------------------------------------
# Writer


@functools.cache
def _packet_stream_class():
  import faery

  class _Packets(faery.FiniteEventsStream):
    """Events as faery packets of at most _BLOCK events (faery's own .chunks() never ends)."""

    def __init__(self, events: Events):
      super().__init__()
      self.events = events

    def __iter__(self):
      ev = self.events
      for i in range(0, len(ev), _BLOCK):
        packet = np.zeros(min(_BLOCK, len(ev) - i), dtype=faery.EVENTS_DTYPE)
        j = i + len(packet)
        packet["t"], packet["x"], packet["y"] = ev.t[i:j], ev.x[i:j], ev.y[i:j]
        packet["on"] = ev.p[i:j] != 0
        yield packet

    def dimensions(self):
      return (self.events.width, self.events.height)

    def time_range(self):
      t = self.events.t
      if not len(t):
        return (faery.Time(microseconds=0), faery.Time(microseconds=1))
      return (faery.Time(microseconds=int(t[0])), faery.Time(microseconds=int(t[-1]) + 1))

  return _Packets


def _write_faery(tmp: pathlib.Path, events: Events, fmt: str):
  version = {"evt2": "evt2", "evt3": "evt3", "dat": "dat2"}.get(fmt)
  _packet_stream_class()(events).to_file(tmp, version=version, file_type=_FAERY_TYPE[fmt])
  if fmt == "dat" and not len(events):
    # faery writes no event type/size bytes without events; add them so the file is valid DAT.
    with open(tmp, "ab") as f:
      f.write(bytes([0x0C, 8]))


def _write_hdf5(tmp: pathlib.Path, events: Events, metadata: str):
  import h5py
  n = len(events)
  t0 = int(events.t[0]) if n else 0
  with h5py.File(tmp, "w") as f:
    f.attrs["height"], f.attrs["width"] = events.sensor_size
    group = f.create_group("events")
    chunks = (min(max(n, 1), _BLOCK),)
    for name, data in (("t", events.t - t0), ("x", events.x), ("y", events.y), ("p", events.p)):
      group.create_dataset(name, data=data, chunks=chunks, maxshape=(None,))
    f.create_dataset("t_offset", data=np.int64(t0))
    f.attrs["metadata"] = metadata


def _write_npz(tmp: pathlib.Path, events: Events, metadata: str):
  with open(tmp, "wb") as f:
    np.savez(f, t=events.t, x=events.x, y=events.y, p=events.p,
             sensor_size=np.asarray(events.sensor_size, np.int64), metadata=np.asarray(metadata))


def write_events(path, events: Events, *, format: str | None = None) -> None:
  """Writes `events` atomically (temporary file in the same directory, then os.replace).

  Args:
    path: target file; an existing file is replaced only once the new one is complete.
    events: a time-sorted stream with every event on its sensor.
    format: one of WRITABLE_FORMATS; by default from the extension (.npz, .h5/.hdf5, .aedat4,
      .dat, and .raw as evt3). npz and HDF5 keep `events.metadata` (as JSON); faery formats
      (AEDAT4, EVT2, EVT3, DAT) drop it.
  """
  path = pathlib.Path(os.fspath(path))
  if not isinstance(events, Events):
    raise TypeError(f"write_events needs an Events, got {type(events).__name__}")
  if format is None:
    suffix = path.suffix.lower()
    fmt = "evt3" if suffix == ".raw" else _EXTENSIONS.get(suffix)
    if fmt is None:
      raise EventFileError(f"{path}: cannot tell the format from the extension {suffix!r}; "
                           f"pass format= (one of {WRITABLE_FORMATS})")
  else:
    fmt = _format_name(format, path)
  if fmt not in WRITABLE_FORMATS:
    raise EventFileError(f"{path}: cannot write {fmt} (faery has no encoder for it); "
                         f"writable: {WRITABLE_FORMATS}")
  check_coordinates(events.x, events.y, events.sensor_size, str(path))
  bad = first_decrease(events.t)
  if bad is not None:
    raise EventFileError(f"{path}: timestamps decrease at event {bad}; sort the events first")
  if fmt in _MAX_SIDE:
    if len(events) and events.t[0] < 0:
      raise EventFileError(f"{path}: {fmt} cannot store negative timestamps (first is "
                           f"{events.t[0]} µs)")
    if max(events.sensor_size) > _MAX_SIDE[fmt]:
      raise EventFileError(f"{path}: {fmt} cannot address a {events.sensor_size} sensor "
                           f"(at most {_MAX_SIDE[fmt]} pixels a side)")
  try:
    metadata = json.dumps(events.metadata)
  except (TypeError, ValueError) as e:
    raise EventFileError(f"{path}: metadata is not JSON-serialisable ({e})") from e
  try:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  except FileNotFoundError as e:
    raise EventFileError(f"{path}: cannot write, directory {path.parent} does not exist") from e
  except OSError as e:
    raise EventFileError(f"{path}: cannot create a temporary file beside it ({e})") from e
  os.close(fd)
  tmp = pathlib.Path(name)
  try:
    with _foreign_errors(path, fmt, writing=True):
      if fmt == "npz":
        _write_npz(tmp, events, metadata)
      elif fmt == "hdf5":
        _write_hdf5(tmp, events, metadata)
      else:
        _write_faery(tmp, events, fmt)
      os.replace(tmp, path)
  finally:
    # faery may leave its own "<name>.write" file when it fails midway.
    for leftover in (tmp, tmp.with_name(tmp.name + ".write")):
      leftover.unlink(missing_ok=True)
