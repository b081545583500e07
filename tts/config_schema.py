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
