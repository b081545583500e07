"""Runs one small `Trainer.fit` in its own process and saves what the tests compare.

Training tests need a fresh process per device layout: XLA_FLAGS (forced host device
count) must be set before jax is imported, and `jax.distributed` can start only once. So
tests run this script as `python tests/helpers/train_run.py --workdir W --out R.npz ...`.

The run: a copy task (64 examples of 16 tokens, second half repeats the first, a varying
number of loss tokens per example), model d_model 32 / 2 layers / vocab 32, batch 8,
12 steps, checkpoint every 3, log_every 1 so metrics.jsonl has every step's loss.

The .npz (written by process 0) holds:
  param/<path>        final parameters, gathered to host from every process
  shard_shape/<path>  one device's block of each parameter (evidence of sharding)
  loss, metric_steps  float[steps], int[steps] read back from metrics.jsonl
  start_step          the checkpoint fit resumed from, -1 if none
  collectives/<op>    with --collectives: that op's count in the compiled train step
  device_count, process_count
Exit code 3 means fit raised FloatingPointError, 4 that it stopped on a preemption notice
(Preempted); the message is saved as `error`.
"""
import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True, help=".npz written by process 0")
  p.add_argument("--devices", type=int, default=0, help="forced CPU devices (0: default)")
  p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes")
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--grad_accum", type=int, default=1)
  p.add_argument("--d_model", type=int, default=32)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--checkpoint_every", type=int, default=3)
  p.add_argument("--poison_step", type=int, default=-1,
                 help="make the loss of this (0-based) step non-finite: inf in its loss_mask")
  p.add_argument("--throttle", type=float, default=0.0,
                 help="sleep this long before each (0-based) step from --throttle_from on, "
                      "so a test can kill the run at a known point")
  p.add_argument("--throttle_from", type=int, default=6)
  p.add_argument("--collectives", action="store_true",
                 help="save the compiled train step's collective ops per kind "
                      "(collectives/<op>, e.g. collectives/all-gather)")
  p.add_argument("--coordinator", default="", help="host:port for jax.distributed")
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--cpu_collectives", default="", help="e.g. gloo; empty: jax's default")
  return p.parse_args(argv)


def copy_task(num_examples=64, length=16, vocab=32):
  """The second half repeats the first; loss on the last k (1..8) tokens of each example,
  so examples (and grad_accum micro-batches) carry different loss weights."""
  import numpy as np
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, (num_examples, length)).astype(np.int32)
  tokens[:, length // 2:] = tokens[:, :length // 2]
  k = rng.integers(1, length // 2 + 1, num_examples)
  mask = (np.arange(length)[None, :] >= length - k[:, None]).astype(np.float32)
  return {"tokens": tokens, "loss_mask": mask}


RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
         ("kv_heads", "tensor"), ("vocab", "tensor"), ("head_dim", None), ("norm", None))


COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")


def collective_counts(trainer, data) -> dict:
  """How many collectives of each kind the compiled train step runs (async pairs count
  once: their -start op)."""
  import re

  import jax
  batch = {k: jax.ShapeDtypeStruct((trainer.cfg.batch_size,) + v.shape[1:], v.dtype,
                                   sharding=trainer.batch_sharding) for k, v in data.items()}
  hlo = trainer.compile_train_step(batch).as_text()
  return {f"collectives/{op}": len(re.findall(rf"\s{op}(-start)?\(", hlo)) for op in COLLECTIVES}


def main(args):
  if args.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  import jax
  if args.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
  if args.coordinator:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  import numpy as np

  from tts import logs
  from tts.model import ModelConfig
  from tts.model.sharding import make_mesh
  from tts.train import batches
  from tts.train.checkpoints import TrainCheckpoints
  from tts.train.config import TrainConfig
  from tts.train.objectives import NextTokenLoss
  from tts.train.preemption import Preempted
  from tts.train.trainer import Trainer

  model_cfg = ModelConfig(vocab_size=32, num_layers=2, d_model=args.d_model, num_heads=4,
                          num_kv_heads=2, d_ff=64)
  train_cfg = TrainConfig(steps=args.steps, batch_size=8, lr=args.lr, warmup_steps=2,
                          checkpoint_every=args.checkpoint_every, log_every=1,
                          eval_every=10 ** 6, grad_accum=args.grad_accum, keep_checkpoints=2)
  data = copy_task()
  if args.poison_step >= 0:
    row = batches.global_batch_indices(64, train_cfg.batch_size, args.poison_step, train_cfg.seed)[0]
    data["loss_mask"][row, -1] = np.inf
  if args.throttle:
    original = batches.global_batch_indices
    def throttled(num_examples, batch_size, step, seed):
      if step >= args.throttle_from:
        time.sleep(args.throttle)
      return original(num_examples, batch_size, step, seed)
    batches.global_batch_indices = throttled

  logs.setup(jax.process_index())
  mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), map(int, args.mesh.split(",")))))
  trainer = Trainer(model_cfg, train_cfg, NextTokenLoss(), mesh, RULES)
  ckpts = TrainCheckpoints(os.path.join(args.workdir, "checkpoints"), 2)
  start = ckpts.latest_step()
  ckpts.close()
  result = {"start_step": -1 if start is None else start,
            "device_count": jax.device_count(), "process_count": jax.process_count()}
  if args.collectives:
    result.update(collective_counts(trainer, data))
  try:
    params, _ = trainer.fit(data, args.workdir)
  except FloatingPointError as e:
    if jax.process_index() == 0:
      np.savez(args.out, error=str(e), **result)
    return 3
  except Preempted as e:
    if jax.process_index() == 0:
      np.savez(args.out, error=str(e), **result)
    return 4
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:  # evidence of sharding
    result["shard_shape/" + "/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(
        leaf.sharding.shard_shape(leaf.shape))
  # One jitted all-gather (process_allgather moves leaf by leaf: seconds over gloo).
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.jit(lambda p: p, out_shardings=replicated)(params)
  if jax.process_index() == 0:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in flat:
      result["param/" + "/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    result["loss"] = np.asarray([r["loss"] for r in records], np.float64)
    result["metric_steps"] = np.asarray([r["step"] for r in records])
    np.savez(args.out, **result)
  return 0


if __name__ == "__main__":
  sys.exit(main(parse_args()))
