"""`difficulty` stage: how hard each search question is for the small policy.

K samples per question (the questions the search stage uses: the first
search.num_questions of the test split). Oracle difficulty: their pass@1. Predicted
difficulty: the PRM's mean reading after their last step, no ground truth used. Prompt
difficulty: the PRM's reading after the prompt alone (the position the search engine
scores before it samples), no sample at all. Each split into equal-count quantile bins.
Also the 14x model's greedy answer per question, which the FLOPs-matched comparison needs,
and the compute each estimate spent, so selection can charge it.
Writes difficulty/questions.jsonl and difficulty/manifest.json (WORKSPACE.md).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tts import config_schema, hosts
from tts.atomic_files import write_json_atomic, write_jsonl_atomic
from tts.data.tasks import make_task
from tts.model.sharding import decode_sharding
from tts.scaling import difficulty, flops
from tts.scaling.config import DifficultyConfig
from tts.search import sampler, verifier
from tts.search.sampler import SamplingConfig
from tts.stages.data import read_split
from tts.stages.policy import load_policy
from tts.stages.search import named_verifier


def sample_questions(model, prompts: list[list[int]], keys, sampling: SamplingConfig, task,
                     batch_size: int, desc: str, show: bool) -> list[list[int]]:
  """sample_all with a progress bar over its rows, on the model's decode mesh."""
  with tqdm(total=len(prompts), desc=desc, disable=not show) as bar:
    return sampler.sample_all(model.graphdef, model.params, prompts, keys, sampling,
                              (task.vocab.eos_id,), task.vocab.pad_id, batch_size,
                              progress=bar.update, sharding=model.sharding)


def estimation_cost(policy, scorer, generated: list[list[int]], read: list[list[int]]
                    ) -> dict:
  """Compute one question's difficulty estimate spent: the policy decoding each of
  `generated` (prompt + sample, each its own sequence) and the verifier prefilling each of
  `read`. flops: parameters only, as the search records' counts; attention_flops: the
  (query, key) pairs of both (tts/scaling/flops.py), which select and flops add."""
  policy_tokens, verifier_tokens = sum(map(len, generated)), sum(map(len, read))
  policy_pairs = int(sum(flops.causal_pairs(0, len(s)) for s in generated))
  verifier_pairs = int(sum(flops.causal_pairs(0, len(s)) for s in read))
  return {"generations": len(generated), "policy_tokens": policy_tokens,
          "verifier_tokens": verifier_tokens,
          "flops": 2 * policy.num_params * policy_tokens + 2 * scorer.num_params * verifier_tokens,
          "policy_attention_pairs": policy_pairs, "verifier_attention_pairs": verifier_pairs,
          "attention_flops": (flops.attention_flops_per_pair(policy) * policy_pairs
                              + flops.attention_flops_per_pair(scorer) * verifier_pairs)}


