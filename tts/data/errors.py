"""Errors raised for bad input data, shared by the readers in `tts.data`."""


class DataError(ValueError):
  """Input data (a file or a record in it) is malformed.

  Messages name where the problem is (file and 1-based line, or the config
  field that points at the file), what is wrong and how to fix it, because the
  person reading them is editing a data file, not our code.
  """
