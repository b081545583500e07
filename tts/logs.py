"""The `tts` command's log: Python logging under the name "tts", each line marked with the
JAX process index (p0, p1, ...), so the logs of many hosts can be merged and told apart.

Library code logs to `logging.getLogger("tts")` (or a child such as "tts.train"); only the
command line calls `setup`, so a program that imports tts keeps its own logging setup.
"""
import logging

NAME = "tts"


def setup(process_index: int, level: int = logging.INFO) -> logging.Logger:
  """Sends the "tts" logger's records to stderr as `HH:MM:SS p<index> message`."""
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter(f"%(asctime)s p{process_index} %(message)s",
                                         datefmt="%H:%M:%S"))
  logger = logging.getLogger(NAME)
  logger.handlers[:] = [handler]
  logger.setLevel(level)
  logger.propagate = False
  return logger