def measure(ctx, cfg, task, questions, mine: range, small, large, prm) -> list[dict]:
  """Per question of this process's share: pass@1 and the PRM's mean final reading over K
  samples, the PRM's prompt reading, the 14x model's greedy answer, and what each cost."""
  k, q, eos = cfg.samples, len(questions), task.vocab.eos_id
  share = questions[mine.start:mine.stop]
  # Sample j of question i draws with fold_in(fold_in(key(seed), i), j): batching-independent.
  base = jax.random.key(cfg.seed)
  keys = jax.vmap(lambda i: jax.vmap(lambda j: jax.random.fold_in(
      jax.random.fold_in(base, i), j))(jnp.arange(k)))(jnp.arange(mine.start, mine.stop))
  prompts = [x["prompt_ids"] for x in share for _ in range(k)]
  sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
  samples = sample_questions(small, prompts, keys.reshape(-1), sampling, task, cfg.batch_size,
                             "difficulty/samples", ctx.is_main)
  texts = [task.vocab.decode(s) for s in samples]
  correct = np.array([task.is_correct(t, share[i // k]) for i, t in enumerate(texts)],
                     bool).reshape(len(share), k)
  # The PRM reads each sample where its text ends (a trailing eos is not read).
  read = [p + (s[:-1] if s and s[-1] == eos else s) for p, s in zip(prompts, samples)]
  scores = verifier.final_readings(prm, read, eos, task.vocab.pad_id,
                                   cfg.batch_size).reshape(len(share), k).astype(np.float64)
  verifier.check_finite_readings(
      scores, lambda at: f"sample {at[1]} of question {share[at[0]]['id']!r}",
      f"search.verifiers.{cfg.verifier}")

  # One prefill per prompt, read after its last token (as the engine's score_prompts).
  prompt_scores = verifier.final_readings(prm, [x["prompt_ids"] for x in share], eos,
                                          task.vocab.pad_id, min(cfg.batch_size, q))
  verifier.check_finite_readings(
      prompt_scores, lambda at: f"the prompt of question {share[at[0]]['id']!r}",
      f"search.verifiers.{cfg.verifier}")

  greedy_keys = jax.random.split(jax.random.key(cfg.seed), q)[mine.start:mine.stop]
  greedy = sample_questions(large, [x["prompt_ids"] for x in share], greedy_keys,
                            SamplingConfig(temperature=0.0, max_new_tokens=cfg.max_new_tokens),
                            task, min(cfg.batch_size, q), "difficulty/large greedy", ctx.is_main)

  pass1 = difficulty.pass_at_1(correct)
  predicted = difficulty.mean_final_score(scores)
  n_large = large.cfg.num_params
  records = []
  for i, x in enumerate(share):
    large_tokens = len(x["prompt_ids"]) + len(greedy[i])
    records.append({
        "id": x["id"], "difficulty": x["difficulty"],
        "pass1": round(float(pass1[i]), 6), "predicted_score": round(float(predicted[i]), 6),
        "prompt_score": round(float(prompt_scores[i]), 6),
        "large_greedy_correct": bool(task.is_correct(task.vocab.decode(greedy[i]), x)),
        "large_tokens": large_tokens, "large_flops": 2 * n_large * large_tokens,
        "estimation": estimation_cost(
            small.cfg, prm.cfg, [x["prompt_ids"] + s for s in samples[i * k:(i + 1) * k]],
            read[i * k:(i + 1) * k]),
        "prompt_estimation": estimation_cost(small.cfg, prm.cfg, [], [x["prompt_ids"]])})
  return records


def _with_bins(record: dict, **bins) -> dict:
  """The record with its bins right after the scores they come from (the file's layout)."""
  items = list(record.items())
  at = [key for key, _ in items].index("prompt_score") + 1
  return dict(items[:at] + list(bins.items()) + items[at:])


def run(ctx) -> dict:
  """Each process measures its share of the questions on its own devices (decode_mesh);
  the bins are made over all of them."""
  cfg = config_schema.build(DifficultyConfig, ctx.config.difficulty, "difficulty")
  sharding = decode_sharding(ctx.config.decode_mesh, ctx.config.logical_axis_rules)
  task = make_task(ctx.config.task)
  questions = read_split(ctx.workdir, "test")[:ctx.config.search.num_questions]
  small = load_policy(ctx.workdir, sharding=sharding)
  large = load_policy(ctx.workdir, "large", sharding=sharding)
  prm = named_verifier(ctx.config, task, ctx.workdir, cfg.verifier, "difficulty.verifier",
                       sharding)
  mine = hosts.share(len(questions))
  directory = ctx.stage_dir("difficulty")
  records = hosts.all_records(os.path.join(directory, "questions.jsonl"),
                              measure(ctx, cfg, task, questions, mine, small, large, prm))
  q = len(questions)
  pass1 = np.array([r["pass1"] for r in records])
  predicted = np.array([r["predicted_score"] for r in records])
  prompt_scores = np.array([r["prompt_score"] for r in records])
  oracle_bins = difficulty.quantile_bins(pass1, cfg.num_bins)
  predicted_bins = difficulty.quantile_bins(predicted, cfg.num_bins)
  prompt_bins = difficulty.quantile_bins(prompt_scores, cfg.num_bins)
  records = [_with_bins(r, oracle_bin=int(o), predicted_bin=int(p), prompt_bin=int(b))
             for r, o, p, b in zip(records, oracle_bins, predicted_bins, prompt_bins)]
  k = cfg.samples
  manifest = {
      "questions": q, "samples": k, "num_bins": cfg.num_bins, "verifier": cfg.verifier,
      "pass1": round(float(pass1.mean()), 4),
      "pass1_by_oracle_bin": [round(float(pass1[oracle_bins == b].mean()), 4)
                              for b in range(1, cfg.num_bins + 1)],
      "rank_correlation": round(difficulty.spearman(pass1, predicted), 4),
      "bin_agreement": round(float(np.mean(oracle_bins == predicted_bins)), 4),
      "prompt_rank_correlation": round(difficulty.spearman(pass1, prompt_scores), 4),
      "prompt_bin_agreement": round(float(np.mean(oracle_bins == prompt_bins)), 4),
      "large_greedy_accuracy": round(float(np.mean([r["large_greedy_correct"]
                                                    for r in records])), 4),
      **{field: {key: sum(r[field][key] for r in records) for key in records[0][field]}
         for field in ("estimation", "prompt_estimation")}}
  if ctx.is_main:
    write_jsonl_atomic(os.path.join(directory, "questions.jsonl"), records)
    write_json_atomic(os.path.join(directory, "manifest.json"), manifest)
  return {k_: manifest[k_] for k_ in ("pass1_by_oracle_bin", "rank_correlation",
                                      "bin_agreement", "prompt_rank_correlation",
                                      "prompt_bin_agreement", "large_greedy_accuracy")}
