"""Compiles the trainer's FSDP train step on 8 forced CPU devices and counts its collectives.

  python tests/helpers/train_collectives.py --mesh 1,8,1 [--scan_layers] [--remat full]

Prints one JSON object: "counts", {"all-to-all": n, "all-gather": n, ...} over the
optimised HLO (async start/done pairs count once); "gathered", the element count of each
all-gather's result; "param_sizes", the element counts of the parameters and of one
layer's slice of each (what FSDP may gather). A separate process: the device count is
fixed when jax starts.
"""
import argparse
import json
import math
import os
import re
import sys

COLLECTIVES = ("all-to-all", "all-gather", "reduce-scatter", "all-reduce",
               "collective-permute")


def count_collectives(hlo: str) -> dict[str, int]:
  """Occurrences of each collective op in an HLO module's text (async `-start` counted,
  its `-done` not)."""
  return {op: len(re.findall(rf" {op}(?:-start)?\(", hlo)) for op in COLLECTIVES}


def gathered_sizes(hlo: str) -> list[int]:
  """Element count of each all-gather's result (`= f32[64,128]{1,0} all-gather(`)."""
  shapes = re.findall(r"= \w+\[([\d,]*)\]\S* all-gather(?:-start)?\(", hlo)
  return [math.prod(int(d) for d in shape.split(",") if d) for shape in shapes]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mesh", default="1,8,1", help="data,fsdp,tensor sizes")
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--remat", default="none")
  args = p.parse_args(argv)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")
  import jax
  import jax.numpy as jnp

  from tts.model import ModelConfig
  from tts.model.sharding import make_mesh
  from tts.train.config import TrainConfig
  from tts.train.objectives import NextTokenLoss
  from tts.train.trainer import Trainer
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
  from demo import LOGICAL_AXIS_RULES

  data, fsdp, tensor = map(int, args.mesh.split(","))
  mesh = make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor})
  layout = {"scan_layers": True, "remat": args.remat} if args.scan_layers else {}
  model = ModelConfig(vocab_size=64, num_layers=args.layers, d_model=64, num_heads=4,
                      num_kv_heads=2, d_ff=128, **layout)
  trainer = Trainer(model, TrainConfig(steps=1, batch_size=16), NextTokenLoss(), mesh,
                    LOGICAL_AXIS_RULES)
  batch = {k: jax.ShapeDtypeStruct((16, 32), jnp.int32 if k == "tokens" else jnp.float32,
                                   sharding=trainer.batch_sharding)
           for k in ("tokens", "loss_mask")}
  hlo = trainer.compile_train_step(batch).as_text()
  shapes = [x.shape for x in jax.tree.leaves(trainer.abstract_params)]
  sizes = {math.prod(s) for s in shapes} | {math.prod(s[1:]) for s in shapes if s}
  print(json.dumps({"counts": count_collectives(hlo), "gathered": gathered_sizes(hlo),
                    "param_sizes": sorted(sizes)}))


if __name__ == "__main__":
  main()
