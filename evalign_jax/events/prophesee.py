"""Prophesee file layout: the '%' text header, word sizes, and an EVT2.1 decoder.

faery decodes EVT2, EVT3 and DAT but reads a cut file silently and assumes 1280x720 when the
header has no geometry, so the header is parsed and the data length checked here; a header
without geometry gets its size from the camera it names (`cameras.py`). faery 0.7.1 cannot
decode EVT2.1 at all, hence `decode_evt21` (vectorised per block of 64-bit words).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np

from evalign_jax.events import cameras
from evalign_jax.events.events import EventFileError

WORD_BYTES = {"evt2": 4, "evt2.1": 8, "evt3": 2}
_EVT_VERSIONS = {"2": "evt2", "2.0": "evt2", "2.1": "evt2.1", "3": "evt3", "3.0": "evt3",
                 "evt2": "evt2", "evt2.0": "evt2", "evt21": "evt2.1", "evt2.1": "evt2.1",
                 "evt3": "evt3", "evt3.0": "evt3"}


@dataclasses.dataclass
class Header:
  length: int = 0                # bytes of '%' lines before the binary data
  evt: str | None = None         # "evt2" | "evt2.1" | "evt3", or "?<text>" if unknown
  dat: str | None = None         # "dat1" | "dat2", or "?<text>"
  width: int | None = None
  height: int | None = None
  t0: int = 0                    # µs added to every timestamp (faery writes it)
  legacy: bool = False           # EVT2.1 with the two 32-bit halves of each word swapped (IMX636)
  truncated: bool = False        # the file ends inside a header line
  fields: dict[str, str] = dataclasses.field(default_factory=dict)   # key (lower case) -> value
  sizes: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # line -> (w, h)

  @property
  def size(self) -> tuple[int, int] | None:
    """(height, width) the header gives (the last line giving it, as faery reads), or None."""
    return None if self.width is None or self.height is None else (self.height, self.width)

  @property
  def size_lines(self) -> str:
    """The lines that gave the size, in words: "the header's geometry line"."""
    return f"the header's {' and '.join(self.sizes)} line{'s' if len(self.sizes) > 1 else ''}"


def read_header(path) -> Header:
  """Parses Prophesee '%' header lines the way faery does (plus the documented '% end')."""
  hdr = Header()
  endianness = None
  with open(path, "rb") as f:
    while True:
      line = f.readline(1 << 16)
      if not line.startswith(b"%"):
        break
      if not line.endswith(b"\n"):
        hdr.truncated = True
        break
      hdr.length += len(line)
      key, _, value = line[1:].decode("latin-1").strip().partition(" ")
      key, value = key.lower(), value.strip()
      if key == "end":
        break
      hdr.fields[key] = value
      try:
        if key == "evt":
          hdr.evt = _EVT_VERSIONS.get(value.lower(), "?" + value)
        elif key == "format":
          name, *options = value.split(";")
          hdr.evt = _EVT_VERSIONS.get(name.strip().lower(), "?" + name)
          opts = dict((k.strip(), v.strip()) for k, _, v in
                      (o.strip().lower().partition("=") for o in options))
          endianness = opts.get("endianness", endianness)
          if "width" in opts and "height" in opts:
            hdr.width, hdr.height = int(opts["width"]), int(opts["height"])
            hdr.sizes["format"] = (hdr.width, hdr.height)
        elif key == "geometry":
          hdr.width, hdr.height = (int(v) for v in value.lower().split("x"))
          hdr.sizes["geometry"] = (hdr.width, hdr.height)
        elif key in ("width", "height"):
          setattr(hdr, key, int(value))
          if hdr.width is not None and hdr.height is not None:
            hdr.sizes["width/height"] = (hdr.width, hdr.height)
        elif key == "version":
          hdr.dat = {"1": "dat1", "2": "dat2"}.get(value, "?" + value)
        elif key == "t0":
          hdr.t0 = int(value)
      except ValueError:
        pass  # a malformed optional field is ignored, as faery does
  # EVT2.1 word order: the format's option, else an "endianness" line, else OpenEB's default.
  endianness = endianness or hdr.fields.get("endianness", "").lower()
  hdr.legacy = (endianness == "legacy" if endianness
                else cameras.evt21_legacy_by_default(hdr.fields))
  return hdr


class PropheseeLayout:
  """Header checks shared by the EVT and DAT sources (faery reads cut files silently).

  Attributes:
    sensor_size: (height, width): `sensor_size` if given, else the header's geometry, else the
      size of the camera the header names; None when only the events' extent can tell.
    size_origin: where sensor_size came from, in words for messages (None when it is given or
      still to be scanned).
    inferred: the size is a guess (a named camera, or the events' extent still to be scanned).
  """

  def __init__(self, path, fmt, sensor_size):
    hdr = read_header(path)
    if hdr.truncated:
      raise EventFileError(f"{path}: truncated header (the file ends inside its '%' lines)")
    given = hdr.evt if fmt != "dat" else hdr.dat
    if fmt == "dat" and hdr.evt is not None:
      raise EventFileError(f"{path}: the header describes an EVT file, not DAT")
    if given is not None and given.startswith("?"):
      raise EventFileError(f"{path}: unsupported {fmt} version {given[1:]!r} in the header")
    if fmt != "dat" and given is not None and given != fmt:
      raise EventFileError(f"{path}: the header says {given} but format={fmt!r} was given")
    self.header, self.data_offset = hdr, hdr.length
    self.sensor_size, self.size_origin, self.inferred = _sensor_size(path, hdr, sensor_size)
    n_data = path.stat().st_size - hdr.length
    self.has_data = n_data > 0
    if fmt == "dat":
      self.version = hdr.dat or "dat2"
      if 0 < n_data < 2:
        raise EventFileError(f"{path}: truncated DAT file (no room for the event type and size)")
      if n_data:
        with open(path, "rb") as f:
          f.seek(hdr.length)
          kind, size = f.read(2)
        if size != 8 or kind not in (0x00, 0x0C):
          raise EventFileError(f"{path}: unsupported DAT content (event type 0x{kind:02x}, size "
                               f"{size}); only 8-byte CD events (type 0x00 or 0x0C) are read")
        n_data -= 2
      word = 8
    else:
      self.version, word = fmt, WORD_BYTES[fmt]
    if n_data % word:
      raise EventFileError(f"{path}: truncated {fmt} file: {n_data} data bytes after the header "
                           f"are not a whole number of {word}-byte words")


def _sensor_size(path, hdr: Header, sensor_size):
  """(size, origin, inferred) as PropheseeLayout documents."""
  if sensor_size is not None:
    return tuple(sensor_size), None, False
  if len(set(hdr.sizes.values())) > 1:
    # OpenEB refuses these too ("Width mismatch between format and geometry keys").
    said = ", ".join(f"its {line} line {w}x{h}" for line, (w, h) in hdr.sizes.items())
    raise EventFileError(f"{path}: the header contradicts itself about the sensor size ({said}; "
                         "width x height); pass sensor_size=(height, width)")
  if hdr.size is not None:
    return hdr.size, hdr.size_lines, False
  camera = cameras.camera_sensor_size(hdr.fields)
  if camera is not None:
    return camera[0], camera[1], True
  return None, None, True


def copy_without_size(path, hdr: Header, dst) -> None:
  """Copies `path` to `dst` without the header's size lines, so faery takes its fallback size.

  faery always decodes with the header's size when it has one and fails on any event outside
  it; this lets a larger explicit sensor_size read a file whose header is wrong.
  """
  with open(path, "rb") as src, open(dst, "wb") as out:
    for line in src.read(hdr.length).splitlines(keepends=True):
      key, _, value = line[1:].decode("latin-1").strip().partition(" ")
      key = key.lower()
      if key in ("geometry", "width", "height"):
        continue
      if key == "format":
        name, *options = value.split(";")
        kept = [o.strip() for o in options
                if o.strip().lower().partition("=")[0].strip() not in ("width", "height")]
        line = ("% format " + ";".join([name.strip()] + kept) + "\n").encode("latin-1")
      out.write(line)
    shutil.copyfileobj(src, out, 1 << 20)


def decode_evt21(w: np.ndarray, state: dict, hdr: Header):
  """Decodes (n,) uint64 words; `state` carries the time base across blocks."""
  if hdr.legacy:
    w = (w << np.uint64(32)) | (w >> np.uint64(32))
  kind = (w >> np.uint64(60)).astype(np.uint8)
  is_high = kind == 8
  raw = ((w[is_high] >> np.uint64(32)) & np.uint64(0xFFFFFFF)).astype(np.int64)
  if raw.size:
    prev = np.concatenate([[raw[0] if state["raw"] is None else state["raw"]], raw[:-1]])
    # The 28-bit TIME_HIGH wraps every 2^34 µs (4.8 h): a big drop is a wrap, not a jump back.
    loops = state["loops"] + np.cumsum(prev - raw > (1 << 27))
    high = (raw << 6) + (loops << 34)
    state["raw"], state["loops"] = int(raw[-1]), int(loops[-1])
  else:
    high = raw
  # Time base of every word: the latest TIME_HIGH at or before it (or the carried one).
  base = np.concatenate([[state["base"]], high])[np.cumsum(is_high)]
  if base.size:
    state["base"] = int(base[-1])
  cd = (kind <= 1) & (base >= 0)
  ev = w[cd]
  t = base[cd] + ((ev >> np.uint64(54)) & np.uint64(63)).astype(np.int64) + hdr.t0
  x0 = ((ev >> np.uint64(43)) & np.uint64(0x7FF)).astype(np.int64)
  y = ((ev >> np.uint64(32)) & np.uint64(0x7FF)).astype(np.int64)
  mask = (ev & np.uint64(0xFFFFFFFF)).astype("<u4")
  bits = np.unpackbits(mask.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
  row, offset = np.nonzero(bits)          # row-major: word order, then increasing x
  return t[row], x0[row] + offset, y[row], kind[cd][row]
