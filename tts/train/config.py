"""Trainer hyperparameters as a frozen dataclass built from the `train` config section."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int
  batch_size: int  # global, across all hosts and devices
  lr: float = 1e-3
  warmup_steps: int = 50
  end_lr_fraction: float = 0.1  # cosine decays to lr * end_lr_fraction
  weight_decay: float = 0.01
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

  def __post_init__(self):
    if self.batch_size % self.grad_accum:
      raise ValueError(f"train.batch_size={self.batch_size} is not divisible by "
                       f"train.grad_accum={self.grad_accum}; pick a divisor")
