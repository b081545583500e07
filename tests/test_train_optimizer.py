"""Weight decay reaches the matrices only: norm scales, biases and the embedding table keep
their values when the gradient is zero, unless the config asks to decay everything."""
import jax
import numpy as np
import pytest

from tts.model import ModelConfig
from tts.model.sharding import make_mesh
from tts.train import batches
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer

RULES = (("batch", ("data", "fsdp")),)
MODEL = ModelConfig(vocab_size=16, num_layers=1, d_model=16, num_heads=2, num_kv_heads=2,
                    d_ff=32, tie_embeddings=False, attention_bias=True)


def _after_zero_gradient_steps(decay_all_params: bool) -> dict[str, np.ndarray]:
  """Parameters, all 1.0 before, after two steps whose loss mask is all zero: AdamW's
  update is then the weight decay alone (lr is 0 at step 0, the peak 0.1 at step 1)."""
  cfg = TrainConfig(steps=2, batch_size=2, lr=0.1, warmup_steps=1, weight_decay=0.5,
                    decay_all_params=decay_all_params)
  trainer = Trainer(MODEL, cfg, NextTokenLoss(), make_mesh(dict(data=-1, fsdp=1, tensor=1)),
                    RULES)
  state = trainer.new_state(jax.tree.map(lambda x: np.ones(x.shape, x.dtype),
                                         trainer.abstract_params))
  data = {"tokens": np.ones((2, 8), np.int32), "loss_mask": np.zeros((2, 8), np.float32)}
  for _ in range(2):
    state, _ = trainer._train_step(state, batches.make_global_batch(
        data, np.arange(2), trainer.batch_sharding))
  flat, _ = jax.tree_util.tree_flatten_with_path(state["params"])
  return {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v) for k, v in flat}


@pytest.mark.parametrize("decay_all_params", [False, True])
def test_weight_decay_reaches_matrices_only(decay_all_params):
  after = _after_zero_gradient_steps(decay_all_params)
  decayed = 1 - 0.1 * 0.5
  for name in ("embed", "blocks/0/attn/q_bias", "blocks/0/mlp_norm/scale", "final_norm/scale"):
    np.testing.assert_allclose(after[name], decayed if decay_all_params else 1.0, rtol=1e-6,
                               err_msg=name)
  for name in ("lm_head", "blocks/0/attn/q", "blocks/0/attn/o", "blocks/0/mlp/down"):
    np.testing.assert_allclose(after[name], decayed, rtol=1e-6, err_msg=name)
