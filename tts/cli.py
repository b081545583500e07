"""The `tts` command.

  tts run configs/demo.py [--workdir runs/demo] [--only STAGE] [--force] [--config.a.b=value ...]
  tts search configs/demo.py --workdir runs/demo   # one stage: same as run --only search
  tts import HF_DIR --out DIR [--good_token T --bad_token T]   # Hugging Face -> ours
  tts export configs/demo.py --workdir runs/demo --model prm/final --out HF_DIR [--dtype bfloat16]
  tts export --model runs/imported/policy --out HF_DIR   # an imported model: no config
  tts plan configs/demo.py --devices 256 --host_devices 4 --hbm 16 [--hf-config config.json]

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


RUN_EPILOG = """\
config overrides:
  --config.SECTION.FIELD=VALUE   replaces one field of the config file's get_config(), read
                                 as that field's type; repeat for several, e.g.
                                 --config.policy.small.steps=100
                                 --config.search.budgets='(1,4,16)'
                                 An unknown field is an error that names the closest one.
"""
HF_EXTRA = "python3 -m pip install -e '.[hf]'"
# What the `hf` extra installs (setup.py); a run that needs one without it says so.
HF_MODULES = ("safetensors", "tokenizers", "transformers")


def default_workdir(config_path: str) -> str:
  """runs/<config file stem>: each config gets its own run directory by default."""
  return os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])


def _missing_extra(parser, error: ModuleNotFoundError):
  """A missing `hf` extra becomes the install command; anything else is re-raised."""
  module = (error.name or "").split(".")[0]
  if module not in HF_MODULES:
    raise error
  parser.exit(1, f"tts: error: this needs the `hf` extra (module {module!r} is missing); "
                 f"install it with: {HF_EXTRA}\n")


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
    run = sub.add_parser(command, help=text, description=text, epilog=RUN_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                     help=f"a config file with get_config() (default: {DEFAULT_CONFIG})")
    run.add_argument("--workdir", help="where the stages write (default: runs/<config file "
                     "name>, e.g. runs/demo)")
    if command == "run":
      run.add_argument("--only", choices=STAGE_COMMANDS, metavar="STAGE",
                       help="run just this stage (its inputs must be done): "
                       + ", ".join(STAGE_COMMANDS))
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
  exp.add_argument("config", nargs="?", help="the experiment's config, for a trained "
                   "model's tokenizer (default: the workdir's config.json; an imported "
                   "model keeps its own tokenizer)")
  exp.add_argument("--workdir", help="the run --model is under (default: runs/<config file "
                   "name> with a config, else .)")
  exp.add_argument("--model", required=True, help="e.g. policy/small/final, prm/final")
  exp.add_argument("--out", required=True)
  exp.add_argument("--dtype", default="", choices=("float32", "bfloat16"),
                   help="weight dtype (default: the model's param_dtype; bfloat16 for "
                   "serving)")
  exp.add_argument("--max_positions", type=int, default=0,
                   help="max_position_embeddings when the model records none (ours; "
                   "default 4096); an imported model keeps its own")
  exp.add_argument("--max_shard_mb", type=int, default=5120,
                   help="split the weights into shards of at most this size")
  add_plan_parser(sub)
  args, overrides = parser.parse_known_args(argv)
  if args.command == "import":
    return _interop(parser, args, overrides)
  if args.command == "plan":
    return _plan(parser, args, overrides)
  if args.workdir is None:
    args.workdir = default_workdir(args.config) if args.config else "."

  if args.command == "export" and args.config is None:  # the run's resolved config, if any
    from tts.atomic_files import exists, read_json
    saved = os.path.join(args.workdir, "config.json")
    config = ml_collections.ConfigDict(read_json(saved)) if exists(saved) else None
    return _interop(parser, args, overrides, config=config)
  try:
    config = apply_overrides(load_config(args.config), overrides, args.config)
  except (FileNotFoundError, KeyError, ValueError, AttributeError) as e:
    parser.exit(2, f"tts: error: {e.args[0] if e.args else e}\n")
  if args.command == "export":
    return _interop(parser, args, config=config)
  _init_distributed(args)
  import jax

  from tts import experiment, logs  # imports jax and the stages; after argument errors show
  from tts.atomic_files import exists
  logs.setup(jax.process_index())
  try:
    only = args.only if args.command == "run" else args.command
    summary = experiment.run(config, args.workdir, only=only, force=args.force)
  except experiment.USER_ERRORS as e:
    parser.exit(1, f"tts: error: {e}\n")
  except ModuleNotFoundError as e:  # e.g. a Hugging Face checkpoint without the extra
    _missing_extra(parser, e)
  findings = os.path.join(args.workdir, "report", "summary.md")
  print(f"tts: finished; stage summaries in {summary}" +
        (f"; findings in {findings}" if exists(findings) else ""))


def _interop(parser, args, overrides=(), config=None):
  if overrides:
    parser.exit(2, f"tts: error: unrecognised arguments {' '.join(overrides)}\n")
  from tts import experiment
  try:
    from tts.interop import commands  # the `hf` extra
  except ModuleNotFoundError as e:
    _missing_extra(parser, e)
  try:
    if args.command == "import":
      out = commands.import_checkpoint(args.hf_dir, args.out, args.good_token, args.bad_token)
    else:
      out = commands.export_model(config, args.workdir, args.model, args.out,
                                  dtype=args.dtype, max_positions=args.max_positions,
                                  max_shard_bytes=args.max_shard_mb << 20)
  except experiment.USER_ERRORS as e:
    parser.exit(1, f"tts: error: {e}\n")
  print(f"tts: {args.command}ed to {out}")


def add_plan_parser(sub):
  text = ("per-device memory of every train and decode step, from XLA's compiled memory "
          "analysis on fake host devices (no weights, no accelerator needed)")
  plan = sub.add_parser("plan", help=text, description=text, epilog=RUN_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
  plan.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                    help=f"a config file with get_config() (default: {DEFAULT_CONFIG})")
  plan.add_argument("--devices", type=int, default=8,
                    help="devices the config's `mesh` trains on (default 8)")
  plan.add_argument("--host_devices", "--host-devices", type=int, default=0,
                    help="devices of one host, where test-time stages decode with "
                    "`decode_mesh` (default: all --devices; 4 on a multi-host TPU v5e)")
  plan.add_argument("--hbm", type=float, default=16.0,
                    help="memory per device in GiB that a step must fit (default 16: TPU v5e)")
  plan.add_argument("--hf_config", "--hf-config", action="append", default=[],
                    metavar="[NAME=]PATH", help="models.NAME (default small, which the "
                    "verifiers and the revision model start from) takes the shape of this "
                    "Hugging Face config.json (or checkpoint directory); repeatable")
  plan.add_argument("--models", default="",
                    help="comma-separated subset of policy.small, policy.large, prm, orm, "
                    "revision, revision_orm (default: all)")
  plan.add_argument("--steps", default="train,decode",
                    help="train, decode (the test-time stages' decode and verifier scoring) or "
                    "both (default)")
  plan.add_argument("--prompt_tokens", "--prompt-tokens", type=int, default=0,
                    help="prompt length the row and cache sizes assume (default data.max_len)")


def _fake_devices(count: int):
  """Asks XLA for `count` host (CPU) devices. Only environment variables are set, which jax
  reads when its backend starts: the plan compiles for this mesh, not for this machine's
  accelerators, so it runs anywhere; a jax already started is checked by the caller."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
  os.environ["JAX_PLATFORMS"] = "cpu"


