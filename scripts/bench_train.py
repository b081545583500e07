"""Train-step throughput and model FLOPs utilisation (MFU) of the demo's small and large models.

  python scripts/bench_train.py [--config configs/demo.py] [--steps 10]

Each model runs in each layer layout of LAYOUTS: the config's own (unrolled in the demo),
its layers under a scan, and scanned with full remat (the backward pass recomputes each
block's activations: about a third more FLOPs than 6*N*D counts, for memory).

MFU = 6 * params * tokens/s / peak, where peak is the best f32 matmul rate measured in this
same run (square matmuls through jax.jit), so the ratio is machine-independent. Attention
score FLOPs are not in 6*N*D; they are printed beside it. What bounds the step: the bytes
XLA's cost analysis counts for the compiled step, at the elementwise bandwidth measured in
the same run, give the time memory traffic alone takes (`mem ms`), beside the step.
"""
import argparse
import dataclasses
import sys
import time

import jax
import numpy as np

from tts import config_schema
from tts.cli import load_config
from tts.data.tasks import make_task
from tts.model.sharding import make_mesh
from tts.roofline import bytes_accessed, copy_bandwidth, matmul_peak
from tts.stages.policy import model_config
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer


LAYOUTS = {"config": {}, "scan": {"scan_layers": True},
           "scan+remat": {"scan_layers": True, "remat": "full"}}


def bench_model(cfg, name, steps: int, layout: dict) -> dict:
  task = make_task(cfg.task)
  model_cfg = dataclasses.replace(model_config(cfg, name, task.vocab.vocab_size), **layout)
  train_cfg = config_schema.build(TrainConfig, cfg.policy[name], f"policy.{name}")
  mesh = make_mesh(cfg.mesh)
  trainer = Trainer(model_cfg, train_cfg, NextTokenLoss(), mesh, cfg.logical_axis_rules)
  batch_size, seq = train_cfg.batch_size, cfg.data.max_len
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(3, model_cfg.vocab_size, (batch_size, seq)).astype(np.int32),
           "loss_mask": np.ones((batch_size, seq), np.float32)}
  batch = jax.device_put(batch, trainer.batch_sharding)
  state = trainer.new_state()
  step = trainer._train_step.lower(state, batch).compile()  # timed calls run this one
  state, m = step(state, batch)  # warm-up
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  tokens = batch_size * seq
  n = model_cfg.num_params
  attn = 6 * model_cfg.num_layers * seq * model_cfg.num_heads * model_cfg.head_dim  # per token
  return {"name": name, "params": n, "batch": f"{batch_size}x{seq}", "step_s": step_s,
          "tokens_per_s": tokens / step_s, "gflops": 6 * n * tokens / step_s / 1e9,
          "attn_gflops": attn * tokens / step_s / 1e9, "bytes": bytes_accessed(step)}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  cfg = load_config(args.config)
  peak, size = matmul_peak()
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}")
  bandwidth = copy_bandwidth()
  print(f"matmul peak: {peak:.1f} GFLOP/s (f32, {size}^3); elementwise bandwidth "
        f"{bandwidth:.1f} GB/s")
  print(f"{'model':6} {'layers':10} {'params':>9} {'batch':>8} {'step ms':>8} {'tokens/s':>9} "
        f"{'GFLOP/s':>8} {'MFU':>6} {'+attn MFU':>9} {'GB/step':>8} {'mem ms':>7}")
  for name in ("small", "large"):
    for layout, fields in LAYOUTS.items():
      r = bench_model(cfg, name, args.steps, fields)
      print(f"{r['name']:6} {layout:10} {r['params']:9d} {r['batch']:>8} "
            f"{r['step_s'] * 1e3:8.1f} {r['tokens_per_s']:9.0f} {r['gflops']:8.1f} "
            f"{r['gflops'] / peak:6.1%} {(r['gflops'] + r['attn_gflops']) / peak:9.1%} "
            f"{r['bytes'] / 1e9:8.2f} {r['bytes'] / 1e9 / bandwidth * 1e3:7.1f}")


if __name__ == "__main__":
  sys.exit(main())
