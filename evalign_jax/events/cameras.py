"""The sensor size of a Prophesee recording whose header gives no geometry.

Recordings by Prophesee's software before Metavision 3 (OpenEB 3.0 added the geometry line)
name the camera instead: a `system_ID` line (the camera board's id, in decimal) and a
`plugin_name` line (the HAL plugin that recorded it). The vendor's SDK, OpenEB, reads such
files by looking the camera up; the tables below are copied from it, each entry with its source. Where no camera is named
(or it is not one OpenEB knows), the size is guessed from the events' own extent: the smallest
known sensor of the format that holds every event.

OpenEB sources (github.com/prophesee-ai/openeb at the tag named, or HEAD = 0499c95, 2025-04-25):
  [ids]      hal_psee_plugins/include/devices/utils/device_system_id.h   enum SystemId (values)
  [rawfile]  hal_psee_plugins/src/boards/rawfile/psee_raw_file_header.cpp
             PseeRawFileHeader::check_header, `system_id_map`: what OpenEB uses for a RAW file
             without geometry (HEAD; the same ids and sizes since 3.1.2)
  [plugins]  2.3.0: hal_openeb_plugins/include/common/raw_constants.h `plugins_map` (plugin name
             -> sensor size; raw_file_discovery.cpp strips a trailing "_raw" from the name)
  [imx636]   3.1.2: hal_psee_plugins/src/plugin/CMakeLists.txt (hal_plugin_imx636_evk2/3/4
             record with an IMX636), HEAD: src/devices/imx636/imx636_tz_device.cpp (1280x720)
  [imx646]   HEAD: hal_psee_plugins/src/devices/imx646/imx646_tz_device.cpp (system id, 1280x720)
  [genx320]  HEAD: hal_psee_plugins/src/devices/genx320/genx320_cx3_tz_device.cpp (320x320)
OpenEB never uses `serial_number` to identify a camera, so neither do we.
"""

from __future__ import annotations

from typing import Mapping

VGA = (480, 640)      # (height, width): Gen3.0 / Gen3.1 sensors
HD = (720, 1280)      # Gen4.0 / Gen4.1, IMX636, IMX646
GENX320 = (320, 320)
ATIS = (240, 304)     # Prophesee's first ATIS sensor (the GEN1 automotive dataset, DAT files)

# system_ID (decimal, as headers write it) -> (camera, (height, width)).
SYSTEM_IDS: dict[int, tuple[str, tuple[int, int]]] = {
    # [rawfile] system_id_map, each id's value from [ids]
    0x15: ("CCAM3 Gen3.0", VGA),
    0x1C: ("CCAM3 Gen3.1", VGA),
    0x1A: ("CCAM3 Gen4.0", HD),
    0x17: ("CCAM4 Gen3.0", VGA),
    0x97: ("CCAM4 Gen3.0 EVK", VGA),
    0x19: ("CCAM4 Gen3.0 rev B", VGA),
    0x99: ("CCAM4 Gen3.0 rev B EVK", VGA),
    0x1D: ("CCAM4 Gen3.0 rev B EVK bridge", VGA),
    0x23: ("CCAM5 Gen3.1", VGA),
    0x1E: ("CCAM5 Gen4.0", HD),
    0x2E: ("CCAM5 Gen4.0 fixed frame", HD),
    0x21: ("VisionCam Gen3.0", VGA),
    0xA1: ("VisionCam Gen3.0 EVK", VGA),
    0x22: ("VisionCam Gen3.1", VGA),
    0xA2: ("VisionCam Gen3.1 EVK", VGA),
    0x29: ("EVK2 Gen3.1", VGA),
    0x1F: ("EVK2 Gen4.0", HD),
    0x27: ("EVK2 Gen4.1", HD),
    0x28: ("EVK3 Gen3.1", VGA),
    0x30: ("EVK3 Gen4.1", HD),
    0x32: ("EVK2 IMX636", HD),
    0x31: ("EVK3/EVK4 IMX636", HD),   # every Treuzell IMX636 board ([imx636] get_system_id)
    # Not in OpenEB's file table (it would refuse these files); the device code gives the size.
    0x3A: ("RDK2 IMX636", HD),            # [imx636] imx636_rdk2_tz_device.cpp: HDGeometry
    0x35: ("EVK3 IMX646", HD),            # [imx646]
    0x40: ("EVK3 GenX320", GENX320),      # [genx320]
    0x3B: ("EVK3 GenX320 MP", GENX320),   # [genx320]
}

