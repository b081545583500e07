"""An experiment: the ordered stages, the resolved config saved beside them, one entry point.

"""
import os

import jax

from tts import pipeline
from tts.atomic_files import write_json_atomic
from tts.data.errors import DataError
from tts.stages import (data, difficulty, flops, label, policy, report, revision,
                        revision_search, search, select, verifiers)
from tts.train.checkpoints import CheckpointMismatchError

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
USER_ERRORS = (pipeline.StageConfigChanged, DataError, CheckpointMismatchError,
               FloatingPointError, FileNotFoundError, ValueError, KeyError)


def run(config, workdir: str, only: str | None = None, force: bool = False) -> str:
  """Runs the stages; returns the path of the run summary (stage -> summary)."""
  os.makedirs(workdir, exist_ok=True)
  ctx = pipeline.Context(config=config, workdir=workdir)
  if ctx.is_main:
    write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  summaries = pipeline.run_stages(STAGES, ctx, only=only, force=force)
  path = os.path.join(workdir, "summary.json")
  if ctx.is_main:
    write_json_atomic(path, {"stages": summaries, "processes": jax.process_count(),
                             "devices": jax.device_count()})
  return path
