"""The stages of an experiment, their artifacts in the workdir, skip and resume.

Each stage owns `workdir/<stage>/`. It is done when `done.json` there records the
fingerprint of the config sections it reads and of the stages it depends on, as their own
`done.json` files record them. A done stage with the same fingerprint is skipped; one made
with a different config is never silently overwritten: the run stops and names the changed
fields (`--force` redoes it). A stage never reads inputs made with a config other than the
one it runs with: the run stops and names the stage to redo. A stage that was killed
resumes: its trainers restore their latest checkpoints.
"""
import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Callable

import jax
import ml_collections
from jax.experimental import multihost_utils

from tts.atomic_files import exists, read_json, remove_tree, write_json_atomic
from tts.data import math_grader
from tts.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  run: Callable[["Context"], dict]  # returns a small summary, stored in done.json
  config_keys: tuple[str, ...]  # config sections or dotted fields the result depends on
  deps: tuple[str, ...] = ()
  switch: str | None = None  # a config section whose presence turns the stage on
  # (a dependency on a stage that is off is dropped)


@dataclasses.dataclass
class Context:
  config: ml_collections.ConfigDict
  workdir: str

  def stage_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0


class StageError(Exception):
  """A stage cannot run as asked (its inputs or records); the message names what to redo."""


class StageConfigChanged(StageError):
  pass


