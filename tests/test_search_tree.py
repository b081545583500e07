"""The tree searches: decoding in steps, cache reorders, selection, and what each method keeps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from search_models import (EOS, NEWLINE, PAD, PROMPTS, full_readings, make_decoder,
                           solution_log_probs)
from search_models import keys as _keys

from tts.model import LoadedModel
from tts.search import answers, methods, sampler, tree, verifier
from tts.search.methods import MethodConfig

CAPACITY = 8 + 20  # prompt width + max_new_tokens


@pytest.fixture(scope="module")
def decoder():
  return make_decoder()  # caches grow 16 -> 28


def _forward_last_logits(model: LoadedModel, seqs):
  """From-scratch forward pass over whole prefixes: the logits after each one's last token."""
  m = nnx.merge(model.graphdef, model.params)
  tokens, lengths = sampler.pad_prompts(seqs, PAD)
  logits = m(jnp.asarray(tokens)).logits
  return np.asarray(logits[np.arange(len(seqs)), lengths - 1])


@pytest.mark.slow
def test_stepwise_batched_decoding_equals_one_row_and_one_call(decoder):
  """Rows draw the same tokens alone or in a batch, in several calls or in one."""
  pol, cfg = decoder.policy, decoder.sampling
  keys = _keys(3)
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths, CAPACITY)
  live = jnp.ones(3, bool)
  pieces = [[] for _ in PROMPTS]
  for _ in range(4):  # one step per call
    state, step = sampler.decode(pol.graphdef, pol.params, state, keys, live, cfg,
                                 (NEWLINE, EOS), 6)
    for i in range(3):
      pieces[i] += step.tokens[i, :step.lengths[i]].tolist()
    live = live & ~jnp.asarray([bool(p) and p[-1] == EOS for p in pieces])
  for i, prompt in enumerate(PROMPTS):
    t, n = sampler.pad_prompts([prompt], PAD, width=8)
    alone = sampler.prefill(pol.graphdef, pol.params, t, n, CAPACITY)
    _, whole = sampler.decode(pol.graphdef, pol.params, alone, keys[i:i + 1],
                              jnp.ones(1, bool), cfg, (EOS,), 20)
    whole = whole.tokens[0, :whole.lengths[0]].tolist()
    assert pieces[i] == whole[:len(pieces[i])]
  assert sum(map(len, pieces)) > 8 and any(NEWLINE in p for p in pieces)


