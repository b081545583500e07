"""Runs `tts plan` on the tiny config over 8 fake devices and, in the same process, compiles
the same steps from real, allocated arrays (random weights, a real train state, a prefilled
cache): what a run would compile. Prints one JSON line: the plan's table and, per step,
the reference's per-device bytes.

A fresh process: the device count is fixed when jax starts, and `tts plan` sets it.
  python tests/helpers/plan_check.py OUT.json --hbm GIB [tts plan flags...]
"""
import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tiny import DEMO, TINY, config  # noqa: E402

from tts import cli  # noqa: E402

# The tiny task's 25-token vocabulary does not split over tensor=2 (an error when training):
# its rule maps vocab to no mesh axis.
RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
         ("kv_heads", "tensor"), ("vocab", None), ("head_dim", None), ("norm", None))
MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
        "--config.decode_mesh.data=4", "--config.decode_mesh.tensor=2",
        f"--config.logical_axis_rules={RULES!r}"]


def shard_bytes(tree) -> int:
  import jax
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def stats(compiled, **parts) -> dict:
  m = compiled.memory_analysis()
  return {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
          "aliased": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
          **{k: shard_bytes(v) for k, v in parts.items()}}


def reference(cfg) -> dict:
  """Train, decode and score steps of the small policy and the PRM from real arrays."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from tts.data.tasks import make_task
  from tts.model import Transformer
  from tts.model.sharding import DecodeSharding, make_mesh, param_shardings
  from tts.search import sampler, verifier
  from tts.stages.policy import model_config
  from tts.train import batches
  from tts.train.config import TrainConfig
  from tts.train.objectives import NextTokenLoss, ValueLoss
  from tts.train.trainer import Trainer
  small = model_config(cfg, "small", make_task(cfg.task).vocab.vocab_size)
  prm = dataclasses.replace(small, value_head=True)
  out = {}
  mesh = make_mesh(cfg.mesh)
  for name, model_cfg, objective, section, width in (
      ("policy.small", small, NextTokenLoss(), cfg.policy.small, cfg.data.max_len),
      ("prm", prm, ValueLoss(), cfg.prm, -(-(cfg.data.max_len + cfg.label.max_new_tokens) // 16) * 16)):
    trainer = Trainer(model_cfg, TrainConfig(**section), objective, mesh, cfg.logical_axis_rules)
    rows = trainer.cfg.batch_size
    fields = objective.batch_fields + (objective.optional_fields if name == "policy.small" else ())
    data = {k: np.ones((rows, width), np.int32 if k in ("tokens", "segment_ids", "positions")
                       else np.float32) for k in fields}
    state = trainer.new_state()
    batch = batches.make_global_batch(data, np.arange(rows), trainer.batch_sharding)
    out[f"{name}/train"] = stats(trainer._train_step.lower(state, batch).compile(),
                                 params=state["params"], optimizer=state["opt_state"],
                                 inputs=(state, batch))
  decoding = DecodeSharding.create(make_mesh(cfg.decode_mesh, jax.devices(), "decode_mesh"),
                                   cfg.logical_axis_rules)
  s = cfg.search
  rows, capacity = s.rows_per_batch, cfg.data.max_len + s.max_new_tokens
  on_rows = lambda x: jax.device_put(x, decoding.rows(x.shape))  # as the plan places them
  prompts = jnp.ones((rows, 4), jnp.int32)
  lengths = on_rows(jnp.full((rows,), 3, jnp.int32))
  for name, model_cfg in (("policy.small", small), ("prm", prm)):
    abstract = nnx.state(nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0))))
    params = jax.device_put(nnx.to_pure_dict(nnx.state(Transformer(model_cfg, nnx.Rngs(0)))),
                            param_shardings(abstract, decoding.mesh, decoding.rules))
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0))))
    if name == "prm":
      cache = verifier.score_prompts(graphdef, params, prompts, lengths, capacity, decoding).state
      args = (params, cache, on_rows(jnp.ones((rows, s.max_step_tokens), jnp.int32)), lengths)
      compiled = verifier.score_tokens.lower(graphdef, *args, decoding, "", lengths).compile()
      args += (lengths,)
      out["prm/score"] = stats(compiled, params=params, kv_cache=cache, inputs=args)
      continue
    state = sampler.prefill(graphdef, params, prompts, lengths, capacity, decoding)
    keys = on_rows(jax.random.split(jax.random.key(0), rows))
    live = on_rows(jnp.ones((rows,), bool))
    sampling = sampler.SamplingConfig(s.temperature, s.top_k, s.top_p, s.max_new_tokens)
    compiled = sampler.decode.lower(graphdef, params, state, keys, live, sampling, (0,),
                                    s.max_step_tokens, decoding).compile()
    out["policy.small/decode"] = stats(compiled, params=params, kv_cache=state.cache,
                                       inputs=(params, state, keys, live))
  return out


def main():
  path, flags = sys.argv[1], sys.argv[2:]
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    cli.main(["plan", DEMO, "--devices", "8", "--models", "policy.small,prm", *flags,
              *TINY, *MESH])
  with open(path, "w") as f:
    json.dump({"table": printed.getvalue(), "reference": reference(config(*MESH))}, f)


if __name__ == "__main__":
  main()