def _section(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value.to_dict() if hasattr(value, "to_dict") else value


def fingerprint(stage: Stage, config, dep_prints: dict[str, str]) -> tuple[str, dict]:
  inputs = {"config": {k: _section(config, k) for k in stage.config_keys},
            "deps": {d: dep_prints[d] for d in stage.deps}}
  text = json.dumps(inputs, sort_keys=True, default=str)
  # Returned as JSON reads it back (tuples as lists), so it compares equal to a stored record.
  return hashlib.sha256(text.encode()).hexdigest()[:16], json.loads(text)


def _changed_fields(old: dict, new: dict, prefix="") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _changed_fields(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def read_record(directory: str, name: str, stage: str) -> dict | None:
  """`started.json` or `done.json` of a stage, checked; None when absent."""
  path = os.path.join(directory, name)
  if not exists(path):
    return None
  redo = f"redo the stage: --only {stage} --force"
  try:
    record = read_json(path)
  except DataError as e:
    raise StageError(f"{e}: stage '{stage}' is not recorded right; {redo}") from None
  fields = {"fingerprint": str, "inputs": dict}
  if name == "done.json":
    fields["summary"] = dict
  if not isinstance(record, dict):
    raise StageError(f"{path} is not a record of stage '{stage}' (a JSON object); {redo}")
  for field, kind in fields.items():
    if not isinstance(record.get(field), kind):
      raise StageError(f"{path} has no valid '{field}' ({kind.__name__}); {redo}")
  return record


def _check_inputs(stage: Stage, ctx: "Context", made: dict[str, tuple[str, dict]]):
  """Each input of `stage` is done, and its done.json records the fingerprint this run's
  config gives it (`made`: stage -> fingerprint and inputs; the fingerprint of `stage`
  includes these)."""
  for dep in stage.deps:
    record = read_record(ctx.stage_dir(dep), "done.json", dep)
    if record is None:
      raise StageError(f"stage '{stage.name}' needs stage '{dep}', which is not done in "
                       f"{ctx.workdir}; run it first (--only {dep}, or without --only)")
    fp, inputs = made[dep]
    if record["fingerprint"] != fp:
      changed = _changed_fields(record["inputs"], inputs)
      raise StageError(
          f"stage '{stage.name}' needs stage '{dep}', but {ctx.stage_dir(dep)} was made with "
          f"a different config ({'; '.join(changed[:5])}); redo it first (--only {dep} "
          "--force) or run with the config it was made with")


def sync(name: str):
  """All processes wait here, so every one sees the files process 0 just wrote."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCount:
  """The programs XLA compiles while the context is open, and their seconds: on CPU
  compiling is a large share of a short stage, and the count says how many shapes it made.
  `cached`: programs loaded from the persistent compilation cache instead (JAX reports a
  load as a compile too; `seconds` counts both)."""

  def __enter__(self):
    self.requests, self.seconds, self.cached = 0, 0.0, 0
    jax.monitoring.register_event_duration_secs_listener(self._record)
    jax.monitoring.register_event_listener(self._count_hit)
    return self

  @property
  def programs(self) -> int:
    return self.requests - self.cached

  def _record(self, event: str, seconds: float, **_):
    if event == _COMPILE_EVENT:
      self.requests += 1
      self.seconds += seconds

  def _count_hit(self, event: str, **_):
    if event == _CACHE_HIT_EVENT:
      self.cached += 1

  def __exit__(self, *_):
    jax.monitoring.unregister_event_duration_listener(self._record)
    jax.monitoring.unregister_event_listener(self._count_hit)


def run_stages(stages: list[Stage], ctx: Context, only: str | None = None, force: bool = False,
               log=logging.getLogger("tts").info) -> dict[str, dict]:
  """Runs the stages in order (or just `only`), skipping the ones already done.

  With several processes, all run every stage; process 0 writes the bookkeeping files and
  the others wait for it at each stage boundary, so all take the same skip decisions.
  """
  sync("tts: start")
  names = [s.name for s in stages]
  if only is not None and only not in names:
    raise ValueError(f"--only {only}: no such stage; stages are {', '.join(names)}")
  off = [s for s in stages if s.switch and s.switch not in ctx.config]
  if only is not None and only in [s.name for s in off]:
    raise ValueError(f"stage '{only}' is off: the config has no '{only}' section")
  off_names = {s.name for s in off}
  stages = [dataclasses.replace(s, deps=tuple(d for d in s.deps if d not in off_names))
            for s in stages if s not in off]
  prints, made, summaries = {}, {}, {}
  for stage in stages:
    fp, inputs = fingerprint(stage, ctx.config, prints)
    prints[stage.name], made[stage.name] = fp, (fp, inputs)
    if only is not None and stage.name != only:
      continue
    directory = ctx.stage_dir(stage.name)
    record = (read_record(directory, "done.json", stage.name)
              or read_record(directory, "started.json", stage.name))
    if record and record["fingerprint"] != fp:
      if not force:
        changed = _changed_fields(record["inputs"], inputs)
        raise StageConfigChanged(
            f"stage '{stage.name}' in {directory} was made with a different config "
            f"({'; '.join(changed[:5])}). Its files are kept. Rerun with --force to redo it, "
            "or use a new --workdir")
    # Inputs made with another config are never read, nor a result made from them kept.
    _check_inputs(stage, ctx, made)
    if record and "summary" in record and not force:
      log(f"[{stage.name}] done already, skipped ({directory}/done.json)")
      summaries[stage.name] = record["summary"]
      continue
    # Every process has read the records before process 0 deletes them (--force); otherwise
    # another process may find done.json listed and then gone.
    sync(f"tts: {stage.name} checked")
    if force and record and ctx.is_main:
      remove_tree(directory)
    if ctx.is_main:
      write_json_atomic(os.path.join(directory, "started.json"),
                        {"fingerprint": fp, "inputs": inputs})
    sync(f"tts: {stage.name} started")
    log(f"[{stage.name}] running")
    start, timeouts = time.time(), math_grader.timeouts()
    with CompileCount() as compiled:
      summary = stage.run(ctx)
    # Stages share no compiled programs; each holds memory maps until freed, and a process
    # may hold only vm.max_map_count of them (a long `tts run` would otherwise die in XLA).
    jax.clear_caches()
    elapsed, timeouts = time.time() - start, math_grader.timeouts() - timeouts
    if timeouts:
      log(f"[{stage.name}] {timeouts} answer comparisons timed out, graded as wrong")
    if ctx.is_main:
      write_json_atomic(os.path.join(directory, "done.json"),
                        {"fingerprint": fp, "inputs": inputs, "summary": summary,
                         "seconds": round(elapsed, 1), "grading_timeouts": timeouts,
                         "compiled": {"programs": compiled.programs,
                                      "seconds": round(compiled.seconds, 1),
                                      "cached": compiled.cached}})
    sync(f"tts: {stage.name} done")
    log(f"[{stage.name}] done in {elapsed:.0f} s ({compiled.programs} programs compiled in "
        f"{compiled.seconds:.0f} s, {compiled.cached} loaded from the compilation cache)")
    summaries[stage.name] = summary
  return summaries
