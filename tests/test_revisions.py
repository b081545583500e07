"""Revision pieces: trajectory pairing, the prompt window, budget splits, hierarchical
selection, and chains that do not depend on how budgets are split or batched."""
import jax
import numpy as np
import pytest
from flax import nnx

from tts.data import chain
from tts.data.tasks import make_task
from tts.data.revisions import (build_trajectories, edit_distances, revision_prompt,
                                trajectory_context)
from tts.model import LoadedModel, ModelConfig, Transformer
from tts.search import revision_results, revisions
from tts.search.sampler import SamplingConfig

VOCAB = chain.chain_vocabulary(13)


def _levenshtein(a: str, b: str) -> int:
  """Textbook dynamic programme, one cell at a time: the reference."""
  row = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    prev, row[0] = row[:], i
    for j, cb in enumerate(b, 1):
      row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
  return row[-1]


def test_edit_distances_equal_the_textbook_programme():
  rng = np.random.default_rng(0)
  word = lambda: "".join(rng.choice(list("ab1 \n"), size=rng.integers(0, 12)))
  for _ in range(200):
    target, others = word(), [word() for _ in range(rng.integers(1, 6))]
    assert edit_distances(target, others).tolist() == [_levenshtein(target, o) for o in others]


def test_pairing_puts_the_closest_incorrect_answer_last():
  target = "1 + 2 = 3\n3 * 4 = 12\nA: 12"
  incorrect = ["1 + 2 = 4\n4 * 4 = 3\nA: 3",  # two results off
               "1 + 2 = 3\n3 * 4 = 11\nA: 11",  # closest: one result off
               "9\nA: 9", "1 + 2 = 5\nA: 5"]
  for seed in range(20):
    picked = trajectory_context(target, incorrect, 3, np.random.default_rng(seed))
    assert len(picked) == 3 and len(set(picked)) == 3
    assert picked[-1] == 1
  assert trajectory_context(target, incorrect, 0, np.random.default_rng(0)) == []
  assert sorted(trajectory_context(target, incorrect[:2], 4, np.random.default_rng(0))) == [0, 1]


def test_trajectories_one_per_correct_answer_with_at_most_four_incorrect_in_context():
  samples = [{"text": f"A: {i}", "tokens": [i], "correct": i % 3 == 0} for i in range(12)]
  rng = np.random.default_rng(0)
  out = [t for _ in range(50) for t in build_trajectories(samples, rng)]
  assert {t["target"] for t in out} == {0, 3, 6, 9}
  sizes = [len(t["context"]) for t in out]
  assert set(sizes) == {0, 1, 2, 3, 4}  # k ~ Uniform{0..4}: every size occurs
  assert all(not samples[i]["correct"] for t in out for i in t["context"])


def test_prompt_window_keeps_exactly_the_last_four_answers_oldest_first():
  question = VOCAB.encode("Q: 1 + 2\n")
  earlier = [VOCAB.encode(f"1 + 2 = {i}\nA: {i}") + [VOCAB.eos_id] for i in range(6)]
  prompt = VOCAB.decode(revision_prompt(VOCAB, question, earlier))
  blocks = [f"<attempt>\n1 + 2 = {i}\nA: {i}\n" for i in range(2, 6)]
  assert prompt == "".join(blocks) + "<revise>\nQ: 1 + 2\n"
  assert revision_prompt(VOCAB, question, []) == question  # a first answer: as the policy's
  assert revision_prompt(VOCAB, question, earlier, window=0) == question
  assert VOCAB.eos_id not in revision_prompt(VOCAB, question, earlier)


@pytest.mark.parametrize("n", [1, 2, 4, 6, 12, 16])
def test_every_budget_split_multiplies_to_the_budget(n):
  splits = revisions.budget_splits(n)
  assert all(p * length == n for p, length in splits)
  assert [p for p, _ in splits] == [p for p in range(1, n + 1) if n % p == 0]


def test_chain_lengths_cover_every_split_of_every_budget():
  lengths = revisions.chain_lengths((1, 2, 4, 8, 16))
  assert lengths == [16, 8, 4, 4] + [2] * 4 + [1] * 8
  assert revisions.chain_lengths((1, 2, 4, 8, 16), full_chains=3)[:4] == [16, 16, 16, 4]
  for n in (1, 2, 4, 8, 16):
    for p, length in revisions.budget_splits(n):
      assert all(lengths[c] >= length for c in range(p))