@pytest.mark.slow
def test_reordered_cache_gives_the_logits_of_the_recomputed_prefixes(decoder):
  pol = decoder.policy
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths, CAPACITY)
  state = sampler.reorder(state, np.repeat(np.arange(3), 2))  # two candidates per prompt
  state, step = sampler.decode(pol.graphdef, pol.params, state, _keys(6), jnp.ones(6, bool),
                               decoder.sampling, (NEWLINE, EOS), 6)
  selected = np.array([5, 0, 0, 3, 2, 5])
  state = sampler.reorder(state, selected)
  prefixes = [PROMPTS[r // 2] + step.tokens[r, :step.lengths[r]].tolist() for r in selected]
  np.testing.assert_allclose(np.asarray(state.logits), _forward_last_logits(pol, prefixes),
                             atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(state.cache.lengths), [len(p) for p in prefixes])


@pytest.mark.slow
def test_a_grown_cache_decodes_like_a_full_size_one(decoder):
  pol = decoder.policy
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  small = sampler.prefill(pol.graphdef, pol.params, tokens, lengths, 14)
  full = sampler.prefill(pol.graphdef, pol.params, tokens, lengths, CAPACITY)
  grown = sampler.grow(small, CAPACITY)
  assert grown.cache.max_len == CAPACITY
  outs = [sampler.decode(pol.graphdef, pol.params, s, _keys(3), jnp.ones(3, bool),
                         decoder.sampling, (EOS,), 20)[1] for s in (grown, full)]
  np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
  assert int(outs[0].lengths.max()) > 6


@pytest.mark.slow
def test_incremental_verifier_scores_equal_a_full_pass(decoder):
  ver = decoder.verifier
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  scored = verifier.score_prompts(ver.graphdef, ver.params, tokens, lengths, CAPACITY)
  new = np.array([[4, 3, 0], [5, 6, 3], [2, 0, 0]], np.int32)
  n_new = np.array([2, 3, 1], np.int32)
  step = verifier.score_tokens(ver.graphdef, ver.params, scored.state, new, n_new)
  model = nnx.merge(ver.graphdef, ver.params)
  for i, prompt in enumerate(PROMPTS):
    seq = prompt + new[i, :n_new[i]].tolist()
    full = jax.nn.sigmoid(model(jnp.asarray([seq])).values[0])
    np.testing.assert_allclose(scored.probs[i, 0], full[len(prompt) - 1], atol=1e-5)
    np.testing.assert_allclose(step.probs[i, :n_new[i]], full[len(prompt):], atol=1e-5)


@pytest.mark.parametrize("likelihood", ("", "mean"))
def test_reading_where_steps_end_equals_reading_every_token(decoder, likelihood):
  """The search reads each row once, at its last token that is not an eos (a value head's
  last layer runs there only): the same reading as at that token when every token is read,
  and the same verifier state after."""
  model = decoder.policy if likelihood else decoder.verifier
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  new = np.array([[4, 3, EOS], [5, 6, 3], [EOS, 0, 0]], np.int32)
  n_new = np.array([3, 3, 1], np.int32)
  read_at = verifier.reading_positions(new, n_new, EOS)
  assert read_at.tolist() == [1, 2, -1]
  steps = []
  for at in (None, read_at):
    scored = verifier.score_prompts(model.graphdef, model.params, tokens, lengths, CAPACITY,
                                    None, likelihood)
    steps.append(verifier.score_tokens(model.graphdef, model.params, scored.state, new, n_new,
                                       None, likelihood, at))
  every, once = steps
  assert once.probs.shape == (3, 1)
  np.testing.assert_allclose(once.probs[:2, 0], np.asarray(every.probs)[[0, 1], [1, 2]],
                             atol=1e-6)
  for a, b in zip(jax.tree.leaves(every.state), jax.tree.leaves(once.state)):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("how", verifier.LIKELIHOOD_READINGS)
def test_incremental_likelihood_readings_equal_a_full_pass(decoder, how):
  """A likelihood verifier fed in two calls, its rows reordered in between, reads what one
  teacher-forced pass over each whole sequence gives: the min or geometric-mean probability
  of the tokens after the prompt."""
  lm = decoder.policy
  tokens, lengths = sampler.pad_prompts(PROMPTS, PAD, width=8)
  scored = verifier.score_prompts(lm.graphdef, lm.params, tokens, lengths, CAPACITY, None, how)
  np.testing.assert_array_equal(scored.probs[:, 0], 1.0)
  first = np.array([[4, 3, 0], [5, 6, 3], [2, 0, 0]], np.int32)
  first_n = np.array([2, 3, 1], np.int32)
  step = verifier.score_tokens(lm.graphdef, lm.params, scored.state, first, first_n, None, how)
  rows = np.array([2, 0, 0])
  state = sampler.reorder(step.state, rows)
  second = np.array([[6, 5, 4], [3, 0, 0], [4, 4, 0]], np.int32)
  second_n = np.array([3, 0, 2], np.int32)  # a row that reads nothing keeps its reading
  last = verifier.score_tokens(lm.graphdef, lm.params, state, second, second_n, None, how)
  reduce = {"min": np.minimum.accumulate,
            "mean": lambda x: np.cumsum(x) / np.arange(1, len(x) + 1)}[how]
  for i, r in enumerate(rows):
    prompt = PROMPTS[r]
    new = first[r, :first_n[r]].tolist() + second[i, :second_n[i]].tolist()
    expected = np.exp(reduce(solution_log_probs(lm, prompt, new)))
    np.testing.assert_allclose(step.probs[r, :first_n[r]], expected[:first_n[r]], rtol=1e-4)
    got = last.probs[i, :second_n[i]] if second_n[i] else step.probs[r, first_n[r] - 1:first_n[r]]
    np.testing.assert_allclose(got, expected[first_n[r] - (second_n[i] == 0):], rtol=1e-4)
    assert np.all(expected < 1.0)


@pytest.mark.slow  # ~8 s
def test_dvts_with_one_subtree_is_greedy_by_verifier(decoder):
  """A from-scratch reference: each round re-feed the best unfinished prefix, sample M
  whole steps from it, score the whole sequences, keep the best; stop with M ended ones;
  the finished ones come first among the final candidates."""
  m, q = 4, 1
  found = tree.search(decoder, [PROMPTS[q]], _keys(2)[q:q + 1],
                      methods.tree_shape(MethodConfig("dvts", beam_width=m), m))[0]
  pol, cfg = decoder.policy, decoder.sampling
  prefix, scores, pool, round_index = [], [], [], 0
  while len(pool) < m and round_index < 40:
    keys = tree.round_keys(_keys(2)[q:q + 1], round_index, m)
    tokens, lengths = sampler.pad_prompts([PROMPTS[q] + prefix] * m, PAD)
    state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths,
                            tokens.shape[1] + cfg.max_new_tokens)
    state = state._replace(prompt_lengths=jnp.full(m, len(PROMPTS[q])))
    _, step = sampler.decode(pol.graphdef, pol.params, state, keys, jnp.ones(m, bool), cfg,
                             (NEWLINE, EOS), cfg.max_new_tokens)  # whole steps
    options = []
    for j in range(m):
      new = step.tokens[j, :step.lengths[j]].tolist()
      values = full_readings(decoder.verifier, PROMPTS[q] + prefix + new)
      text = len(new) - (new[-1] == EOS)
      step_scores = scores + [float(values[len(PROMPTS[q] + prefix) + text - 1])] * (text > 0)
      finished = new[-1] == EOS
      options.append((prefix + new, step_scores, finished or bool(step.capped[j]), finished))
    pool += [o for o in options if o[2]]
    open_options = [o for o in options if not o[2]]
    round_index += 1
    if not open_options:
      break
    prefix, scores = max(open_options, key=lambda o: o[1][-1])[:2]
  final = sorted(pool, key=lambda o: (not o[3], -o[1][-1]))[:m]
  assert sorted(c.tokens for c in found.candidates) == sorted(o[0] for o in final)
  assert found.counts.rounds == round_index


@pytest.mark.slow
def test_best_of_n_subsets_equal_smaller_runs(decoder):
  """Best-of-n read off a best-of-N run equals running best-of-n itself."""
  big = methods.run(decoder, methods.tree_shape(MethodConfig(), 8), PROMPTS, _keys(3), 24)
  small = methods.run(decoder, methods.tree_shape(MethodConfig(), 2), PROMPTS, _keys(3), 24)
  for b, s in zip(big, small):
    cut = methods.first_samples(b, 2)
    by_slot = sorted(s.candidates, key=lambda c: c.slot)
    assert [c.tokens for c in cut.candidates] == [c.tokens for c in by_slot]
    assert cut.counts == s.counts


@pytest.mark.slow
def test_counts_add_up(decoder):
  """Best-of-N: generated tokens are the candidates' tokens; a batch of several questions
  counts each question on its own (padding copies not counted)."""
  shape = methods.tree_shape(MethodConfig(), 4)
  res = methods.run(decoder, shape, PROMPTS, _keys(3), rows_per_batch=8)  # 2 per batch
  alone = [methods.run(decoder, shape, [p], _keys(3)[i:i + 1], 4)[0]
           for i, p in enumerate(PROMPTS)]
  for r, a, prompt in zip(res, alone, PROMPTS):
    assert len(r.candidates) == 4
    assert r.counts.generated_tokens == sum(len(c.tokens) for c in r.candidates)
    assert r.counts.verifier_tokens == len(prompt) + r.counts.generated_tokens
    assert r.counts == a.counts
    assert r.counts.rounds == max(c.rounds for c in r.candidates)


def test_weighted_selection_sums_scores_of_equivalent_answers():
  same = lambda a, b: float(a) == float(b)  # "2" and "2.0" are the same answer
  found = ["2", "7", "2.0", None, "7", "2"]
  scores = [0.35, 0.9, 0.35, 1.0, 0.05, 0.35]  # "2": 1.05 only with "2.0" merged; "7": 0.95
  assert answers.group_answers(found, same) == [[0, 2, 5], [1, 4]]
  assert found[answers.select(found, scores, "argmax", same)] == "7"
  assert found[answers.select(found, scores, "weighted", same)] == "2"
  assert found[answers.select(found, [0.35, 0.9, 0.35, 1.0, 0.5, 0.35], "weighted", same)] == "7"
  assert found[answers.select(found, scores, "majority", same)] == "2"
  assert answers.select([None, None], [1.0, 1.0], "weighted", same) is None


def test_step_aggregations():
  assert verifier.aggregate([0.9, 0.5, 0.8], "last") == 0.8
  assert verifier.aggregate([0.9, 0.5, 0.8], "min") == 0.5
  assert verifier.aggregate([0.9, 0.5, 0.8], "prod") == pytest.approx(0.36)
  with pytest.raises(ValueError, match="mean"):
    verifier.aggregate([0.5], "mean")


def test_tree_shapes():
  assert methods.tree_shape(MethodConfig("beam"), 16) == tree.TreeShape(1, 4, 4)
  assert methods.tree_shape(MethodConfig("beam", beam_width=4), 64) == tree.TreeShape(1, 16, 4)
  assert methods.tree_shape(MethodConfig("dvts", beam_width=4), 16) == tree.TreeShape(4, 1, 4)
  assert methods.tree_shape(MethodConfig("beam"), 8) is None  # sqrt(8) is not whole
  assert methods.tree_shape(MethodConfig("beam", beam_width=4), 2) is None
  assert methods.generations(MethodConfig("lookahead", 4, lookahead=3), 16) == 64
  with pytest.raises(ValueError, match="kind"):
    MethodConfig("mcts")


def _advance_all(decoder, live, exit_below):
  """whole_steps from a fresh start of PROMPTS x 8 rows, with `live` rows taking part."""
  d = dataclasses.replace(decoder, exit_below=exit_below, work=sampler.Work())
  state, _ = d.start(PROMPTS, 8)
  counts = [tree.Counts() for _ in PROMPTS]
  state, steps = tree.whole_steps(d, state, _keys(24), live, False, counts, 8)
  return d.work, state, steps


@pytest.mark.slow
def test_only_live_rows_are_decoded(decoder):
  """A round with few live rows decodes a batch of about their number, not every row (dead
  subtrees, padding questions): their steps and readings are those of the whole batch, and
  the other rows' caches are left as they were."""
  live = np.zeros(24, bool)
  live[[1, 9, 20]] = True
  few, state, steps = _advance_all(decoder, live, 0.0)
  _, _, whole = _advance_all(decoder, np.ones(24, bool), 0.0)
  for i in np.flatnonzero(live):
    assert steps.tokens[i] == whole.tokens[i]
    assert steps.readings[i] == pytest.approx(whole.readings[i], abs=1e-6)
  assert not any(steps.tokens[i] for i in np.flatnonzero(~live))
  lengths = np.asarray(state[0].cache.lengths)
  np.testing.assert_array_equal(lengths[~live], np.repeat([len(p) for p in PROMPTS], 8)[~live])
  assert few.row_tokens <= 3 * max(map(len, steps.tokens))  # a batch of 3 rows, not 24
  assert few.live_tokens == sum(map(len, steps.tokens))


@pytest.mark.slow
def test_a_call_that_returns_early_gives_the_same_steps():
  """Returning once half the rows stopped, the rest going on in smaller batches, changes
  neither a step nor its reading, and decodes fewer row-tokens for the same live ones."""
  decoder = make_decoder(max_step_tokens=20)  # steps end inside a call, at different tokens
  live = np.ones(24, bool)
  split, _, steps = _advance_all(decoder, live, 0.5)
  one, _, whole = _advance_all(decoder, live, 0.0)
  assert steps.tokens == whole.tokens
  assert steps.readings == pytest.approx(whole.readings, abs=1e-6)
  assert split.live_tokens == one.live_tokens
  assert split.row_tokens < one.row_tokens


@pytest.mark.parametrize("live_rows", [range(8), range(7)], ids=["moved-rows-live", "one-not"])
def test_a_selection_taken_with_the_live_rows_equals_one_carried_out_first(decoder, live_rows):
  """`reorder` only records a beam selection; the next advance takes each live row from the
  row it continues (or moves the rows first when a moved row is not live). Either way the
  step, its readings and every cache row equal those of the selection copied at once."""
  d = dataclasses.replace(decoder, exit_below=0.0)
  state, _ = d.start(PROMPTS, 8)
  counts = [tree.Counts() for _ in PROMPTS]
  state, _ = tree.whole_steps(d, state, _keys(24), np.ones(24, bool), False, counts, 8)
  selection = np.arange(24)
  selection[:8] = tree.fan_out([5, 2], 8)  # question 0 keeps two rows
  live = np.zeros(24, bool)
  live[list(live_rows)] = True
  copied = tree.DecoderRows(sampler.reorder(jax.tree.map(jnp.copy, state.policy), selection),
                            sampler.reorder(jax.tree.map(jnp.copy, state.reader), selection))
  later = _keys(24, seed=1)
  got, got_step = d.advance(d.reorder(state, selection), later, live, False)
  want, want_step = d.advance(copied, later, live, False)
  assert got.source is None
  for g, w in zip(got_step, want_step):
    np.testing.assert_array_equal(g[live], w[live])
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_the_verifier_reads_two_token_counts_at_most(decoder, monkeypatch):
  """Each count of new tokens the verifier reads is one more program per batch size and
  cache capacity: a call's new tokens are read as a power of two of at least half of
  max_step_tokens (4 here), or max_step_tokens (6)."""
  widths = set()
  score_tokens = verifier.score_tokens
  def recording(graphdef, params, state, tokens, *args, **kwargs):
    widths.add(tokens.shape[1])
    return score_tokens(graphdef, params, state, tokens, *args, **kwargs)
  monkeypatch.setattr(verifier, "score_tokens", recording)
  shape = methods.tree_shape(MethodConfig("beam", beam_width=2), 4)
  tree.search(decoder, PROMPTS, _keys(3), shape)
  assert widths == {4, 6}
