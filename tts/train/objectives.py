"""Training objectives. Each maps (model, batch, dropout key) to summed loss and weight.

Returning sums rather than means lets the trainer average exactly over gradient
accumulation micro-batches and over any sharding of the batch.
"""
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp


class LossOutput(NamedTuple):
  total: jax.Array  # float32 scalar: summed per-token (or per-step) loss
  weight: jax.Array  # float32 scalar: how many terms `total` sums
  metrics: dict  # name -> summed float32 scalar, averaged by `weight` for logging


class Objective(Protocol):
  batch_fields: tuple[str, ...]  # required arrays, each [B, ...]
  optional_fields: tuple[str, ...]  # used when the data has them (packing: PACKING_FIELDS)

  def __call__(self, model, batch: dict, dropout_key) -> LossOutput: ...


PACKING_FIELDS = ("segment_ids", "positions")


def _packing(batch) -> dict:
  """Inputs-side slices of the packing arrays, when the batch is packed."""
  return {k: batch[k][:, :-1] for k in PACKING_FIELDS if k in batch}


class NextTokenLoss:
  """Cross-entropy on the tokens where loss_mask is 1 (the solution), prompt masked.

  batch: tokens int32[B, T]; loss_mask float32[B, T], 1 where tokens[t] is a target;
  optionally segment_ids and positions int32[B, T] for packed rows.
  """
  batch_fields = ("tokens", "loss_mask")
  optional_fields = PACKING_FIELDS

  def __call__(self, model, batch, dropout_key) -> LossOutput:
    tokens, mask = batch["tokens"], batch["loss_mask"][:, 1:]
    logits = model(tokens[:, :-1], dropout_key=dropout_key, **_packing(batch)).logits
    targets = tokens[:, 1:]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return LossOutput(total=jnp.sum(nll * mask), weight=jnp.sum(mask),
                      metrics={"token_accuracy": jnp.sum(correct * mask)})


class ValueLoss:
  """Binary cross-entropy of the value head against soft targets at marked positions.

  A PRM marks the last token of every step (target: the Monte-Carlo estimate that the
  solution still reaches the right answer); an ORM marks the last token of the solution
  (target: whether its answer is right). batch: tokens int32[B, T]; value_mask float32[B, T],
  1 where a target applies; value_target float32[B, T] in [0, 1].
  """
  batch_fields = ("tokens", "value_mask", "value_target")
  optional_fields = ()

  def __call__(self, model, batch, dropout_key) -> LossOutput:
    logits = model(batch["tokens"], dropout_key=dropout_key).values
    mask, target = batch["value_mask"], batch["value_target"]
    bce = target * jax.nn.softplus(-logits) + (1 - target) * jax.nn.softplus(logits)
    agree = ((logits > 0) == (target > 0.5)).astype(jnp.float32)
    error = jnp.abs(jax.nn.sigmoid(logits) - target)
    return LossOutput(total=jnp.sum(bce * mask), weight=jnp.sum(mask),
                      metrics={"agreement": jnp.sum(agree * mask),
                               "abs_error": jnp.sum(error * mask)})
