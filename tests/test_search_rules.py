"""What each search keeps, checked against a spy that replays the search from the calls it
sees: ranking, refill, per-subtree pools, final candidates, step-end readings, token counts,
and rows that reach the length cap. Each test here failed on a real defect of tree.py."""
import numpy as np
import pytest
from search_models import EOS, NEWLINE, PROMPTS, Spy, keys, make_decoder, step_end_readings

from tts.search import methods, tree, verifier
from tts.search.methods import MethodConfig

METHODS = {"best_of_n": MethodConfig(), "beam": MethodConfig("beam", beam_width=2),
           "lookahead": MethodConfig("lookahead", beam_width=2, lookahead=2),
           "dvts": MethodConfig("dvts", beam_width=2)}


@pytest.fixture(scope="module")
def decoder():
  return make_decoder()


@pytest.fixture(scope="module")
def short_steps():
  """Steps cut by max_step_tokens=2 must go on, unread, until they end."""
  return make_decoder(max_step_tokens=2)


def _spy_search(engine, method, n, aggregation="last", mutate=None, prompts=PROMPTS):
  shape = methods.tree_shape(method, n)
  spy = Spy(engine, shape, aggregation, mutate)
  found = tree.search(spy, prompts, keys(len(prompts)), shape, aggregation)
  return spy, shape, found


@pytest.mark.parametrize("name", ["beam", "lookahead", "dvts"])
@pytest.mark.parametrize("aggregation", ["last", "min"])
def test_each_subtree_keeps_its_best_open_rows_and_refills_its_width(decoder, name,
                                                                     aggregation):
  """Parents are the top min(open, keep) rows of their subtree by aggregated score (after
  the lookahead rollout for lookahead), and fan out to the subtree's full width, the best
  taking the spare rows: a budget of N keeps spending N rows."""
  n = 8
  spy, shape, _ = _spy_search(decoder, METHODS[name], n, aggregation)
  size, checked, refilled = shape.subtree, 0, 0
  next_rounds = [r["took_part"] for r in spy.rounds[1:]] + [spy.took_part]
  for r, next_round in zip(spy.rounds, next_rounds):
    for start in range(0, len(r["parents"]), size):
      mine = np.arange(start, start + size)
      if not next_round[mine].any():
        continue
      assert next_round[mine].all()  # the subtree's whole width goes on
      open_rows = [i for i in mine if r["open"][i]]
      kept = sorted(open_rows, key=lambda i: (-r["rank"][i], i))[:shape.keep]
      share, spare = divmod(size, len(kept))
      expected = np.repeat(kept, [share + (j < spare) for j in range(len(kept))])
      np.testing.assert_array_equal(r["parents"][mine], expected)
      checked += 1
      refilled += len(kept) < shape.keep
  assert checked >= 4
  if name == "beam":
    assert refilled >= 1  # the refill rule was exercised


def test_lookahead_ranks_by_the_reading_at_the_end_of_its_rollout(decoder):
  """The spy's rank is the post-rollout one; the test is only meaningful if that ranking
  differs from the pre-rollout one somewhere, so that is asserted too."""
  spy, shape, _ = _spy_search(decoder, METHODS["lookahead"], 8)
  differs = 0
  for r in spy.rounds:
    for start in range(0, len(r["parents"]), shape.width):
      open_rows = [i for i in range(start, start + shape.width) if r["open"][i]]
      top = lambda score: set(sorted(open_rows, key=lambda i: (-score[i], i))[:shape.keep])
      if open_rows:
        assert set(r["parents"][start:start + shape.width]) <= top(r["rank"])
        differs += top(r["rank"]) != top(r["pre_rollout"])
  assert differs >= 1


@pytest.mark.parametrize("name", ["beam", "lookahead", "dvts"])
def test_final_candidates_are_the_best_finished_ones(decoder, name):
  """Each subtree delivers min(size, finished) finished candidates, its best by score;
  unfinished partial solutions fill in only the rest."""
  spy, shape, found = _spy_search(decoder, METHODS[name], 8)
  size = shape.subtree
  for q, result in enumerate(found):
    for t in range(shape.groups):
      mine = result.candidates[t * size:(t + 1) * size]
      produced = spy.finished[q * shape.groups + t]
      best = sorted(produced, key=lambda p: -verifier.aggregate(p[1], "last"))[:size]
      assert sorted(c.tokens for c in mine if c.finished) == sorted(p[0] for p in best)
    assert len(result.candidates) == shape.width
  assert sum(len(p) for p in spy.finished) > 0


