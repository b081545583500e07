"""Search result files: one JSON line per question, everything selection and plots need.

The schema is documented in WORKSPACE.md ("search/"). Later stages (selection, FLOPs,
report) read only these files, never the models.
"""
from typing import Any, Mapping

import numpy as np

from tts.search import answers, methods, verifier, verifier_metrics
from tts.search.methods import MethodConfig
from tts.search.tree import QuestionResult


def selected_answers(candidates: list[dict], chosen: dict[str, int | None]) -> dict:
  """{rule: {answer, correct}} from each rule's chosen candidate index (None: no candidate
  has an answer, so nothing is chosen and nothing is right)."""
  return {rule: ({"answer": None, "correct": False} if i is None else
                 {"answer": candidates[i]["answer"], "correct": candidates[i]["correct"]})
          for rule, i in chosen.items()}


def question_record(task, example: Mapping[str, Any], method_name: str, method: MethodConfig,
                    n: int, result: QuestionResult, scorer: tuple[str, str, str],
                    policy_params: int, verifier_params: int) -> dict:
  """The record of one question searched with one method at budget n.
  scorer: the verifier's (name, kind, step aggregation used for `selected`)."""
  verifier_name, verifier_kind, aggregation = scorer
  candidates = []
  for c in result.candidates:
    text = task.vocab.decode(c.tokens)
    candidates.append({
        "text": text, "answer": task.extract_answer(text),
        "correct": bool(task.is_correct(text, example)), "finished": c.finished,
        "step_scores": [round(float(s), 6) for s in c.step_scores], "num_tokens": len(c.tokens)})
  scores = [verifier.aggregate(c["step_scores"], aggregation) for c in candidates]
  found = [c["answer"] for c in candidates]
  selected = selected_answers(candidates, {
      rule: answers.select(found, scores, rule, task.same_answer) for rule in answers.RULES})
  k = result.counts
  return {
      "id": example["id"], "question": example["question"], "answer": example["answer"],
      "difficulty": example["difficulty"],
      "method": method_name, "kind": method.kind, "n": n,
      "beam_width": 0 if method.kind == "best_of_n" else methods.beam_width(method, n),
      "lookahead": method.lookahead, "verifier": verifier_name,
      "verifier_kind": verifier_kind, "aggregation": aggregation,
      "prompt_score": round(float(result.prompt_score), 6),
      "candidates": candidates, "selected": selected,
      "counts": {
          "generations": methods.generations(method, n), "candidates": len(candidates),
          "prompt_tokens": k.prompt_tokens, "generated_tokens": k.generated_tokens,
          "verifier_tokens": k.verifier_tokens, "rounds": k.rounds,
          "policy_flops": 2 * policy_params * (k.prompt_tokens + k.generated_tokens),
          "verifier_flops": 2 * verifier_params * k.verifier_tokens},
  }


def summarize(records: list[dict]) -> dict:
  """Accuracy of each answer rule, coverage (any candidate correct) and mean counts."""
  out = {rule: float(np.mean([r["selected"][rule]["correct"] for r in records]))
         for rule in answers.RULES}
  out["coverage"] = float(np.mean([any(c["correct"] for c in r["candidates"]) for r in records]))
  # Unfinished candidates (cut by the length or round cap) stand in only where a question
  # (or DVTS subtree) had fewer finished ones than its budget.
  out["unfinished_candidates"] = sum(not c["finished"] for r in records for c in r["candidates"])
  for key in ("generated_tokens", "verifier_tokens", "policy_flops", "verifier_flops", "rounds"):
    out[f"mean_{key}"] = float(np.mean([r["counts"][key] for r in records]))
  out["questions"] = len(records)
  return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def reselect(record: dict, aggregation: str, rule: str, same_answer) -> bool:
  """Whether `rule` over the record's candidates, with step scores aggregated by
  `aggregation`, picks a right answer: any selection is recomputable from a result file."""
  candidates = record["candidates"]
  scores = [verifier.aggregate(c["step_scores"], aggregation) for c in candidates]
  i = answers.select([c["answer"] for c in candidates], scores, rule, same_answer)
  return i is not None and candidates[i]["correct"]


def within_question_auroc(records: list[dict], aggregation: str) -> np.ndarray:
  """Per question holding both right and wrong candidates: the probability that a right
  candidate's solution score beats a wrong one's (ties half)."""
  scores, right, question = [], [], []
  for i, r in enumerate(records):
    for c in r["candidates"]:
      scores.append(verifier.aggregate(c["step_scores"], aggregation))
      right.append(c["correct"])
      question.append(i)
  return verifier_metrics.within_group_auroc(
      np.asarray(scores, np.float64), np.asarray(right, bool), np.asarray(question))


def verifier_comparison(prm: dict[int, list[dict]], orm: dict[int, list[dict]] | None,
                        same_answer) -> dict:
  """Best-of-N accuracy per N for PRM-last/min/prod and ORM, weighted and argmax, and
  majority vote. prm / orm: budget -> records of best-of-N runs over the same samples."""
  table = {}
  for n, records in sorted(prm.items()):
    row = {}
    for how in verifier.STEP_AGGREGATIONS:
      for rule in ("weighted", "argmax"):
        row[f"prm_{how}_{rule}"] = float(np.mean(
            [reselect(r, how, rule, same_answer) for r in records]))
    row["majority"] = float(np.mean([reselect(r, "last", "majority", same_answer)
                                     for r in records]))
    if orm and n in orm:
      for rule in ("weighted", "argmax"):
        row[f"orm_{rule}"] = float(np.mean([reselect(r, "last", rule, same_answer)
                                            for r in orm[n]]))
    table[str(n)] = {k: round(v, 4) for k, v in row.items()}
  return table
