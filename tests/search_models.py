"""Tiny random policy and verifier models for the search tests, and a spy engine that
replays a search from what it sees (written from the methods' definitions, not tree.py)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.model import LoadedModel, ModelConfig, Transformer
from tts.search import tree, verifier
from tts.search.sampler import SamplingConfig

VOCAB, EOS, NEWLINE, PAD = 8, 1, 3, 0  # a small vocabulary: steps and solutions end often
PROMPTS = [[2, 4, 5], [6, 7, 2, 4, 4, 5, 6], [5, 5]]


def loaded(value_head: bool, seed: int) -> LoadedModel:
  cfg = ModelConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                    d_ff=64, value_head=value_head)
  model = Transformer(cfg, nnx.Rngs(seed))
  if value_head:  # a value head that reads the input, so scores differ between rows
    model.value_w[...] = jax.random.normal(jax.random.key(seed), model.value_w.shape)
  return LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(model)))


def make_decoder(max_new_tokens=20, max_step_tokens=6, step_end_ids=(NEWLINE,)):
  return tree.Decoder(loaded(False, 0), loaded(True, 1),
                      SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens),
                      step_end_ids, EOS, PAD, prompt_width=8, max_step_tokens=max_step_tokens,
                      block=8)


def keys(n, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(np.arange(n))


def full_readings(model: LoadedModel, seq: list[int]) -> np.ndarray:
  """The verifier's reading after every token of one whole sequence, from scratch."""
  m = nnx.merge(model.graphdef, model.params)
  return np.asarray(jax.nn.sigmoid(m(jnp.asarray([seq])).values[0]))


def solution_log_probs(model: LoadedModel, prompt: list[int], solution: list[int]) -> np.ndarray:
  """log p(token | everything before it) of each solution token, from one teacher-forced pass
  over the whole sequence (temperature 1): what a likelihood verifier reads."""
  m = nnx.merge(model.graphdef, model.params)
  seq = jnp.asarray([prompt + solution])
  log_probs = jax.nn.log_softmax(m(seq).logits[0, :-1])
  return np.asarray(log_probs[np.arange(len(prompt) - 1, seq.shape[1] - 1), seq[0, len(prompt):]])


class Spy:
  """An engine wrapper that records every call and replays the search's bookkeeping.

  Per call: greedy or not, the live rows and the tokens each added. Per round (ended by a
  reorder): the rows that took part, which were still open, their rank (step scores
  aggregated by `aggregation`, the last one replaced by the reading at the end of a greedy
  lookahead rollout when there was one) and the parents kept. Per row: its tokens and step
  readings, carried across reorders. `mutate(readings) -> readings` may alter what the verifier
  says; `max_calls` turns a search that never ends into a failure.
  """

  def __init__(self, engine, shape: tree.TreeShape, aggregation="last", mutate=None,
               max_calls=400):
    self.engine, self.eos_id, self.shape = engine, engine.eos_id, shape
    self.aggregation, self.mutate, self.max_calls = aggregation, mutate, max_calls
    self.calls, self.rounds = [], []

  def start(self, prompts, width):
    state, scores = self.engine.start(prompts, width)
    rows = len(prompts) * width
    self.tokens, self.scores = [[] for _ in range(rows)], [[] for _ in range(rows)]
    self._reset_round(rows)
    # Per subtree: every finished row it produced, as (tokens, step scores).
    self.finished = [[] for _ in range(rows // self.shape.subtree)]
    return state, scores

  def _reset_round(self, rows):
    self.took_part = np.zeros(rows, bool)
    self.ended = np.zeros(rows, bool)
    self.after = [None] * rows
    self.pending = [([], None) for _ in range(rows)]  # a step in progress: tokens, reading

  def advance(self, state, keys, live, greedy):
    if len(self.calls) >= self.max_calls:
      raise AssertionError(f"the search made {self.max_calls} decode calls: it does not end")
    state, step = self.engine.advance(state, keys, live, greedy)
    if self.mutate is not None:
      step = step._replace(readings=self.mutate(step.readings))
    self.calls.append({"greedy": greedy, "live": live.copy(), "lengths": step.lengths.copy()})
    read = verifier.reading_positions(step.tokens, step.lengths, self.eos_id) >= 0
    for i in np.flatnonzero(live):
      new = step.tokens[i, :step.lengths[i]].tolist()
      toks, reading = self.pending[i]
      toks += new
      reading = float(step.readings[i]) if read[i] else reading
      self.pending[i] = (toks, reading)
      if not greedy:
        self.took_part[i] = True
        self.tokens[i] = self.tokens[i] + new
      if not (step.stopped[i] or step.capped[i]):
        continue  # the step goes on in the next call
      self.pending[i] = ([], None)
      if greedy:
        self.after[i] = reading if reading is not None else self.after[i]
        continue
      if reading is not None:
        self.scores[i] = self.scores[i] + [reading]
      self.ended[i] = (toks and toks[-1] == self.eos_id) or bool(step.capped[i])
      if toks and toks[-1] == self.eos_id:
        self.finished[i // self.shape.subtree].append((self.tokens[i], self.scores[i]))
    return state, step

  def rank(self, i) -> float:
    scores = self.scores[i] if self.after[i] is None else self.scores[i][:-1] + [self.after[i]]
    return verifier.aggregate(scores, self.aggregation)

  def reorder(self, state, rows):
    self.rounds.append({"took_part": self.took_part, "open": self.took_part & ~self.ended,
                        "rank": np.asarray([self.rank(i) for i in range(len(rows))]),
                        "pre_rollout": np.asarray([verifier.aggregate(s, self.aggregation)
                                                   for s in self.scores]),
                        "parents": np.asarray(rows)})
    self.tokens = [self.tokens[r] for r in rows]
    self.scores = [self.scores[r] for r in rows]
    self._reset_round(len(rows))
    return self.engine.reorder(state, rows)

  def fork(self, state):
    return self.engine.fork(state)


def step_end_readings(model: LoadedModel, prompt: list[int], tokens: list[int], step_end_ids,
                      eos_id: int) -> list[float]:
  """A candidate's step scores recomputed by one full verifier pass: the reading at each
  step's last token (a step-end token, or the last token before eos / at the cap)."""
  from tts.train.labelling import step_ends
  values = full_readings(model, prompt + tokens)
  return [float(values[len(prompt) + e]) for e in step_ends(tokens, step_end_ids, eos_id)]

