"""`search` stage: every configured method at every budget on the test questions.

Writes search/<method>/n<N>.jsonl (one record per question, schema in WORKSPACE.md) and
search/manifest.json (accuracy and mean counts per file). A file already written is read
back instead of recomputed, so a killed stage resumes where it stopped.
"""
import dataclasses
import os

import jax
import numpy as np
from tqdm import tqdm

from tts import config_schema, hosts
from tts.atomic_files import exists, read_jsonl, write_json_atomic
from tts.data.tasks import make_task
from tts.model.sharding import DecodeSharding, decode_sharding
from tts.scaling import bootstrap
from tts.search import methods, results, sampler, tree
from tts.search.methods import MethodConfig
from tts.search.sampler import SamplingConfig, pad_prompts
from tts.search.verifier import STEP_AGGREGATIONS, VerifierConfig, check_finite_readings
from tts.stages.data import read_split
from tts.stages.policy import load_policy
from tts.train.checkpoints import is_saved_model, load_model


def load_verifier(workdir: str, path: str, field: str, prm_token_ids=None,
                  sharding: DecodeSharding | None = None, precision=None, kind: str = "prm"):
  """The verifier model at `path` (relative to the workdir unless absolute): one of ours
  (a stage's final/, with model.json), or a Hugging Face checkpoint directory, imported
  with its value_head.safetensors or, given prm_token_ids=(good, bad), as a causal-LM PRM
  (the convention in tts/interop/hf_import.py), in precision's param_dtype / dtype /
  cache_dtype where set (a config section; else the checkpoint's own). A `likelihood`
  verifier is any causal LM: it reads its LM head, not a value head."""
  directory = os.path.join(workdir, path)
  if is_saved_model(directory):
    model = load_model(directory, sharding)
  else:
    from tts.interop.hf_import import load_hf_model  # the `hf` extra (safetensors)
    mesh, rules = (sharding.mesh, sharding.rules) if sharding else (None, ())
    model = load_hf_model(directory, mesh, rules, prm_token_ids=prm_token_ids,
                          precision=precision, field=field.rsplit(".", 1)[0])
  if not model.cfg.value_head and kind != "likelihood":
    raise ValueError(f"{field}={path!r}: the model in {os.path.join(workdir, path)} has no "
                     "value head, so it cannot score steps; point it at a PRM or ORM, or "
                     "read it by its likelihood (kind='likelihood')")
  return model


def verifier_config(cfg, name: str) -> VerifierConfig:
  """`search.verifiers.<name>`, checked (unknown fields, kind)."""
  return config_schema.build(VerifierConfig, cfg.search.verifiers[name],
                             f"search.verifiers.{name}")


def prm_token_ids(good_token: str, bad_token: str, vocab, field: str) -> tuple[int, int] | None:
  """(good, bad) token ids of a causal-LM PRM, if the tokens are given."""
  if not good_token and not bad_token:
    return None
  ids = []
  for key, text in (("good_token", good_token), ("bad_token", bad_token)):
    tokens = vocab.encode(text)
    if len(tokens) != 1:
      raise ValueError(f"{field}.{key}={text!r} is {len(tokens)} tokens; a causal-LM PRM "
                       "needs one token each for good_token and bad_token")
    ids.append(tokens[0])
  return tuple(ids)


def named_verifier(cfg, task, workdir: str, name: str, user: str,
                   sharding: DecodeSharding | None = None):
  """The verifier `search.verifiers.<name>` (path, kind, and a causal-LM PRM's tokens);
  `user` names the config field that asked for it, for the error."""
  verifiers = cfg.search.verifiers
  if name not in verifiers:
    raise ValueError(f"{user}={name!r} is not under search.verifiers; known: "
                     f"{', '.join(verifiers)}")
  spec = verifier_config(cfg, name)
  return load_verifier(workdir, spec.path, f"search.verifiers.{name}.path",
                       prm_token_ids(spec.good_token, spec.bad_token, task.vocab,
                                     f"search.verifiers.{name}"), sharding,
                       dataclasses.asdict(spec), spec.kind)


def make_decoder(cfg, task, workdir: str, questions: list[dict], verifier_name: str,
                 policy, sharding: DecodeSharding | None = None) -> tree.Decoder:
  """The decoder of the small policy with the verifier `search.verifiers.<verifier_name>`
  (loaded onto `sharding`'s mesh, as the policy is)."""
  s = cfg.search
  width = pad_prompts([q["prompt_ids"] for q in questions], task.vocab.pad_id)[0].shape[1]
  return tree.Decoder(
      policy=policy,
      verifier=named_verifier(cfg, task, workdir, verifier_name, "a method's verifier",
                              sharding),
      sampling=SamplingConfig(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                              max_new_tokens=s.max_new_tokens),
      step_end_ids=tuple(sorted(task.step_end_ids)), eos_id=task.vocab.eos_id,
      pad_id=task.vocab.pad_id, prompt_width=width, max_step_tokens=s.max_step_tokens,
      likelihood=verifier_config(cfg, verifier_name).reads_likelihood)