def test_dvts_subtrees_do_not_depend_on_each_other():
  """Scores in subtree 2 turned upside down change subtree 2 only."""
  decoder, m, n = make_decoder(), 2, 4

  def upside_down(readings):
    out = readings.copy()
    rows = np.arange(len(out)) % n >= m  # slots m..2m-1 of every question
    out[rows] = 1.0 - out[rows]
    return out

  _, _, plain = _spy_search(decoder, METHODS["dvts"], n)
  _, _, flipped = _spy_search(decoder, METHODS["dvts"], n, mutate=upside_down)
  first = lambda res: [[c.tokens for c in r.candidates[:m]] for r in res]
  second = lambda res: [[c.tokens for c in r.candidates[m:]] for r in res]
  assert first(plain) == first(flipped)
  assert second(plain) != second(flipped)


@pytest.mark.slow  # a full verifier pass per candidate: ~30 s of the day-to-day run
@pytest.mark.parametrize("name", list(METHODS))
def test_step_scores_are_full_verifier_readings_at_step_ends(short_steps, name):
  """Every step score equals one full verifier pass over prompt + candidate, read at the
  step's last token: steps cut by max_step_tokens are read only where they end, and the
  verifier's cache follows the policy's rows through every reorder."""
  _, _, found = _spy_search(short_steps, METHODS[name], 4)
  cut_steps = 0
  for prompt, result in zip(PROMPTS, found):
    for c in result.candidates:
      expected = step_end_readings(short_steps.verifier, prompt, c.tokens, {NEWLINE}, EOS)
      np.testing.assert_allclose(c.step_scores, expected, atol=1e-5)
      body = c.tokens[:-1] if c.tokens[-1:] == [EOS] else c.tokens
      lines = "".join("\n" if t == NEWLINE else "x" for t in body).split("\n")
      cut_steps += any(len(line) + 1 > 2 for line in lines)
  assert cut_steps >= 1  # some step was longer than max_step_tokens


@pytest.mark.parametrize("name", list(METHODS))
def test_counted_tokens_are_every_decode_calls_tokens(short_steps, name):
  """Lookahead rollouts, continued steps and discarded branches all count as work."""
  spy, shape, found = _spy_search(short_steps, METHODS[name], 4)
  for q, result in enumerate(found):
    mine = slice(q * shape.width, (q + 1) * shape.width)
    decoded = sum(int(c["lengths"][mine][c["live"][mine]].sum()) for c in spy.calls)
    assert result.counts.generated_tokens == decoded
    assert result.counts.verifier_tokens == len(PROMPTS[q]) + decoded
  if name == "lookahead":
    assert any(c["greedy"] for c in spy.calls)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_row_at_the_length_cap_ends_as_capped(name):
  """Every token ends a step and the cap is 3 tokens: a row whose third token is a step
  end has no room left, so it must end (unfinished) rather than decode 0 tokens forever."""
  decoder = make_decoder(max_new_tokens=3, step_end_ids=(0, 2, 3, 4, 5, 6, 7))
  spy, shape, found = _spy_search(decoder, METHODS[name], 4)
  capped = 0
  for result in found:
    assert len(result.candidates) == shape.width
    for c in result.candidates:
      assert 1 <= len(c.tokens) <= 3
      assert c.finished == (c.tokens[-1] == EOS)
      capped += not c.finished
  assert capped >= 1


def test_a_non_finite_reading_names_the_verifier_and_the_question():
  """Damaged verifier weights must stop the stage, not become rankings."""
  scores = np.array([[0.2, 0.4], [np.nan, 0.1]])
  with pytest.raises(FloatingPointError, match=r"search.verifiers.prm read sample 0 of "
                     r"question 'q1' as a non-finite number \(1 such"):
    verifier.check_finite_readings(scores, lambda at: f"sample {at[1]} of question 'q{at[0]}'",
                                   "search.verifiers.prm")
  verifier.check_finite_readings(scores[:1], str, "search.verifiers.prm")  # finite: no error
