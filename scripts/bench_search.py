"""Beam search throughput: our batched, cached decoder against two loops written the way
peers write them, one question at a time: the fair peer (search-and-learn's setup: the
policy with prefix caching, as vLLM, and the verifier re-reading whole sequences, as
transformers) and the re-prefilling loop (every step re-feeds the whole prefix to the
policy and the verifier). Same models, questions and per-row keys; the script fails if an
engine chooses differently.

  python scripts/bench_search.py --workdir runs/demo [--questions 64] [--n 16] [--m 4]

Needs the demo's trained small policy (workdir/policy/small/final). The verifier is the
first of --verifier (default: prm/final) that exists in the workdir; without one the policy
with a freshly initialised value head stands in (speed does not depend on what it learned;
the line "verifier:" says which was used). Every search runs once to compile, then
--repeats timed rounds (each engine once per round, in turn), the fastest of which counts:
the machine's noise only ever adds time. "live row-tokens" is the share of the row-tokens our
decoder computed that were live candidates' tokens.
"""
import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.cli import load_config
from tts.data.tasks import make_task
from tts.model import LoadedModel, Transformer
from tts.roofline import matmul_peak
from tts.search import answers, methods, sampler, tree, verifier
from tts.search.methods import MethodConfig
from tts.search.sampler import SamplingConfig
from tts.search.tree import Advanced
from tts.stages.data import read_split
from tts.stages.policy import load_policy
from tts.train.checkpoints import load_model


class RefeedEngine:
  """The peers' loop as an Engine: no cache survives a step. Each step prefills the whole
  prefix again, decodes one step, and has the verifier read the whole sequence again."""

  def __init__(self, decoder: tree.Decoder):
    self.d, self.eos_id = decoder, decoder.eos_id
    ver = decoder.verifier
    self._values = jax.jit(lambda p, t: jax.nn.sigmoid(nnx.merge(ver.graphdef, p)(t).values))

  def read(self, seqs):
    tokens, _ = sampler.pad_prompts(seqs, self.d.pad_id)
    return np.asarray(self._values(self.d.verifier.params, tokens))

  def start(self, prompts, width):
    values = self.read(prompts)
    scores = np.asarray([values[i, len(p) - 1] for i, p in enumerate(prompts)])
    seqs = [list(p) for p in prompts for _ in range(width)]
    return (seqs, [len(s) for s in seqs]), np.repeat(scores, width)

  def advance(self, state, keys, live, greedy):
    seqs, prompt_lengths = state
    d, pol = self.d, self.d.policy
    tokens, lengths = sampler.pad_prompts(seqs, d.pad_id)
    decode_state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths,
                                   tokens.shape[1] + d.max_step_tokens)
    decode_state = decode_state._replace(prompt_lengths=jnp.asarray(prompt_lengths, jnp.int32))
    sampling = SamplingConfig(**{**d.sampling.__dict__, "temperature": 0.0}) if greedy \
        else d.sampling
    _, step = sampler.decode(pol.graphdef, pol.params, decode_state, keys, jnp.asarray(live),
                             sampling, tuple(d.step_end_ids) + (d.eos_id,), d.max_step_tokens)
    step_tokens, step_lengths, stopped, capped = jax.device_get(
        (step.tokens, step.lengths, step.stopped, step.capped))
    new = [s + step_tokens[i, :step_lengths[i]].tolist() for i, s in enumerate(seqs)]
    values = self.read(new)
    at = verifier.reading_positions(step_tokens, step_lengths, d.eos_id)
    readings = np.asarray([values[i, len(s) + at[i]] if at[i] >= 0 else 0.0
                           for i, s in enumerate(seqs)], np.float32)
    return (new, prompt_lengths), Advanced(step_tokens, step_lengths, stopped, capped, readings)

  def reorder(self, state, rows):
    seqs, prompt_lengths = state
    return [list(seqs[r]) for r in rows], [prompt_lengths[r] for r in rows]