def aggregation(cfg, verifier_name: str) -> str:
  """search.aggregation for a PRM; `last` for an ORM, the only reading it is trained for."""
  kind = cfg.search.verifiers[verifier_name].kind
  if cfg.search.aggregation not in STEP_AGGREGATIONS:
    raise ValueError(f"search.aggregation={cfg.search.aggregation!r}; use one of "
                     f"{STEP_AGGREGATIONS}")
  return "last" if kind == "orm" else cfg.search.aggregation


def method_configs(cfg) -> dict[str, MethodConfig]:
  return {name: config_schema.build(MethodConfig, fields, f"search.methods.{name}")
          for name, fields in cfg.search.methods.items()}


def question_keys(seed: int, questions: list[dict]):
  """One key per question, from its position in the test split: the same in every method
  (common random numbers make methods' differences less noisy)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(len(questions)))


def _verifier_comparison(configs, records, cfg, task) -> dict | None:
  """Can the verifiers find right answers? On best-of-N samples (same keys, so the same
  samples for every verifier): the process verifier's aggregations (last / min / prod)
  against the ORM and majority vote per N, and checks with intervals for every verifier
  that scored a best-of-N method. The process verifier (a PRM or a likelihood verifier,
  read after every step) is that of the first best-of-N method that has one."""
  scored = {}  # verifier name -> the first best-of-N method it scored
  for name, m in configs.items():
    if m.kind == "best_of_n":
      scored.setdefault(m.verifier, name)
  kinds = {v: cfg.search.verifiers[v].kind for v in scored}
  main = next((v for v in scored if kinds[v] != "orm"), None)
  if main is None:
    return None
  orm = next((v for v in scored if kinds[v] == "orm"), None)
  prm_records = records[scored[main]]
  table = results.verifier_comparison(prm_records, records[scored[orm]] if orm else None,
                                      task.same_answer)
  by_verifier = {v: (records[method], aggregation(cfg, v)) for v, method in scored.items()}
  return {"prm_method": scored[main], "prm_verifier": main, "orm_method": scored.get(orm),
          "verifier_kinds": kinds, "accuracy_by_n": table,
          "checks": {str(n): _verifier_check(main, by_verifier, n, task, cfg.search.seed)
                     for n in _check_budgets(by_verifier, main)}}


def _check_budgets(by_verifier: dict, main: str) -> list[int]:
  """The process verifier's largest N, and the largest N every verifier ran."""
  budgets = [set(recs) for recs, _ in by_verifier.values()]
  common = set.intersection(*budgets)
  return sorted({max(by_verifier[main][0])} | ({max(common)} if common else set()))


def _verifier_check(main: str, by_verifier: dict, n: int, task, seed: int) -> dict:
  """At N: one sample, majority vote, and each verifier's weighted and argmax accuracy
  (the verifiers that ran at N), the ordering's differences (`main` weighted against
  majority vote and the other verifiers, majority against one sample, `main` argmax
  against one sample), and each verifier's within-question AUROC, with 95% paired-bootstrap
  intervals over questions. by_verifier: name -> (budget -> records, step aggregation)."""
  at_n = {v: (recs[n], how) for v, (recs, how) in by_verifier.items() if n in recs}
  first, how = at_n[main]
  rows = {"one_sample": (first, how, "first"), "majority": (first, how, "majority")}
  for v, (recs, agg) in at_n.items():
    rows.update({f"{v}_weighted": (recs, agg, "weighted"), f"{v}_argmax": (recs, agg, "argmax")})
  correct = {name: np.array([_pick(r, agg, rule, task) for r in recs], np.float64)
             for name, (recs, agg, rule) in rows.items()}
  weights = bootstrap.resample_weights(len(first), 1000, seed)
  est = lambda v: bootstrap.estimate(v.mean(), bootstrap.means(weights, v))
  out = {"n": n, "questions": len(first), "accuracy": {k: est(v) for k, v in correct.items()}}
  pairs = [(f"{main}_weighted", "majority"), ("majority", "one_sample"),
           (f"{main}_argmax", "one_sample")] + [
               (f"{main}_weighted", f"{v}_weighted") for v in at_n if v != main]
  out["differences"] = {f"{a} - {b}": est(correct[a] - correct[b]) for a, b in pairs}
  out["within_question_auroc"] = {}
  for v, (recs, agg) in at_n.items():
    auc = results.within_question_auroc(recs, agg)
    entry = {"questions": len(auc), "value": None, "ci": None}  # none with both kinds
    if len(auc):
      w = bootstrap.resample_weights(len(auc), 1000, seed)
      entry.update(bootstrap.estimate(auc.mean(), bootstrap.means(w, auc)))
    out["within_question_auroc"][v] = entry
  return out


