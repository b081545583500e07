"""An experiment: the ordered stages, the resolved config saved beside them, one entry point.

"""
import contextlib
import os

import jax

from tts import compile_cache, config_check, pipeline, workdir_lock
from tts.atomic_files import (exists, is_dir, is_remote, make_dirs, read_json,
                              write_json_if_changed)
from tts.data.errors import DataError
from tts.stages import (data, difficulty, flops, label, policy, report, revision,
                        revision_search, search, select, verifiers)
from tts.train.checkpoints import CheckpointMismatchError
from tts.train.preemption import Preempted

STAGES = [
    pipeline.Stage("data", data.run, config_keys=("task", "data.source")),
    pipeline.Stage("policy", policy.run, deps=("data",),
                   config_keys=("task", "data", "models", "policy", "policy_eval", "seed",
                                "logical_axis_rules")),
    pipeline.Stage("label", label.run, deps=("policy",), switch="label",
                   config_keys=("task", "label")),
    pipeline.Stage("prm", verifiers.run_prm, deps=("label",), switch="prm",
                   config_keys=("task", "verifiers", "prm", "mesh", "logical_axis_rules")),
    pipeline.Stage("orm", verifiers.run_orm, deps=("label",), switch="orm",
                   config_keys=("task", "verifiers", "orm", "mesh", "logical_axis_rules")),
    pipeline.Stage("search", search.run, deps=("policy", "prm", "orm"), switch="search",
                   config_keys=("task", "search")),
    pipeline.Stage("difficulty", difficulty.run, deps=("policy", "prm"), switch="difficulty",
                   config_keys=("task", "difficulty", "search.num_questions")),
    pipeline.Stage("revision_data", revision.run_data, deps=("policy",), switch="revision_data",
                   config_keys=("task", "revision_data")),
    pipeline.Stage("revision", revision.run_train, deps=("revision_data",), switch="revision",
                   config_keys=("task", "revision", "mesh", "logical_axis_rules")),
    pipeline.Stage("revision_orm", revision.run_orm, deps=("revision",), switch="revision_orm",
                   config_keys=("task", "revision_data.num_questions", "revision_orm_data",
                                "revision_sampling", "revision_orm", "verifiers", "mesh",
                                "logical_axis_rules")),
    # Difficulty bins, when that stage runs, split the revision accuracies per bin.
    pipeline.Stage("revision_search", revision_search.run,
                   deps=("revision", "revision_orm", "difficulty"), switch="revision_search",
                   config_keys=("task", "revision_sampling", "revision_search",
                                "search.num_questions")),
    # Compute-optimal scaling over the search and revision result files.
    pipeline.Stage("select", select.run, deps=("difficulty", "search", "revision_search"),
                   switch="select", config_keys=("select",)),
    pipeline.Stage("flops", flops.run, deps=("select", "policy"), switch="flops",
                   config_keys=("flops", "policy", "data.max_len")),
    pipeline.Stage("report", report.run, deps=("select", "flops"), switch="report",
                   config_keys=("report",)),
]

# Errors a user can act on: shown as one line by the CLI, not a traceback.
USER_ERRORS = (pipeline.StageError, workdir_lock.WorkdirLocked, DataError,
               CheckpointMismatchError, Preempted, FloatingPointError, FileNotFoundError,
               FileExistsError, ValueError, KeyError)


def run(config, workdir: str, only: str | None = None, force: bool = False) -> str:
  """Runs the stages; returns the path of the run summary (stage -> summary). Process 0
  holds the workdir's lock (the other processes of a multi-process run share it)."""
  config_check.check_config(config)
  if exists(workdir) and not is_dir(workdir):
    raise FileExistsError(f"--workdir {workdir} is a file; pass a directory")
  if not is_dir(workdir):  # (makedirs would try to write to a read-only one)
    make_dirs(workdir)  # several processes may race here
  compile_cache.use(config.get("compilation_cache", ""), workdir)
  ctx = pipeline.Context(config=config, workdir=workdir)
  # A bucket has no file locks: one run at a time there is the user's to ensure.
  lock = ctx.is_main and not is_remote(workdir)
  with workdir_lock.hold(workdir) if lock else contextlib.nullcontext():
    if ctx.is_main:
      write_json_if_changed(os.path.join(workdir, "config.json"), config.to_dict())
    summaries = pipeline.run_stages(STAGES, ctx, only=only, force=force)
    path = os.path.join(workdir, "summary.json")
    if ctx.is_main:  # --only updates its stage's entry; the others stay
      previous = read_json(path) if exists(path) else {}
      write_json_if_changed(path, {"stages": {**previous.get("stages", {}), **summaries},
                                   "processes": jax.process_count(),
                                   "devices": jax.device_count()})
  return path
