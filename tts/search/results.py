"""Search result files: one JSON line per question, everything selection and plots need.

The schema is documented in WORKSPACE.md ("search/"). Later stages (selection, FLOPs,
report) read only these files, never the models.
"""
from typing import Any, Mapping

import numpy as np

from tts.search import answers, methods, verifier
from tts.search.methods import MethodConfig
from tts.search.tree import QuestionResult


def question_record(task, example: Mapping[str, Any], method_name: str, method: MethodConfig,
                    n: int, result: QuestionResult, aggregation: str,
                    policy_params: int, verifier_params: int) -> dict:
  """The record of one question searched with one method at budget n."""
  candidates = []
  for c in result.candidates:
    text = task.vocab.decode(c.tokens)
    candidates.append({
        "text": text, "answer": task.extract_answer(text),
        "correct": bool(task.is_correct(text, example)), "finished": c.finished,
        "step_scores": [round(float(s), 6) for s in c.step_scores], "num_tokens": len(c.tokens)})
  scores = [verifier.aggregate(c["step_scores"], aggregation) for c in candidates]
  found = [c["answer"] for c in candidates]
  selected = {}
  for rule in answers.RULES:
    i = answers.select(found, scores, rule, task.same_answer)
    selected[rule] = ({"answer": None, "correct": False} if i is None else
                      {"answer": found[i], "correct": candidates[i]["correct"]})
  k = result.counts
  return {
      "id": example["id"], "question": example["question"], "answer": example["answer"],
      "difficulty": example["difficulty"],
      "method": method_name, "kind": method.kind, "n": n,
      "beam_width": 0 if method.kind == "best_of_n" else methods.beam_width(method, n),
      "lookahead": method.lookahead, "aggregation": aggregation,
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
  for key in ("generated_tokens", "verifier_tokens", "policy_flops", "verifier_flops", "rounds"):
    out[f"mean_{key}"] = float(np.mean([r["counts"][key] for r in records]))
  out["questions"] = len(records)
  return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
