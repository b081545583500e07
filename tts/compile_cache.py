"""XLA's persistent compilation cache for a run: a program compiled once is loaded from disk,
not compiled again, by later stages, a resumed or repeated run, and the run's other
processes. On CPU compiling is a large share of a short stage, and on a GPU it was most of
the training stages (README, "On one GPU")."""
import os

import jax

from tts.atomic_files import is_remote


def cache_dir(setting: str, workdir: str) -> str | None:
  """Where `compilation_cache` (a config field) puts the cache: a relative path is under the
  workdir, an absolute path or a bucket URL is used as it is (shared by several runs), and
  "" turns the cache off (None)."""
  if not setting:
    return None
  return setting if is_remote(setting) or os.path.isabs(setting) else os.path.join(workdir,
                                                                                    setting)


def use(setting: str, workdir: str) -> str | None:
  """Turns the cache on for this process at cache_dir(setting, workdir), unless JAX already
  has one (JAX_COMPILATION_CACHE_DIR, or an earlier run in this process: JAX opens its cache
  once per process, so that one stays). Returns the directory in use, or None."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  path = cache_dir(setting, workdir)
  if path is not None:
    jax.config.update("jax_compilation_cache_dir", path)
    # JAX keeps only programs that took >= 1 s to compile by default; on CPU most of ours
    # take 0.05-0.5 s, and loading one is still faster than compiling it.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
