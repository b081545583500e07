"""The `tts` command.

  tts run configs/demo.py --workdir runs/demo [--only STAGE] [--force] [--config.a.b=value ...]
  tts search configs/demo.py --workdir runs/demo   # one stage: same as run --only search
  tts import HF_DIR --out DIR [--good_token T --bad_token T]   # Hugging Face -> ours
  tts export configs/demo.py --workdir runs/demo --model prm/final --out HF_DIR

Multi-host: pass --distributed on every host (TPU pods and SLURM clusters are detected by
`jax.distributed.initialize()`), or the explicit --coordinator/--num_processes/--process_id.
"""
import argparse
import ast
import difflib
import importlib.util
import os
import sys

import ml_collections

DEFAULT_CONFIG = "configs/demo.py"
# Each stage is also a command (`tts search ...` = `tts run ... --only search`). Listed here
# so that argument errors show before jax is imported; a test keeps it equal to the stages.
STAGE_COMMANDS = ("data", "policy", "label", "prm", "orm", "search", "difficulty",
                  "revision_data", "revision", "revision_orm", "revision_search", "select",
                  "flops", "report")


def load_config(path: str) -> ml_collections.ConfigDict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} not found; pass a path such as {DEFAULT_CONFIG}")
  spec = importlib.util.spec_from_file_location("tts_user_config", path) \
      if os.path.isfile(path) else None
  if spec is None:
    raise FileNotFoundError(f"config {path} is not a Python file; pass a path such as "
                            f"{DEFAULT_CONFIG}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{path} defines no get_config(); it must return a ConfigDict")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"{path}: get_config() returned a {type(config).__name__}; it must "
                     "return an ml_collections.ConfigDict")
  return config


def _parse_value(text: str, current):
  """Reads a command-line value as the type of the field it replaces."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true or false, got {text!r}")
  if isinstance(current, str) or current is None:
    return text
  if isinstance(current, (int, float)):
    return type(current)(float(text)) if isinstance(current, int) and "e" in text.lower() \
        else type(current)(text)
  value = ast.literal_eval(text)
  if hasattr(current, "keys") and not isinstance(value, dict):
    raise ValueError(f"{text!r} replaces a whole section; set one of its fields "
                     f"(--config.SECTION.FIELD=...): {', '.join(list(current.keys())[:6])}")
  if isinstance(current, (tuple, list)) and not isinstance(value, (tuple, list)):
    raise ValueError(f"expected a tuple such as ({text},), got {text!r}")
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str], source: str):
  """Applies --config.a.b=value; an unknown key is an error that suggests the closest one."""
  for item in overrides:
    if not item.startswith("--config.") or "=" not in item:
      raise ValueError(f"unrecognised argument {item!r}; overrides look like "
                       "--config.policy.small.steps=100")
    dotted, text = item[len("--config."):].split("=", 1)
    node, parts = config, dotted.split(".")
    for depth, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        where = ".".join(parts[:depth]) or "the top level"
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f"; did you mean {'.'.join(parts[:depth] + close)}?" if close else ""
        raise KeyError(f"unknown config key {dotted!r} ({source} has no {part!r} under "
                       f"{where}){hint}")
      if depth < len(parts) - 1:
        node = node[part]
    try:
      node[parts[-1]] = _parse_value(text, node[parts[-1]])
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--config.{dotted}: {e}") from None
  return config


def _init_distributed(args):
  import jax
  if args.coordinator:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  elif args.distributed:
    jax.distributed.initialize()


def main(argv=None):
  parser = argparse.ArgumentParser(prog="tts", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  commands = {"run": "run an experiment's stages in order"}
  commands.update({name: f"run only the {name} stage (its inputs must be done)"
                   for name in STAGE_COMMANDS})
  for command, text in commands.items():
    run = sub.add_parser(command, help=text)
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    run.add_argument("--workdir", default="runs/demo")
    if command == "run":
      run.add_argument("--only", help="run just this stage (its inputs must be done)")
    run.add_argument("--force", action="store_true", help="redo stages even if done")
    run.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() (TPU pod, SLURM)")
    run.add_argument("--coordinator", help="host:port of process 0, for manual multi-host")
    run.add_argument("--num_processes", type=int)
    run.add_argument("--process_id", type=int)
  imp = sub.add_parser("import", help="a Hugging Face checkpoint directory -> our saved model")
  imp.add_argument("hf_dir")
  imp.add_argument("--out", required=True, help="directory for orbax params + model.json")
  imp.add_argument("--good_token", default="", help="causal-LM PRM: the good-step token")
  imp.add_argument("--bad_token", default="", help="causal-LM PRM: the bad-step token")
  exp = sub.add_parser("export", help="a saved model -> a Hugging Face directory")
  exp.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
  exp.add_argument("--workdir", default="runs/demo")
  exp.add_argument("--model", required=True, help="e.g. policy/small/final, prm/final")
  exp.add_argument("--out", required=True)
  args, overrides = parser.parse_known_args(argv)
  if args.command == "import":
    return _interop(parser, args, overrides)

  try:
    config = apply_overrides(load_config(args.config), overrides, args.config)
  except (FileNotFoundError, KeyError, ValueError, AttributeError) as e:
    parser.exit(2, f"tts: error: {e.args[0] if e.args else e}\n")
  if args.command == "export":
    return _interop(parser, args, config=config)
  _init_distributed(args)
  from tts import experiment  # imports jax and the stages; after argument errors are shown
  try:
    only = args.only if args.command == "run" else args.command
    summary = experiment.run(config, args.workdir, only=only, force=args.force)
  except experiment.USER_ERRORS as e:
    parser.exit(1, f"tts: error: {e}\n")
  findings = os.path.join(args.workdir, "report", "summary.md")
  print(f"tts: finished; stage summaries in {summary}" +
        (f"; findings in {findings}" if os.path.exists(findings) else ""))


def _interop(parser, args, overrides=(), config=None):
  if overrides:
    parser.exit(2, f"tts: error: unrecognised arguments {' '.join(overrides)}\n")
  from tts import experiment
  from tts.interop import commands  # the `hf` extra
  try:
    if args.command == "import":
      out = commands.import_checkpoint(args.hf_dir, args.out, args.good_token, args.bad_token)
    else:
      out = commands.export_model(config, args.workdir, args.model, args.out)
  except experiment.USER_ERRORS as e:
    parser.exit(1, f"tts: error: {e}\n")
  print(f"tts: {args.command}ed to {out}")


if __name__ == "__main__":
  sys.exit(main())
