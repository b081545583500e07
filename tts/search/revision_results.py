"""Revision result files and measurements: pure functions of the chains a run produced.

Records follow the search schema (WORKSPACE.md, "search/"), one per question for each
budget N and split into P chains of L answers, so selection, FLOPs and plots read both
alike. The measurements are the paper's: pass@1 at each revision step, how often a right
answer later turns wrong, sequential against parallel at equal budget, accuracy per split
and difficulty bin.
"""
import numpy as np

from tts.search import answers, results
from tts.search.revisions import Answer, select_all

RULES = answers.RULES


def grade_chains(task, example, chains: list[list[Answer]]) -> list[list[dict]]:
  """Each answer as a search candidate, graded once: [chain][step] ->
  {text, answer, correct, finished, step_scores, num_tokens, chain, step, prompt_tokens}."""
  out = []
  for c, chain in enumerate(chains):
    graded = []
    for t, a in enumerate(chain):
      text = task.vocab.decode(a.tokens)
      graded.append({
          "text": text, "answer": task.extract_answer(text),
          "correct": bool(task.is_correct(text, example)),
          "finished": bool(a.tokens) and a.tokens[-1] == task.vocab.eos_id,
          "step_scores": [round(a.score, 6)], "num_tokens": len(a.tokens), "chain": c,
          "step": t, "prompt_tokens": a.prompt_length})
    out.append(graded)
  return out


def question_record(task, example, graded: list[list[dict]], chains: int, length: int,
                    sizes: tuple[int, int]) -> dict:
  """The record of one question for P = `chains` chains of `length` answers each.
  sizes: (revision model parameters, revision ORM parameters)."""
  candidates = [graded[c][t] for c in range(chains) for t in range(length)]
  found = [c["answer"] for c in candidates]
  chosen = select_all(found, [c["step_scores"][0] for c in candidates],
                      [c["chain"] for c in candidates], task.same_answer)
  selected = results.selected_answers(candidates, chosen)
  prompt = sum(c["prompt_tokens"] for c in candidates)
  generated = sum(c["num_tokens"] for c in candidates)
  n = chains * length
  return {
      "id": example["id"], "question": example["question"], "answer": example["answer"],
      "difficulty": example["difficulty"], "method": f"chains{chains}", "kind": "revision",
      "n": n, "chains": chains, "chain_length": length, "beam_width": 0, "lookahead": 0,
      "verifier": "revision_orm", "verifier_kind": "orm", "aggregation": "last",
      "candidates": candidates, "selected": selected,
      "counts": {"generations": n, "candidates": n, "prompt_tokens": prompt,
                 "generated_tokens": generated, "verifier_tokens": prompt + generated,
                 "rounds": length, "policy_flops": 2 * sizes[0] * (prompt + generated),
                 "verifier_flops": 2 * sizes[1] * (prompt + generated)}}


def pass1_by_step(graded: list[list[list[dict]]], full_chains: int, steps: int) -> list[float]:
  """Accuracy of the t-th answer of the first `full_chains` chains, over all questions."""
  return [float(np.mean([g[c][t]["correct"] for g in graded for c in range(full_chains)]))
          for t in range(steps)]


def flip_rates(graded, full_chains: int, steps: int) -> dict:
  """Among right answers that have a later revision in their chain: the fraction whose next
  answer is wrong, and whose any later answer is wrong (the paper: ~38% later turn wrong).
  And among wrong answers, the fraction whose next answer is right."""
  next_wrong, later_wrong, next_right, right, wrong = 0, 0, 0, 0, 0
  for g in graded:
    for c in range(full_chains):
      marks = [a["correct"] for a in g[c][:steps]]
      for t in range(len(marks) - 1):
        if marks[t]:
          right += 1
          next_wrong += not marks[t + 1]
          later_wrong += not all(marks[t + 1:])
        else:
          wrong += 1
          next_right += marks[t + 1]
  ratio = lambda a, b: round(a / b, 4) if b else None
  return {"correct_then_incorrect_next": ratio(next_wrong, right),
          "correct_then_incorrect_later": ratio(later_wrong, right),
          "incorrect_then_correct_next": ratio(next_right, wrong),
          "correct_answers": right, "incorrect_answers": wrong}


def accuracy_table(records: dict[tuple[int, int], list[dict]], bins: dict[str, int] | None
                   ) -> dict:
  """Accuracy per budget and split, for every rule, overall and per difficulty bin.
  records: (N, P) -> records; bins: question id -> bin (None: overall only)."""
  table = {}
  for (n, p), recs in sorted(records.items()):
    row = {"chains": p, "chain_length": n // p, **{
        rule: round(float(np.mean([r["selected"][rule]["correct"] for r in recs])), 4)
        for rule in RULES}}
    if bins:
      by_bin = {}
      for r in recs:
        by_bin.setdefault(bins[r["id"]], []).append(r["selected"]["weighted"]["correct"])
      row["weighted_by_bin"] = {str(b): round(float(np.mean(v)), 4)
                                for b, v in sorted(by_bin.items())}
    table.setdefault(str(n), {})[f"chains{p}"] = row
  return table


def sequential_vs_parallel(table: dict) -> dict:
  """At each budget N > 1: all-sequential (1 chain of N) against all-parallel (N chains of
  1), for every rule, from `accuracy_table`'s rows."""
  out = {}
  for n, row in table.items():
    if int(n) > 1:
      out[n] = {rule: {"sequential": row["chains1"][rule], "parallel": row[f"chains{n}"][rule]}
                for rule in RULES}
  return out

