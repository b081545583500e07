"""Typed config sections: ConfigDict sections become frozen dataclasses, checked by name."""
import dataclasses
import difflib


def build(cls, section, name: str, **overrides):
  """cls(**section, **overrides); an unknown field is an error naming it and the fix."""
  given = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  fields = [f.name for f in dataclasses.fields(cls)]
  for key in given:
    if key not in fields:
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f"did you mean {name}.{close[0]}?" if close else f"allowed: {', '.join(fields)}"
      raise ValueError(f"unknown config field {name}.{key}; {hint}")
  given.update(overrides)
  return cls(**given)


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
