"""Choosing one answer among candidates (pure functions over answers and scores).

argmax: the answer of the best-scoring candidate. weighted: sum the scores of candidates
whose answers agree (by the task's grader equivalence), pick the largest sum. majority:
the answer most candidates give. Candidates without a parsable answer take no part.
"""
from typing import Callable, Sequence

RULES = ("argmax", "weighted", "majority")


def group_answers(answers: Sequence[str | None],
                  same_answer: Callable[[str, str], bool]) -> list[list[int]]:
  """Candidate indices grouped by equivalent answer, groups in order of first appearance."""
  groups: list[list[int]] = []
  for i, answer in enumerate(answers):
    if answer is None:
      continue
    for group in groups:
      if same_answer(answers[group[0]], answer):
        group.append(i)
        break
    else:
      groups.append([i])
  return groups


def select(answers: Sequence[str | None], scores: Sequence[float], rule: str,
           same_answer: Callable[[str, str], bool]) -> int | None:
  """Index of the chosen candidate (the best-scoring one of the chosen answer), or None
  when no candidate has an answer. Ties go to the answer seen first."""
  groups = group_answers(answers, same_answer)
  if not groups:
    return None
  if rule == "argmax":
    key = lambda g: max(scores[i] for i in g)
  elif rule == "weighted":
    key = lambda g: sum(scores[i] for i in g)
  elif rule == "majority":
    key = lambda g: len(g)
  else:
    raise ValueError(f"answer selection rule {rule!r} is unknown; use one of {RULES}")
  best = max(groups, key=key)  # max keeps the first of equal keys
  return max(best, key=lambda i: (scores[i], -i))