class PrefixCachedEngine:
  """The fair peer: the policy keeps its cache across steps and its rows follow the beams
  (a shared prefix is never recomputed, as vLLM's prefix caching), while the verifier reads
  each live candidate's whole sequence again after every step (transformers, no cache)."""

  def __init__(self, decoder: tree.Decoder, refeed: RefeedEngine):
    self.d, self.refeed, self.eos_id = decoder, refeed, decoder.eos_id

  def start(self, prompts, width):
    d, pol = self.d, self.d.policy
    tokens, lengths = sampler.pad_prompts(prompts, d.pad_id, width=d.prompt_width)
    state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths,
                            d.capacity(d.prompt_width + d.max_step_tokens))
    fan_out = np.repeat(np.arange(len(prompts)), width)
    (seqs, _), scores = self.refeed.start(prompts, width)
    return (sampler.reorder(state, fan_out), seqs), scores

  def advance(self, state, keys, live, greedy):
    policy_state, seqs = state
    d, pol = self.d, self.d.policy
    capacity = d.capacity(max(len(seqs[i]) for i in np.flatnonzero(live)) + d.max_step_tokens)
    if capacity > policy_state.cache.max_len:
      policy_state = sampler.grow(policy_state, capacity)
    sampling = dataclasses.replace(d.sampling, temperature=0.0) if greedy else d.sampling
    policy_state, step = sampler.decode(pol.graphdef, pol.params, policy_state, keys,
                                        jnp.asarray(live), sampling,
                                        tuple(d.step_end_ids) + (d.eos_id,), d.max_step_tokens)
    tokens, lengths, stopped, capped = jax.device_get(
        (step.tokens, step.lengths, step.stopped, step.capped))
    seqs = [s + tokens[i, :lengths[i]].tolist() for i, s in enumerate(seqs)]
    reading = np.flatnonzero(live)
    values = self.refeed.read([seqs[i] for i in reading])
    at = verifier.reading_positions(tokens, lengths, d.eos_id)
    readings = np.zeros(len(seqs), np.float32)
    for j, i in enumerate(reading):
      if at[i] >= 0:
        readings[i] = values[j, len(seqs[i]) - lengths[i] + at[i]]
    return (policy_state, seqs), Advanced(tokens, lengths, stopped, capped, readings)

  def reorder(self, state, rows):
    return sampler.reorder(state[0], rows), [list(state[1][r]) for r in rows]


