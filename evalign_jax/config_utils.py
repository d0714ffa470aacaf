"""Helpers for ml_collections configs: variant strings such as `configs/x.py:runlocal,seed=3`."""

from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config variant string into a locked ConfigDict of the given defaults.

  `"runlocal"` sets a boolean default to True; `"name=value"` sets any default, the value parsed
  as a Python literal when it is one. Unknown names raise with the list of valid ones, so a typo
  fails loudly.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, eq, raw = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config variant {key!r}; valid: {sorted(defaults)}")
    if not eq:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config variant {key!r} needs a value: {key}=...")
      value = True
    else:
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = raw
    out[key] = type(defaults[key])(value) if defaults[key] is not None else value
  out.lock()
  return out
