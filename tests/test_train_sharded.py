"""The sharded train step computes the same thing as the one-device train step.

Every model in the project trains through `Trainer`; its step is one `jax.jit` with
parameter, optimizer-state and batch shardings derived from logical-axis rules. A wrong
rule, a batch split that drops or repeats rows, or a loss averaged per shard instead of
over the global batch would still train, just differently. These tests run the same 12
steps on 8 forced CPU devices (data=2, fsdp=2, tensor=2) and with gradient accumulation,
and compare with the one-device run, loss by loss and parameter by parameter.

Tolerances: measured max |diff| on this CPU is ~1e-6 for losses (~3.0) and ~3e-7 for
parameters (summation order differs across shards); the asserted rtol 1e-4 / atol 1e-5
leaves ~30x headroom (`assert_same_training` in conftest) and is far below what a real
error moves: averaging per-micro-batch means instead changes losses by 0.1 and
parameters by 1e-2.
"""
import numpy as np


def test_reference_run_learns(reference_run):
  """Guards the comparisons below against comparing two runs that do nothing: the
  reference must actually move its parameters and lower its loss."""
  assert int(reference_run["device_count"]) == 1
  loss = reference_run["loss"]
  assert np.all(np.isfinite(loss)) and loss[-3:].mean() < loss[:3].mean() - 0.2, loss


def test_eight_devices_match_one_device(reference_run, run_train, assert_same_training):
  """Sharded over data=2 x fsdp=2 x tensor=2 (batch over data and fsdp, embed over fsdp,
  heads/mlp/vocab over tensor), 12 steps give the one-device losses and parameters."""
  result = run_train("mesh8", "--devices", 8, "--mesh", "2,2,2")
  assert int(result["device_count"]) == 8
  # The run really was sharded: vocab over tensor, embed over fsdp, mlp over tensor.
  np.testing.assert_array_equal(result["shard_shape/embed"], [16, 16])
  np.testing.assert_array_equal(result["shard_shape/blocks/0/mlp/gate"], [16, 32])
  np.testing.assert_array_equal(result["shard_shape/blocks/0/attn/q"], [16, 2, 8])
  assert_same_training(result, reference_run)


def test_grad_accum_matches_one_batch(reference_run, run_train, assert_same_training):
  """grad_accum=2 sums losses, weights and gradients over micro-batches before dividing
  once, so it must equal the full batch. Examples carry 1..8 loss tokens each, so the two
  micro-batches have different weights and averaging per-micro-batch means would fail."""
  result = run_train("accum2", "--grad_accum", 2)
  assert_same_training(result, reference_run)


def test_grad_accum_on_eight_devices_matches_one_batch(reference_run, run_train,
                                                       assert_same_training):
  """Micro-batches of a sharded batch (data=2 x fsdp=2 x tensor=2, grad_accum=2) sum to
  the one-device, one-batch step."""
  result = run_train("accum2_mesh8", "--devices", 8, "--mesh", "2,2,2", "--grad_accum", 2)
  assert_same_training(result, reference_run)


def test_grad_accum_moves_no_batch_rows(run_train):
  """On a data-parallel mesh every device reads its own rows of every micro-batch: the step
  all-reduces gradients and moves nothing else. (Contiguous micro-batches, the batch
  reshaped to [grad_accum, B / grad_accum], all-gather the tokens and the loss mask.)"""
  result = run_train("accum2_data4", "--devices", 4, "--mesh", "4,1,1", "--grad_accum", 2,
                     "--steps", 1, "--collectives")
  moved = {op: int(result[f"collectives/{op}"])
           for op in ("all-gather", "all-to-all", "collective-permute", "reduce-scatter")}
  assert moved == dict.fromkeys(moved, 0), moved
  assert int(result["collectives/all-reduce"]) >= 1