def _plan(parser, args, overrides):
  fail = lambda message: parser.exit(2, f"tts: error: {message}\n")
  host_devices = args.host_devices or args.devices
  if args.devices < 1:
    fail(f"--devices {args.devices}: give the number of devices to plan for, e.g. --devices 256")
  if not 1 <= host_devices <= args.devices or args.devices % host_devices:
    fail(f"--host_devices {args.host_devices} must divide --devices {args.devices} (devices "
         "per host, e.g. 4 on a TPU v5e pod)")
  if not args.hbm > 0:
    fail(f"--hbm {args.hbm}: give each device's memory in GiB, e.g. --hbm 16")
  if args.prompt_tokens < 0:
    fail(f"--prompt_tokens {args.prompt_tokens} must be >= 1 (or 0: data.max_len)")
  hf_configs = dict(item.split("=", 1) if "=" in item else ("small", item)
                    for item in args.hf_config)
  try:
    config = apply_overrides(load_config(args.config), overrides, args.config)
  except (FileNotFoundError, KeyError, ValueError, AttributeError) as e:
    fail(e.args[0] if e.args else e)
  _fake_devices(args.devices)
  import jax

  from tts import experiment, plan
  models = tuple(m for m in args.models.split(",") if m) or tuple(plan.TRAINED)
  unknown = [m for m in models if m not in plan.TRAINED]
  if unknown:
    fail(f"--models {unknown[0]}: no such model; pick from {', '.join(plan.TRAINED)}")
  steps = tuple(s for s in args.steps.split(",") if s)
  if not steps or set(steps) - set(plan.STEP_KINDS):
    fail(f"--steps {args.steps}: give {' or '.join(plan.STEP_KINDS)} or both, comma-separated")
  if jax.device_count() != args.devices:  # starts jax's backend: after every flag is checked
    fail(f"jax was started before with {jax.device_count()} devices, not --devices "
         f"{args.devices}; run tts plan in a process of its own")
  try:
    request = plan.PlanRequest(host_devices, plan.model_shapes(config, hf_configs), models,
                               args.prompt_tokens or config.data.max_len, steps)
    measured = plan.plan(config, request)
  except experiment.USER_ERRORS as e:
    fail(e)
  print(f"tts plan {args.config}: per device, {args.devices} devices (mesh "
        f"{config.mesh.to_dict()}), test-time stages on {host_devices} per host (decode_mesh "
        f"{config.decode_mesh.to_dict()}); fits: total <= {args.hbm:g} GiB")
  print(plan.table(measured, args.hbm))


if __name__ == "__main__":
  sys.exit(main())
