"""Can a model tell a question's right samples from its wrong ones? Rescores a finished search's
best-of-N samples with any saved model and prints, per scorer, the within-question AUROC (a
right sample outscores a wrong one of the same question) with a 95% bootstrap interval over
questions, and best-of-K accuracy of its argmax and weighted vote beside one sample and
majority vote.

  python scripts/probe_verifiers.py --workdir runs/demo \
      --scorer policy=runs/demo/policy/small/final --scorer prm=runs/demo/prm/final

A model with a value head is read as a verifier (its reading after the last step); a model
without one scores a sample by its own log-likelihood of the sample's tokens (teacher-forced,
temperature 1). The likelihood of the policy that sampled is the reference: when it separates
right from wrong samples and a trained verifier does not, the information is in a model of
the policy's size and the verifier's training did not extract it.
"""
import argparse
import collections
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from tts.atomic_files import read_json
from tts.data.tasks import make_task
from tts.model import Transformer
from tts.scaling import bootstrap
from tts.search import sampler, verifier, verifier_metrics
from tts.stages.data import read_split
from tts.train.checkpoints import load_model


def log_likelihoods(model, sequences: list[list[int]], starts: list[int], pad_id: int,
                    batch_size: int = 256) -> np.ndarray:
  """Sum of log p(token | earlier tokens) over each sequence's tokens from `starts` on."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model.cfg, nnx.Rngs(0))))

  @jax.jit
  def token_log_probs(params, tokens):
    m = nnx.merge(graphdef, params)
    logits = m.logits(m.hidden(tokens[:, :-1])[0])
    return jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1)[..., 0]

  out = []
  for chunk, _, real in sampler.fixed_batches(sequences, None, batch_size):
    tokens, _ = sampler.pad_prompts(chunk, pad_id, 16)
    lp = np.asarray(token_log_probs(model.params, tokens))
    for i, seq in enumerate(chunk[:real]):
      start = starts[len(out)]
      out.append(float(lp[i, start - 1:len(seq) - 1].sum()))
  return np.asarray(out)


def within_question(scores, right, question, resamples: int = 1000) -> dict:
  """Mean within-question AUROC and its bootstrap interval over the questions that have both."""
  per_question = verifier_metrics.within_group_auroc(scores, right, question)
  weights = bootstrap.resample_weights(len(per_question), resamples, seed=0)
  return bootstrap.estimate(per_question.mean(), bootstrap.means(weights, per_question),
                            digits=3) | {"questions": len(per_question)}


def selection_accuracy(records: list[dict], scores: np.ndarray, log_scale: bool) -> dict:
  """Best-of-K accuracy of argmax and weighted vote by `scores`, majority vote and one
  sample (the mean over a question's samples). log_scale: scores are log-likelihoods, and a
  sample's vote weighs its probability."""
  acc, k = collections.Counter(), 0
  for r in records:
    cands, s = r["candidates"], scores[k:k + len(r["candidates"])]
    k += len(cands)
    vote = np.exp(s - s.max()) if log_scale else s
    right = {c["answer"]: c["correct"] for c in cands}
    weight, votes = collections.Counter(), collections.Counter()
    for c, v in zip(cands, vote):
      weight[c["answer"]] += v
      votes[c["answer"]] += 1
    acc["argmax"] += cands[int(np.argmax(s))]["correct"]
    acc["weighted"] += right[max(weight, key=weight.get)]
    acc["majority"] += right[max(votes, key=votes.get)]
    acc["one_sample"] += np.mean([c["correct"] for c in cands])
  return {name: round(v / len(records), 3) for name, v in acc.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--budget", type=int, default=256, help="search/best_of_n/n<budget>.jsonl")
  parser.add_argument("--first", type=int, default=64, help="samples read per question")
  parser.add_argument("--scorer", action="append", required=True, metavar="NAME=MODEL_DIR")
  args = parser.parse_args()

  cfg = ml_collections.ConfigDict(read_json(os.path.join(args.workdir, "config.json")))
  task = make_task(cfg.task)
  prompts = {q["id"]: q["prompt_ids"] for q in read_split(args.workdir, "test")}
  path = os.path.join(args.workdir, "search", "best_of_n", f"n{args.budget}.jsonl")
  records = [json.loads(line) for line in open(path)]
  for r in records:
    r["candidates"] = r["candidates"][:args.first]
  sequences, starts, right, question = [], [], [], []
  for q, r in enumerate(records):
    for c in r["candidates"]:
      sequences.append(prompts[r["id"]] + task.vocab.encode(c["text"]))
      starts.append(len(prompts[r["id"]]))
      right.append(c["correct"])
      question.append(q)
  right, question = np.asarray(right, bool), np.asarray(question)
  print(f"{path}: {len(records)} questions, first {args.first} samples each")
  for spec in args.scorer:
    name, directory = spec.split("=", 1)
    model = load_model(directory)
    if model.cfg.value_head:
      scores = verifier.final_readings(model, sequences, task.vocab.eos_id, task.vocab.pad_id, 256)
      how = "verifier reading"
    else:
      scores = log_likelihoods(model, sequences, starts, task.vocab.pad_id)
      how = "log-likelihood"
    print(json.dumps({"scorer": name, "model": directory, "score": how,
                      "within_question_auroc": within_question(scores, right, question),
                      **selection_accuracy(records, scores, log_scale=how != "verifier reading")}))


if __name__ == "__main__":
  main()
