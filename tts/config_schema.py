"""Typed config sections: ConfigDict sections become frozen dataclasses, checked by name,
type and range (a dataclass lists its fields that must be >= 1 in `POSITIVE`)."""
import dataclasses
import difflib
import math

_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          tuple: "a tuple such as (1, 2)"}


def build(cls, section, name: str, **overrides):
  """cls(**section, **overrides); an unknown field, a value of the wrong type or out of
  range is an error naming `name.field` and the fix."""
  require_section(section, name, dataclasses.fields(cls)[0].name)
  given = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  fields = [f.name for f in dataclasses.fields(cls)]
  for key in given:
    if key not in fields:
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f"did you mean {name}.{close[0]}?" if close else f"allowed: {', '.join(fields)}"
      raise ValueError(f"unknown config field {name}.{key}; {hint}")
  given.update(overrides)
  for field in dataclasses.fields(cls):
    if field.name in given:
      check_value(given[field.name], field.type, f"{name}.{field.name}",
                  positive=field.name in getattr(cls, "POSITIVE", ()))
  try:
    return cls(**given)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config {name}: {e}") from None


def require_section(section, name: str, example: str):
  """A config section must be a dict of fields (not a value put where a section belongs)."""
  if not hasattr(section, "keys"):
    raise ValueError(f"config {name} is {section!r}; it must be a section (a dict of fields "
                     f"such as {name}.{example})")
  return section


def check_value(value, kind, field: str, positive: bool = False):
  """`value` is of type `kind` (int, float, bool, str, tuple; others are not checked) and,
  if `positive`, >= 1 (every element of a tuple)."""
  ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        bool: lambda v: isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (tuple, list))}.get(kind)
  if ok and not ok(value):
    raise ValueError(f"config {field}={value!r}: expected {_TYPES[kind]}")
  if kind is float and not math.isfinite(value):
    raise ValueError(f"config {field}={value!r}: expected a finite number")
  if positive:
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1
                         for v in values):
      what = "one or more integers >= 1" if kind is tuple else "at least 1"
      raise ValueError(f"config {field}={value!r}: must be {what}")


def all_fields(cls, exclude: tuple[str, ...] = (), **given) -> dict:
  """Every field of `cls` with its default, overridden by `given`: a config section that
  lists all fields, so any of them can be set with --config.section.field=value."""
  out = {}
  for field in dataclasses.fields(cls):
    if field.name in exclude:
      continue
    if field.name in given:
      out[field.name] = given.pop(field.name)
    elif field.default is not dataclasses.MISSING:
      out[field.name] = field.default
    else:
      raise TypeError(f"{cls.__name__}.{field.name} has no default; give it a value")
  if given:
    raise TypeError(f"{cls.__name__} has no field(s) {sorted(given)}")
  return out
