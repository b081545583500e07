"""decode_to_end on 8 forced CPU devices (rows over data x fsdp, KV heads over tensor):
the rows that still run go on in smaller sharded batches, and every row's tokens equal one
decode call's over all rows on the same mesh.

  python tests/helpers/decode_to_end_mesh.py

Prints one JSON object: "batches" (the rows of each decode call), "same_tokens",
"same_lengths", "max_log_prob_diff". A separate process: the device count is fixed when
jax starts.
"""
import json
import os
import sys


def main():
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from tts.model import ModelConfig, Transformer
  from tts.model.sharding import decode_sharding
  from tts.search import sampler
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
  from demo import LOGICAL_AXIS_RULES

  sharding = decode_sharding({"data": 2, "fsdp": 2, "tensor": 2}, LOGICAL_AXIS_RULES)
  cfg = ModelConfig(vocab_size=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                    d_ff=64)
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  rng = np.random.default_rng(3)
  rows = 40
  tokens, lengths = sampler.pad_prompts(
      [rng.integers(6, 16, n).tolist() for n in rng.integers(2, 9, rows)], pad_id=0)
  keys = jax.random.split(jax.random.key(4), rows)
  sampling = sampler.SamplingConfig(temperature=1.0, max_new_tokens=24)
  stops = (2, 3, 4, 5)
  live = rng.random(rows) < 0.9
  fresh = lambda: sampler.prefill(graphdef, params, tokens, lengths, tokens.shape[1] + 24,
                                  sharding)
  _, whole = sampler.decode(graphdef, params, fresh(), keys, jnp.asarray(live), sampling,
                            stops, 24, sharding)
  batches, decode = [], sampler.decode
  def counting(*args, **kwargs):
    batches.append(int(args[3].shape[0]))
    return decode(*args, **kwargs)
  sampler.decode = counting
  out = sampler.decode_to_end(graphdef, params, fresh(), keys, live, sampling, stops, sharding,
                              smallest=2)
  print(json.dumps({
      "batches": batches,
      "same_tokens": bool(np.array_equal(out.tokens, np.asarray(whole.tokens))),
      "same_lengths": bool(np.array_equal(out.lengths, np.asarray(whole.lengths))),
      "distinct_lengths": len(set(out.lengths[live].tolist())),
      "max_log_prob_diff": float(np.max(np.abs(out.log_probs - np.asarray(whole.log_probs)))),
  }))


if __name__ == "__main__":
  main()