def test_hierarchical_selection_on_a_hand_built_example():
  """Chain 0 repeats A four times: flat weighted and majority vote pick A. Hierarchically
  chain 0 contributes one winner (A, 0.5) against two chains that found B (0.6 each): B.
  Inside chain 3, weighted picks D (two answers, 1.0 in all) over C (one, 0.9)."""
  found = ["A", "A", "A", "A", "B", "B", "C", "D", "D"]
  scores = [0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.9, 0.5, 0.5]
  chains = [0, 0, 0, 0, 1, 2, 3, 3, 3]
  same = lambda a, b: a == b
  chosen = revisions.select_all(found, scores, chains, same)
  assert found[chosen["weighted"]] == "B"
  assert found[chosen["majority"]] == "A"
  assert found[chosen["argmax"]] == "C"
  assert found[6 + revisions.hierarchical_select(found[6:], scores[6:], chains[6:], same)] == "D"
  assert revisions.hierarchical_select([None, None], [0.9, 0.1], [0, 1], same) is None


def _graded(marks):
  """graded[q][c][t] from correctness marks [q][c][t]."""
  return [[[{"correct": m} for m in chain_marks] for chain_marks in q] for q in marks]


def test_pass1_by_step_and_flip_rates_count_right_answers_turning_wrong():
  graded = _graded([[[True, False, True], [False, True, True]],
                    [[True, True, True], [False, False, False]]])
  assert revision_results.pass1_by_step(graded, 2, 3) == [0.5, 0.5, 0.75]
  flips = revision_results.flip_rates(graded, 2, 3)
  # right answers with a successor: (q0 c0 t0), (q0 c1 t1), (q1 c0 t0), (q1 c0 t1)
  assert flips["correct_answers"] == 4
  assert flips["correct_then_incorrect_next"] == 0.25
  assert flips["correct_then_incorrect_later"] == 0.25
  # wrong answers with a successor: (q0 c0 t1), (q0 c1 t0), (q1 c1 t0), (q1 c1 t1)
  assert flips["incorrect_then_correct_next"] == 0.5


def test_a_split_reads_the_first_chains_up_to_its_length():
  task = make_task({"kind": "chain", "modulus": 13})
  right = {(0, 1), (1, 0), (3, 3)}
  chains = [[revisions.Answer(VOCAB.encode("A: 11" if (c, t) in right else "A: 3")
                              + [VOCAB.eos_id], 5, 0.9 if (c, t) in right else 0.2)
             for t in range(4)] for c in range(4)]
  example = {"id": "t-0", "question": "q", "answer": "11", "difficulty": 1}
  graded = revision_results.grade_chains(task, example, chains)
  record = revision_results.question_record(task, example, graded, 2, 2, (10, 20))
  assert [(c["chain"], c["step"]) for c in record["candidates"]] == [(0, 0), (0, 1), (1, 0),
                                                                      (1, 1)]
  assert [c["correct"] for c in record["candidates"]] == [False, True, True, False]
  assert record["n"] == 4 and record["chains"] == 2 and record["chain_length"] == 2
  counts = record["counts"]
  assert counts["prompt_tokens"] == 4 * 5 and counts["generated_tokens"] == 4 * 3
  assert counts["policy_flops"] == 2 * 10 * 32 and counts["verifier_flops"] == 2 * 20 * 32
  assert record["selected"]["weighted"] == {"answer": "11", "correct": True}


def _tiny_model():
  cfg = ModelConfig(vocab_size=VOCAB.vocab_size, num_layers=1, d_model=16, num_heads=2,
                    num_kv_heads=1, d_ff=32)
  return LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(0)))))


@pytest.mark.slow
def test_chains_do_not_depend_on_the_split_plan_or_the_batch():
  """Every budget split is read off one run of the longest chains: exact only if chain c of
  a question draws the same answers whatever other chains and questions run beside it."""
  model = _tiny_model()
  prompts = [VOCAB.encode("Q: 1 + 2\n"), VOCAB.encode("Q: 3 * 4 - 5\n")]
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(2))
  sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
  tokens = lambda chains: [[a.tokens for a in ch] for ch in chains]
  full = revisions.run_chains(model, VOCAB, prompts, keys, [3, 2, 1], sampling, 4, 4)
  alone = revisions.run_chains(model, VOCAB, prompts[1:], keys[1:], [3], sampling, 4, 4)
  assert tokens(full[1])[:1] == tokens(alone[0])
  assert [len(ch) for ch in full[0]] == [3, 2, 1]
  other_batch = revisions.run_chains(model, VOCAB, prompts, keys, [3, 2, 1], sampling, 4, 16)
  assert tokens(other_batch[0]) == tokens(full[0])
  assert tokens(full[0])[0] != tokens(full[0])[1]  # chains draw different answers
