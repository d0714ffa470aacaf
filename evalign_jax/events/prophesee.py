"""Prophesee file layout: the '%' text header, word sizes, and an EVT2.1 decoder.

faery decodes EVT2, EVT3 and DAT but reads a cut file silently and assumes 1280x720 when the
header has no geometry, so the header is parsed and the data length checked here. faery 0.7.1
cannot decode EVT2.1 at all, hence `decode_evt21` (vectorised per block of 64-bit words).
"""

from __future__ import annotations

import dataclasses

import numpy as np

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


def read_header(path) -> Header:
  """Parses Prophesee '%' header lines the way faery does (plus the documented '% end')."""
  hdr = Header()
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
      try:
        if key == "evt":
          hdr.evt = _EVT_VERSIONS.get(value.lower(), "?" + value)
        elif key == "format":
          name, *options = value.split(";")
          hdr.evt = _EVT_VERSIONS.get(name.strip().lower(), "?" + name)
          opts = dict(o.strip().lower().partition("=")[::2] for o in options)
          if "width" in opts and "height" in opts:
            hdr.width, hdr.height = int(opts["width"]), int(opts["height"])
          hdr.legacy = opts.get("endianness", "").lower() == "legacy"
        elif key == "geometry":
          hdr.width, hdr.height = (int(v) for v in value.lower().split("x"))
        elif key in ("width", "height"):
          setattr(hdr, key, int(value))
        elif key == "version":
          hdr.dat = {"1": "dat1", "2": "dat2"}.get(value, "?" + value)
        elif key == "t0":
          hdr.t0 = int(value)
      except ValueError:
        pass  # a malformed optional field is ignored, as faery does
  return hdr


class PropheseeLayout:
  """Header checks shared by the EVT and DAT sources (faery reads cut files silently)."""

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
    if sensor_size is None:
      if hdr.width is None or hdr.height is None:
        raise EventFileError(f"{path}: the {fmt} header has no sensor geometry; pass "
                             "sensor_size=(height, width)")
      sensor_size = (hdr.height, hdr.width)
    self.header, self.sensor_size, self.data_offset = hdr, sensor_size, hdr.length
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
