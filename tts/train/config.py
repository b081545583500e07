"""Trainer hyperparameters as a frozen dataclass built from the `train` config section."""
import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int
  batch_size: int  # global, across all hosts and devices
  lr: float = 1e-3
  warmup_steps: int = 50
  end_lr_fraction: float = 0.1  # cosine decays to lr * end_lr_fraction
  weight_decay: float = 0.01
  # False: decay only the matrices that multiply the model dimension (not norms, biases or
  # embeddings; see trainer.matmul_weights). True: decay every parameter.
  decay_all_params: bool = False
  b1: float = 0.9
  b2: float = 0.95
  clip_norm: float = 1.0
  grad_accum: int = 1  # micro-batches per step; batch_size must divide evenly
  dropout: float = 0.0
  eval_every: int = 100
  eval_batches: int = 4
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  log_every: int = 10
  seed: int = 0
  # Early stopping on the validation loss (needs val data): keep_best returns the weights of
  # the evaluation with the lowest val loss (saved in workdir/best, so a kill keeps them);
  # patience > 0 also stops training after that many evaluations without a new best.
  keep_best: bool = False
  patience: int = 0
  # keep_best with evals_after_best = k returns the weights k evaluations after the lowest
  # val loss (the last one if training ends sooner): the paper picks its revision model
  # "slightly after validation loss starts rising". 0: the best evaluation itself.
  evals_after_best: int = 0
  # > 0: stop at the first evaluation whose val loss is at or below this (needs val data),
  # keeping those weights. Training then ends at a declared competence instead of a step
  # count: where accuracy jumps late and at a seed-dependent step, a step count lands seeds
  # anywhere on the jump, a loss target at one accuracy (README, configs/reproduce.py). The
  # learning-rate schedule still spans `steps`, the most the run may take.
  stop_at_val_loss: float = 0.0
  # Fields that must be >= 1 (checked by config_schema.build, which names the section).
  POSITIVE: ClassVar[tuple[str, ...]] = (
      "steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "checkpoint_every",
      "keep_checkpoints", "log_every")

  def __post_init__(self):
    if self.patience and not self.keep_best:
      raise ValueError("patience needs keep_best=True: stopping early only makes sense when "
                       "the best weights are kept")
    if self.evals_after_best and not self.keep_best:
      raise ValueError("evals_after_best needs keep_best=True")
    if self.patience and self.patience < self.evals_after_best:
      raise ValueError(f"patience={self.patience} < evals_after_best={self.evals_after_best}: "
                       "training would stop before the evaluation whose weights are kept; "
                       "raise patience")
    if self.stop_at_val_loss < 0:
      raise ValueError(f"stop_at_val_loss={self.stop_at_val_loss} is negative; use 0 (off) or "
                       "the validation loss to stop at")
    if self.batch_size % self.grad_accum:
      raise ValueError(f"batch_size={self.batch_size} is not divisible by "
                       f"grad_accum={self.grad_accum}; pick a divisor")
