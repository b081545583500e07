"""Monte-Carlo step labels against a toy policy whose success probabilities are known."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from tts.data.tasks import Task
from tts.model import LoadedModel, ModelConfig, Transformer
from tts.search.sampler import SamplingConfig
from tts.train import labelling

PAD, EOS, NEWLINE, RIGHT, WRONG, START = range(6)
WORDS = {NEWLINE: "\n", RIGHT: "R", WRONG: "W", START: "S"}


class ToyVocab:
  pad_id, eos_id, unk_id, vocab_size = PAD, EOS, 2, 6

  def encode(self, text):
    return [k for ch in text for k, w in WORDS.items() if w == ch]

  def decode(self, ids):
    return "".join(WORDS.get(i, "") for i in ids)


def _answer(text):
  marks = [ch for ch in text if ch in "RW"]
  return marks[-1] if marks else None


TASK = Task(name="toy", vocab=ToyVocab(), load_splits=dict, extract_answer=_answer,
            is_correct=lambda text, example: _answer(text) == "R",
            same_answer=lambda a, b: a == b)

# A Markov chain as a transformer: blocks zeroed (the residual stream is the token's one-hot
# embedding), so the next-token distribution depends on the current token only. From the
# prompt: R, W or eos (no answer); after R or W: a newline; after a newline: R with
# probability B, W with C, else eos. A solution is right when its last mark is R, so from a
# step ending in R the policy succeeds with probability 1 - C, from one ending in W with B.
B, C = 0.3, 0.3
NEXT = {START: {RIGHT: 0.45, WRONG: 0.45, EOS: 0.1}, RIGHT: {NEWLINE: 1.0},
        WRONG: {NEWLINE: 1.0}, NEWLINE: {RIGHT: B, WRONG: C, EOS: 1 - B - C}}


def toy_policy() -> LoadedModel:
  cfg = ModelConfig(vocab_size=6, num_layers=1, d_model=8, num_heads=2, num_kv_heads=1,
                    d_ff=8, norm_eps=1e-12, tie_embeddings=False)
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(0))))
  params = jax.tree.map(np.zeros_like, params)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: np.ones_like(x) if "scale" in jax.tree_util.keystr(path) else x, params)
  embed = np.zeros((6, 8), np.float32)
  embed[np.arange(6), np.arange(6)] = 1.0
  head = np.full((8, 6), np.log(1e-9), np.float32)
  for token, nxt in NEXT.items():
    for v, p in nxt.items():
      head[token, v] = np.log(p)
  params["embed"] = embed
  params["lm_head"] = head / np.sqrt(8)  # the norm scales a one-hot by sqrt(d_model)
  return LoadedModel.create(cfg, params)


EXAMPLES = [{"id": f"q{i}", "prompt_ids": [START], "answer": "R"} for i in range(40)]
SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=64)


def _solutions(samples=4):
  return labelling.sample_solutions(TASK, toy_policy(), EXAMPLES, list(range(len(EXAMPLES))),
                                    samples, SAMPLING, jax.random.key(0), batch_size=64)


@pytest.mark.slow
def test_soft_labels_match_the_known_success_probability():
  solutions, _, _ = _solutions()
  rollouts = 32
  labelling.label(TASK, toy_policy(), EXAMPLES, solutions, rollouts, SAMPLING,
                  jax.random.key(1), rows_per_batch=2048, prompt_width=16)
  by_mark = {RIGHT: [], WRONG: []}
  for s in solutions:
    for j, end in enumerate(s.step_ends[:-1]):
      by_mark[s.tokens[end - 1]].append(s.labels[j])
    assert s.labels[-1] == float(s.correct)  # the last step: the solution's own outcome
  for mark, expected in ((RIGHT, 1 - C), (WRONG, B)):
    labels = np.asarray(by_mark[mark])
    assert len(labels) >= 20
    stderr = np.sqrt(expected * (1 - expected) / (rollouts * len(labels)))
    assert abs(labels.mean() - expected) < 4 * stderr + 1e-9, (mark, labels.mean())


def test_solutions_without_an_answer_are_dropped_and_counted():
  solutions, sampled, tokens = _solutions()
  assert sampled == 4 * len(EXAMPLES)
  assert 0 < len(solutions) < sampled  # eos right after the prompt leaves no answer
  assert all(s.answer is not None and s.step_ends for s in solutions)
  assert tokens >= sum(len(s.tokens) for s in solutions)


def test_step_ends_exclude_eos_and_close_an_unterminated_last_step():
  steps = frozenset({NEWLINE})
  assert labelling.step_ends([RIGHT, NEWLINE, WRONG, NEWLINE, EOS], steps, EOS) == [1, 3]
  assert labelling.step_ends([RIGHT, NEWLINE, WRONG, EOS], steps, EOS) == [1, 2]
  assert labelling.step_ends([EOS], steps, EOS) == []


def test_sampled_solutions_end_steps_where_the_tasks_delimiter_says():
  """Steps are split by Task.step_end_ids, from the task's step_delimiter (here the mark W,
  not the newline)."""
  task = dataclasses.replace(TASK, step_delimiter=WORDS[WRONG])
  solutions, _, _ = labelling.sample_solutions(task, toy_policy(), EXAMPLES[:8], list(range(8)),
                                               4, SAMPLING, jax.random.key(0), batch_size=32)
  by_newline = [labelling.step_ends(s.tokens, {NEWLINE}, EOS) for s in solutions]
  assert [s.step_ends for s in solutions] == [
      labelling.step_ends(s.tokens, {WRONG}, EOS) for s in solutions] != by_newline


@pytest.mark.slow
def test_rollouts_do_not_depend_on_batching():
  """A rollout's key is a function of (question, sample, step, rollout): labels are the same
  whether solutions are labelled together or one by one."""
  together = _solutions(2)[0][:6]
  apart = [labelling.Solution(**vars(s)) for s in together]
  labelling.label(TASK, toy_policy(), EXAMPLES, together, 4, SAMPLING, jax.random.key(2),
                  rows_per_batch=128, prompt_width=16)
  for s in apart:
    labelling.label(TASK, toy_policy(), EXAMPLES, [s], 4, SAMPLING, jax.random.key(2),
                    rows_per_batch=16, prompt_width=16)
  assert [s.labels for s in together] == [s.labels for s in apart]


class RecordingVocab(ToyVocab):
  """Records every id sequence the labeller decodes (a rollout: its prefix + continuation)."""

  def __init__(self):
    self.seen = []

  def decode(self, ids):
    self.seen.append(list(ids))
    return super().decode(ids)


def test_rollouts_continue_from_exactly_the_end_of_their_step():
  """The toy Markov policy cannot see a rollout that starts one token early (the token after
  a mark is always a newline), so here a context-sensitive random policy rolls out, and each
  rollout must equal a from-scratch sample from prompt + the solution up to its step end,
  with the rollout's key."""
  from tts.search import sampler
  cfg = ModelConfig(vocab_size=6, num_layers=2, d_model=16, num_heads=2, num_kv_heads=1,
                    d_ff=32)
  policy = LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(3)))))
  vocab = RecordingVocab()
  task = Task(name="toy", vocab=vocab, load_splits=dict, extract_answer=_answer,
              is_correct=lambda text, example: _answer(text) == "R", same_answer=None)
  tokens = [RIGHT, WRONG, NEWLINE, WRONG, NEWLINE, RIGHT, RIGHT, NEWLINE, RIGHT, EOS]
  solution = labelling.Solution(0, 0, tokens, "R", True,
                                labelling.step_ends(tokens, {NEWLINE}, EOS))
  sampling = SamplingConfig(temperature=1.0, max_new_tokens=16)
  labelling.label(task, policy, EXAMPLES, [solution], 2, sampling, jax.random.key(4),
                  rows_per_batch=8, prompt_width=16)
  prompt = EXAMPLES[0]["prompt_ids"]
  expected = []
  for j, end in enumerate(solution.step_ends[:-1]):
    for r in range(2):
      prefix = prompt + tokens[:end + 1]
      state = sampler.prefill(policy.graphdef, policy.params, np.asarray([prefix], np.int32),
                              np.asarray([len(prefix)], np.int32), len(prompt) + 16)
      state = state._replace(prompt_lengths=np.asarray([len(prompt)], np.int32))
      key = labelling.rollout_keys(jax.random.key(4), np.asarray([[0, 0, j, r]], np.int32))
      _, out = sampler.decode(policy.graphdef, policy.params, state, key, np.ones(1, bool),
                              sampling, (EOS,), 16)
      expected.append(tokens[:end + 1] + out.tokens[0, :out.lengths[0]].tolist())
  assert sorted(vocab.seen) == sorted(expected)


def test_a_sample_at_the_length_cap_ends_there():
  """Whole-solution sampling (difficulty, revision chains, labelling) stops at the cap with
  the row marked capped, whether or not its last token is a stop id."""
  from tts.search import sampler
  policy = toy_policy()
  prompts, lengths = sampler.pad_prompts([[START]] * 64, PAD)
  state = sampler.prefill(policy.graphdef, policy.params, prompts, lengths, 16 + 2)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(64))
  _, out = sampler.decode(policy.graphdef, policy.params, state, keys, np.ones(64, bool),
                          SamplingConfig(temperature=1.0, max_new_tokens=2),
                          (NEWLINE, EOS), 2)  # "R\n" ends on a stop id exactly at the cap
  out = jax.device_get(out)
  at_cap = out.lengths == 2
  np.testing.assert_array_equal(out.capped, at_cap)
  ends_on_newline = at_cap & (out.tokens[:, 1] == NEWLINE)
  assert ends_on_newline.any() and out.stopped[ends_on_newline].all()
  assert (~at_cap).any() and (out.lengths <= 2).all()
