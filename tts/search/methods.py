"""Search methods as tree shapes, and running one over many questions in fixed batches."""
import dataclasses
import math

from tts.search import sampler, tree
from tts.search.tree import Candidate, Counts, QuestionResult, TreeShape

KINDS = ("best_of_n", "beam", "lookahead", "dvts")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  kind: str = "best_of_n"
  beam_width: int = 0  # M for beam, lookahead and DVTS; 0 means M = sqrt(N)
  lookahead: int = 0  # k greedy rollout steps (lookahead only)
  max_rounds: int = 40  # search rounds cap (beam, lookahead, DVTS)
  verifier: str = "prm"  # a name under search.verifiers
  budgets: tuple[int, ...] = ()  # the N this method runs at; () means search.budgets

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r} is unknown; use one of {', '.join(KINDS)}")
    if self.lookahead and self.kind != "lookahead":
      raise ValueError(f"lookahead={self.lookahead} is only for kind='lookahead'")
    if any(not isinstance(n, int) or n < 1 for n in self.budgets):
      raise ValueError(f"budgets={self.budgets}: each budget is a whole number >= 1")


def beam_width(method: MethodConfig, n: int) -> int:
  return method.beam_width or math.isqrt(n)


def tree_shape(method: MethodConfig, n: int) -> TreeShape | None:
  """The tree for budget n, or None when n does not fit the method (M must divide n)."""
  if method.kind == "best_of_n":
    return TreeShape(groups=n, keep=1, children=1, max_rounds=None)
  m = beam_width(method, n)
  if m > n or n % m or (method.beam_width == 0 and m * m != n):
    return None
  if method.kind == "dvts":
    return TreeShape(groups=n // m, keep=1, children=m, max_rounds=method.max_rounds)
  return TreeShape(groups=1, keep=n // m, children=m, lookahead=method.lookahead,
                   max_rounds=method.max_rounds)


def generations(method: MethodConfig, n: int) -> int:
  """The paper's budget unit: lookahead k costs N(k+1) generations, the others N."""
  return n * (method.lookahead + 1)


def run(engine, shape: TreeShape, prompts: list[list[int]], question_keys,
        rows_per_batch: int, aggregation: str = "last") -> list[QuestionResult]:
  """Searches every question in the fewest batches of at most `rows_per_batch` rows, the
  questions spread evenly over them. The last batch is filled up with copies of its first
  question, so every batch has the same shape and compiles once; they are never decoded.
  aggregation: how step scores rank rows and candidates."""
  most = max(1, min(rows_per_batch // shape.width, len(prompts)))
  per_batch = -(-len(prompts) // -(-len(prompts) // most))
  results = []
  for chunk, keys, real in sampler.fixed_batches(prompts, question_keys, per_batch):
    results += tree.search(engine, chunk, keys, shape, aggregation, real)[:real]
  return results


def first_samples(result: QuestionResult, n: int) -> QuestionResult:
  """Best-of-n from a best-of-N run with n <= N: the candidates of slots < n, in slot order.
  Exact, since best-of-N rows never interact and a slot's tokens depend only on its keys."""
  chosen = sorted((c for c in result.candidates if c.slot < n), key=lambda c: c.slot)
  generated = sum(len(c.tokens) for c in chosen)
  p = result.counts.prompt_tokens
  counts = Counts(prompt_tokens=p, generated_tokens=generated, verifier_tokens=p + generated,
                  rounds=max((c.rounds for c in chosen), default=0))
  return QuestionResult(chosen, counts, result.prompt_score)


__all__ = ["Candidate", "MethodConfig", "beam_width", "first_samples", "generations", "run",
           "tree_shape"]
