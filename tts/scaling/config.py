"""Config sections of the difficulty, select, flops and report stages (typed, checked by
config_schema.build)."""
import dataclasses

BIN_KINDS = ("oracle", "predicted", "prompt")
# Per bin kind, the difficulty record field it bins (higher = easier) and the one holding
# what estimating it cost per question (oracle and predicted bins share the K samples).
BIN_SCORES = {"oracle": "pass1", "predicted": "predicted_score", "prompt": "prompt_score"}
BIN_ESTIMATION = {"oracle": "estimation", "predicted": "estimation",
                  "prompt": "prompt_estimation"}


@dataclasses.dataclass(frozen=True)
class DifficultyConfig:
  samples: int = 32  # K samples per test question (paper: 2048)
  num_bins: int = 5
  temperature: float = 0.8  # as search samples
  max_new_tokens: int = 136
  batch_size: int = 256  # rows sampled (and scored) together
  verifier: str = "prm"  # a name under search.verifiers: the PRM whose mean final score
  # predicts difficulty, and whose reading after the prompt alone gives prompt bins
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class SelectConfig:
  bins: str = "oracle"  # bins behind the headline and the FLOPs comparison:
  # oracle|predicted|prompt
  rule: str = "weighted"  # the answer rule scored: selected.<rule>.correct
  search_baseline: str = "best_of_n"  # the search method compute-optimal is compared with
  # Charge each question the generations (and FLOPs) spent estimating its difficulty: K
  # for oracle and predicted bins, none for prompt bins (the paper leaves them out; a
  # deployed system pays them).
  charge_difficulty: bool = False
  seed: int = 0  # the 2-fold split of every bin, and the bootstrap's resamples
  resamples: int = 1000  # paired bootstrap over questions: 95% intervals

  def __post_init__(self):
    if self.bins not in BIN_KINDS:
      raise ValueError(f"select.bins={self.bins!r}; use one of {BIN_KINDS}")
    if self.resamples < 1000:
      raise ValueError(f"select.resamples={self.resamples}: 95% percentile intervals need at "
                       "least 1000 resamples")


@dataclasses.dataclass(frozen=True)
class FlopsConfig:
  ratios: tuple = (0.16, 0.79, 22.0)  # R = D_inference / D_pretrain (the paper's three)
  # Tokens an imported model was pretrained on (its config does not say); trained models
  # count theirs from the policy section (steps x batch x row length).
  pretraining_tokens: int = 0

  def __post_init__(self):
    if not self.ratios or any(r <= 0 for r in self.ratios):
      raise ValueError(f"flops.ratios={self.ratios!r}: give one or more R > 0")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  dpi: int = 110