def load_verifier(workdir, choices, policy):
  for path in choices:
    if os.path.exists(os.path.join(workdir, path, "model.json")):
      return load_model(os.path.join(workdir, path)), path
  cfg = policy.cfg.__class__(**{**policy.cfg.__dict__, "value_head": True})
  model = Transformer(cfg, nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model))
  params.update({k: v for k, v in policy.params.items()})  # policy weights, new value head
  return LoadedModel.create(cfg, params), "policy weights + untrained value head"


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--policy", default="small", choices=("small", "large"),
                      help="which trained policy searches (large: the 14x model)")
  parser.add_argument("--verifier", nargs="*", default=["prm/final"])
  parser.add_argument("--questions", type=int, default=64)
  parser.add_argument("--n", type=int, default=16)
  parser.add_argument("--m", type=int, default=4)
  parser.add_argument("--temperature", type=float, default=0.8)
  parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the fastest counts")
  args = parser.parse_args()

  cfg = load_config(args.config)
  task = make_task(cfg.task)
  questions = read_split(args.workdir, "test")[:args.questions]
  prompts = [q["prompt_ids"] for q in questions]
  policy = load_policy(args.workdir, args.policy)
  ver, ver_name = load_verifier(args.workdir, args.verifier, policy)
  width = sampler.pad_prompts(prompts, task.vocab.pad_id)[0].shape[1]
  decoder = tree.Decoder(policy, ver, SamplingConfig(temperature=args.temperature,
                                                     max_new_tokens=cfg.data.max_len),
                         tuple(sorted(task.step_end_ids)), task.vocab.eos_id,
                         task.vocab.pad_id, prompt_width=width, max_step_tokens=16)
  refeed = RefeedEngine(decoder)
  shape = methods.tree_shape(MethodConfig("beam", beam_width=args.m), args.n)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(len(prompts)))
  rows = len(prompts) * args.n

  print(f"devices: {jax.devices()}  verifier: {ver_name}")
  print(f"beam search N={args.n} M={args.m}, {len(prompts)} questions, temperature "
        f"{args.temperature}, policy {policy.cfg.num_params:,} params, verifier "
        f"{ver.cfg.num_params:,}")
  peak, size = matmul_peak()
  work = sampler.Work()

  def ours():
    work.live_tokens = work.row_tokens = 0  # each run tallies the same work: keep one
    return methods.run(dataclasses.replace(decoder, work=work), shape, prompts, keys, rows)

  def per_question(engine):
    return lambda: [tree.search(engine, [p], keys[i:i + 1], shape)[0]
                    for i, p in enumerate(prompts)]

  engines = {"ours (batched, cached)": ours,
             "fair peer (prefix cache)": per_question(PrefixCachedEngine(decoder, refeed)),
             "peers (refeed)": per_question(refeed)}
  for search in engines.values():
    search()  # compiles every shape the timed run meets (batch, cache and prefix sizes)
  found, seconds = {}, {name: float("inf") for name in engines}
  for _ in range(args.repeats):
    for name, search in engines.items():
      start = time.perf_counter()
      found[name] = search()
      seconds[name] = min(seconds[name], time.perf_counter() - start)
  fast, t_ours = found["ours (batched, cached)"], seconds["ours (batched, cached)"]

  def chosen(result):
    """The weighted vote's pick: (its tokens, its answer), or None with no answer found."""
    texts = [task.vocab.decode(c.tokens) for c in result.candidates]
    found = [task.extract_answer(t) for t in texts]
    scores = [verifier.aggregate(c.step_scores, "last") for c in result.candidates]
    i = answers.select(found, scores, "weighted", task.same_answer)
    return None if i is None else (result.candidates[i].tokens, found[i])

  # Agreement is on the chosen candidate itself; a question where neither engine chose one
  # agrees only if their candidate sets are identical (two Nones prove nothing alone).
  def agreement(other):
    same = [sorted(c.tokens for c in a.candidates) == sorted(c.tokens for c in b.candidates)
            for a, b in zip(fast, other)]
    picks = [(chosen(a), chosen(b)) for a, b in zip(fast, other)]
    agree = [x == y and (x is not None or s) for (x, y), s in zip(picks, same)]
    return agree, sum(x is None and y is None for x, y in picks), np.mean(same)

  generated = sum(r.counts.generated_tokens for r in fast)
  scored = sum(r.counts.verifier_tokens for r in fast)
  flops = 2 * policy.cfg.num_params * generated + 2 * ver.cfg.num_params * scored
  roofline = peak * 1e9 / (2 * (policy.cfg.num_params + ver.cfg.num_params))
  print(f"matmul peak: {peak:.1f} GFLOP/s (f32, {size}^3)")
  print(f"{'':28s}{'wall s':>10s}{'tokens/s':>12s}{'ours x':>9s}")
  for name, t in seconds.items():
    print(f"{name:28s}{t:10.2f}{generated / t:12.0f}{t / t_ours:9.1f}")
  print("targets: >= 10x the re-prefilling loop, >= 4x the fair peer")
  print(f"live row-tokens: {work.live_fraction:.3f} of the {work.row_tokens:,} our decoder "
        f"computed (target >= 0.8)")
  disagree = []
  for name in list(engines)[1:]:
    agree, no_answer, same_sets = agreement(found[name])
    print(f"same chosen candidate as {name}: {sum(agree)}/{len(agree)} questions ({no_answer} "
          f"with no answer in either); identical candidate sets: {same_sets:.3f}")
    if not all(agree):
      bad = [str(q["id"]) for q, ok in zip(questions, agree) if not ok]
      disagree.append(f"{name} on {len(bad)} questions ({', '.join(bad[:5])}...)")
  print(f"generated tokens {generated:,}, verifier tokens {scored:,}")
  print(f"decode: {generated / t_ours:.0f} tokens/s = {flops / t_ours / 1e9:.2f} GFLOP/s "
        f"(2 x params x tokens, policy + verifier) = {flops / t_ours / 1e9 / peak:.1%} of peak; "
        f"roofline at peak: {roofline:.0f} tokens/s")
  if disagree:
    sys.exit(f"bench_search: an engine chose differently from ours ({'; '.join(disagree)}): "
             "the timing compares different work")


if __name__ == "__main__":
  main()