# plugin_name -> (sensor, (height, width)).
PLUGIN_NAMES: dict[str, tuple[str, tuple[int, int]]] = {
    # [plugins]
    "hal_plugin_gen3_fx3": ("Gen3.0", VGA),
    "hal_plugin_gen31_fx3": ("Gen3.1", VGA),
    "hal_plugin_gen31_evk2": ("Gen3.1", VGA),
    "hal_plugin_gen31_evk3": ("Gen3.1", VGA),
    "hal_plugin_gen4_fx3": ("Gen4.0", HD),
    "hal_plugin_gen4_evk2": ("Gen4.0", HD),
    "hal_plugin_gen41_evk2": ("Gen4.1", HD),
    "hal_plugin_gen41_evk3": ("Gen4.1", HD),
    # [imx636]; "hal_plugin_prophesee" (every camera) names no sensor.
    "hal_plugin_imx636_evk2": ("IMX636", HD),
    "hal_plugin_imx636_evk3": ("IMX636", HD),
    "hal_plugin_imx636_evk4": ("IMX636", HD),
}

# The sensors each format is recorded from, for guessing from the events' extent. EVT2, EVT3
# and EVT2.1 are what the HAL streams ([rawfile], [genx320]); DAT files are converted from them,
# and also hold the older ATIS recordings (304x240, e.g. the GEN1 automotive dataset), whose
# headers may give no size (Prophesee's dataset toolbox then reports it as (None, None)).
KNOWN_SENSORS: dict[str, tuple[tuple[int, int], ...]] = {
    "evt2": (GENX320, VGA, HD),
    "evt2.1": (GENX320, VGA, HD),
    "evt3": (GENX320, VGA, HD),
    "dat": (ATIS, GENX320, VGA, HD),
}

_PROPHESEE = "Prophesee"
_EVK2_SAPHIR = 0x37   # [ids] SYSTEM_EVK2_SAPHIR


def _named_by_prophesee(fields: Mapping[str, str]) -> bool:
  """OpenEB trusts the camera fields only in files that Prophesee's own plugins wrote.

  As PseeRawFileHeader::check_header: the plugin and camera integrators, else the older single
  `integrator_name`, else (none given, a pre-Metavision-4 file) Prophesee.
  """
  names = [fields.get("plugin_integrator_name", ""), fields.get("camera_integrator_name", "")]
  if not any(names):
    names = [fields.get("integrator_name", "")] * 2
  return all(n in ("", _PROPHESEE) for n in names)


def camera_sensor_size(fields: Mapping[str, str]) -> tuple[tuple[int, int], str] | None:
  """(height, width) and how it was found, from the camera a header names; None if unknown.

  Args:
    fields: header keys (lower case) -> values, e.g. {"system_id": "21"}.

  The system_ID wins over the plugin name, as in OpenEB since 3.0, which no longer reads the
  plugin name (2.x looked at the plugin first).
  """
  if not _named_by_prophesee(fields):
    return None
  system_id = fields.get("system_id", "").strip()
  if system_id.isdigit() and int(system_id) in SYSTEM_IDS:
    camera, size = SYSTEM_IDS[int(system_id)]
    return size, f"the header's system_ID {system_id} (Prophesee {camera})"
  plugin = fields.get("plugin_name", "").strip()
  key = plugin[:-len("_raw")] if plugin.endswith("_raw") else plugin
  if key in PLUGIN_NAMES:
    sensor, size = PLUGIN_NAMES[key]
    return size, f"the header's plugin_name {plugin} (a Prophesee {sensor} sensor)"
  return None


def evt21_legacy_by_default(fields: Mapping[str, str]) -> bool:
  """Whether EVT2.1 words have their 32-bit halves swapped when the header does not say.

  As PseeRawFileHeader::check_header ("Fix Evt2.1 decoding"): Prophesee's boards older than
  SYSTEM_EVK2_SAPHIR (0x37) wrote them swapped ("legacy"), later ones little-endian.
  """
  system_id = fields.get("system_id", "").strip()
  return (_named_by_prophesee(fields) and system_id.isdigit()
          and 0 < int(system_id) < _EVK2_SAPHIR)


def sensor_size_from_extent(fmt: str, max_x: int, max_y: int) -> tuple[int, int] | None:
  """The smallest known `fmt` sensor (by area) holding pixel (max_x, max_y); None if none does."""
  fits = [s for s in KNOWN_SENSORS[fmt] if max_x < s[1] and max_y < s[0]]
  return min(fits, key=lambda s: s[0] * s[1]) if fits else None
