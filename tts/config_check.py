"""The whole config checked when it is loaded, before any stage runs: each section that a
dataclass describes is built from it (unknown fields, types, ranges), and the counts of
the plain sections must be >= 1. One error names the field and what to set."""
from tts import config_schema
from tts.model.config import ModelConfig
from tts.scaling.config import DifficultyConfig, FlopsConfig, ReportConfig, SelectConfig
from tts.search.methods import MethodConfig
from tts.search.verifier import VerifierConfig
from tts.train.config import TrainConfig

TYPED = {"prm": TrainConfig, "orm": TrainConfig, "revision": TrainConfig,
         "revision_orm": TrainConfig, "difficulty": DifficultyConfig, "select": SelectConfig,
         "flops": FlopsConfig, "report": ReportConfig}
# Plain sections: fields that count something (at least 1 each; tuples element-wise).
POSITIVE = {
    "task": ("num_train", "num_val", "num_test"),
    "data": ("max_len",),
    "policy_eval": ("num_questions", "samples", "max_new_tokens", "batch_size"),
    "label": ("num_questions", "solutions", "rollouts", "max_new_tokens",
              "questions_per_shard", "rows_per_batch"),
    "search": ("num_questions", "budgets", "max_new_tokens", "max_step_tokens",
               "rows_per_batch"),
    "revision_data": ("num_questions", "samples", "max_new_tokens", "rows_per_batch"),
    "revision_sampling": ("window", "max_new_tokens", "rows_per_batch"),
    "revision_orm_data": ("num_questions", "chains", "chain_length"),
    "revision_search": ("budgets", "full_chains"),
}


def check_config(config):
  """Raises ValueError naming the first bad field of `config` (a ConfigDict)."""
  for name, section in _section(config, "policy", "small").items():
    if "hf_path" not in section:  # an imported model is not trained
      config_schema.build(TrainConfig, section, f"policy.{name}")
  for name, section in _section(config, "models", "small").items():
    config_schema.build(ModelConfig, section, f"models.{name}", vocab_size=1)  # from the task
  for name, cls in TYPED.items():
    if name in config:
      config_schema.build(cls, config[name], name)
  for name, fields in POSITIVE.items():
    section = _section(config, name, fields[0])
    for field in fields:
      if field in section:
        kind = tuple if field == "budgets" else int
        config_schema.check_value(section[field], kind, f"{name}.{field}", positive=True)
  for name, fields in _section(config.get("search", {}), "search.methods", "beam4").items():
    config_schema.build(MethodConfig, fields, f"search.methods.{name}")
  verifiers = {name: config_schema.build(VerifierConfig, fields, f"search.verifiers.{name}")
               for name, fields in _section(config.get("search", {}), "search.verifiers",
                                            "prm").items()}
  reader = config.get("difficulty", {}).get("verifier", DifficultyConfig.verifier)
  if reader in verifiers and verifiers[reader].kind == "likelihood":
    value_heads = sorted(n for n, v in verifiers.items() if v.kind != "likelihood")
    raise ValueError(f"difficulty.verifier={reader!r} is a likelihood verifier: it has no "
                     "reading after a prompt for prompt bins; name a value-head verifier "
                     f"under search.verifiers ({', '.join(value_heads) or 'a PRM'})")
  data = config.get("data", {})
  if data.get("attend_across_examples") and not data.get("pack"):
    raise ValueError("data.attend_across_examples=True needs packed rows (examples share a "
                     "row only when packed): set data.pack=True or attend_across_examples=False")
  cache = config.get("compilation_cache", "")
  if not isinstance(cache, str):
    raise ValueError(f"compilation_cache={cache!r} is not a directory: give a path (relative "
                     "to the workdir, absolute, or a bucket URL), or '' to turn the cache off")
  searched = config.get("search", {}).get("num_questions")
  tests = config.get("task", {}).get("num_test")
  if isinstance(searched, int) and isinstance(tests, int) and searched > tests:
    raise ValueError(f"search.num_questions={searched} is more than the task's {tests} test "
                     f"questions (task.num_test); set search.num_questions <= {tests}")
  base = _section(config, "verifiers", "heldout_fraction").get("base", "small")
  if "prm" in config or "orm" in config:
    models = sorted(config.get("policy", {}))
    if base not in models:
      raise ValueError(f"verifiers.base={base!r} is not a model the policy stage makes; set it "
                       f"to one of {', '.join(models)}")


def _section(parent, dotted: str, example: str):
  """The section `dotted` of `parent` (empty when absent), which must be a dict."""
  return config_schema.require_section(parent.get(dotted.split(".")[-1], {}), dotted, example)