def _pick(record: dict, how: str, rule: str, task) -> bool:
  """One record's answer by `rule`; `first`: its first candidate (one sample)."""
  if rule == "first":
    return bool(record["candidates"][0]["correct"])
  return results.reselect(record, how, rule, task.same_answer)


def run(ctx) -> dict:
  """Every method at every budget. Each process searches its share of the questions on
  its own devices (the config's mesh over them), and the shares are joined per file."""
  cfg = ctx.config
  s = cfg.search
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  questions = read_split(ctx.workdir, "test")[:s.num_questions]
  policy = load_policy(ctx.workdir, sharding=sharding)
  decoders = {}
  mine = hosts.share(len(questions))
  prompts = [q["prompt_ids"] for q in questions]
  keys = question_keys(s.seed, questions)
  directory = ctx.stage_dir("search")
  manifest, skipped = {}, []
  jobs = list(method_configs(cfg).items())
  method_budgets = {name: sorted(m.budgets or s.budgets) for name, m in jobs}
  records = {}  # method -> budget -> records
  work = sampler.Work()  # every decode call of this run, all processes
  progress = tqdm(total=sum(map(len, method_budgets.values())), desc="search",
                  disable=not ctx.is_main)
  for name, method in jobs:
    budgets = method_budgets[name]
    if method.verifier not in decoders:
      decoders[method.verifier] = make_decoder(cfg, task, ctx.workdir, questions,
                                               method.verifier, policy, sharding)
    decoder = decoders[method.verifier]
    sizes = (policy.cfg.num_params, decoder.verifier.cfg.num_params)
    verifier = (method.verifier, s.verifiers[method.verifier].kind,
                aggregation(cfg, method.verifier))
    fitting = [n for n in budgets if methods.tree_shape(method, n) is not None]
    skipped += [f"{name}/n{n}" for n in budgets if n not in fitting]
    progress.update(len(budgets) - len(fitting))
    paths = {n: os.path.join(directory, name, f"n{n}.jsonl") for n in fitting}
    done = {n: read_jsonl(paths[n]) for n in fitting if exists(paths[n])}
    progress.update(len(done))
    missing = [n for n in fitting if n not in done]
    live_fractions = {}  # budget -> the live row-token fraction of the run that decoded it
    # best-of-N: one run at the largest missing budget serves every smaller one.
    for n in (missing[-1:] if method.kind == "best_of_n" else missing):
      progress.set_postfix_str(f"{name} n={n}")
      tally = sampler.Work()
      found = methods.run(dataclasses.replace(decoder, work=tally),
                          methods.tree_shape(method, n), [prompts[i] for i in mine],
                          keys[mine.start:mine.stop], s.rows_per_batch, verifier[2])
      tally = sampler.Work(*hosts.summed([tally.live_tokens, tally.row_tokens]))
      work.add(tally)
      for q, r in zip(questions[mine.start:mine.stop], found):
        check_finite_readings([r.prompt_score] + [x for c in r.candidates for x in c.step_scores],
                              lambda at: f"a step of question {q['id']!r} ({name}, n={n})",
                              f"search.verifiers.{method.verifier}")
      for m in ([k for k in missing if k <= n] if method.kind == "best_of_n" else [n]):
        live_fractions[m] = tally.live_fraction
        per_question = ([methods.first_samples(r, m) for r in found]
                        if method.kind == "best_of_n" else found)
        done[m] = hosts.gather_records(paths[m], [
            results.question_record(task, q, name, method, m, r, verifier, *sizes)
            for q, r in zip(questions[mine.start:mine.stop], per_question)])
        progress.update(1)
    manifest[name] = {str(n): {"file": os.path.relpath(paths[n], directory),
                               **results.summarize(done[n]),
                               "live_row_fraction": live_fractions.get(n)} for n in fitting}
    records[name] = done
  progress.close()
  out = {"methods": manifest, "skipped": skipped, "questions": len(questions),
         "verifiers": s.verifiers.to_dict(),
         "decode": {"mesh": dict(sharding.mesh.shape), "processes": jax.process_count()},
         "decode_work": {"live_row_tokens": work.live_tokens, "row_tokens": work.row_tokens,
                         "live_row_fraction": work.live_fraction}}
  comparison = _verifier_comparison(method_configs(cfg), records, cfg, task)
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "manifest.json"), out)
    if comparison:
      write_json_atomic(os.path.join(directory, "verifier_comparison.json"), comparison)
  return {name: {n: v["weighted"] for n, v in per.items()} for name, per in manifest.items()}
