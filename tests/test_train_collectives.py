"""FSDP's compiled train step moves weights, never activations.

Under FSDP every device holds a slice of each weight and its own rows of the batch; a step
should all-gather weights (and reduce their gradients) and leave activations where the
rows are. Without activation constraints XLA's partitioner followed the weights' layout
(embed split over fsdp) and reshuffled the residual stream between the rows split and the
feature split: on this 2-layer model the step held 21 all-to-alls and 61 all-gathers, 26
of them of arrays no weight has the size of (fsdp=8); 20, 46 and 25 (data=2 x fsdp=4).
With the constraints: no all-to-all and 16 all-gathers, each a weight. Nothing numeric
notices (the sharded run equals the one-device run either way); only the communication,
which at pod scale is the step time.
The step is compiled on 8 forced CPU devices in a subprocess (tests/helpers/
train_collectives.py) and its optimised HLO read: no all-to-all, and every all-gather
produces a whole weight (or one layer's slice of a stacked weight).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

HELPER = pathlib.Path(__file__).parent / "helpers" / "train_collectives.py"


def collectives(*args) -> dict:
  env = dict(os.environ, PYTHONPATH=str(HELPER.parents[2]), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  done = subprocess.run([sys.executable, str(HELPER), *map(str, args)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--mesh", "1,8,1"), ("--mesh", "2,4,1"),
                                  ("--mesh", "2,4,1", "--scan_layers", "--remat", "full")],
                         ids=["fsdp8", "data2_fsdp4", "data2_fsdp4_scan_remat"])
def test_fsdp_step_gathers_only_weights(args):
  result = collectives(*args)
  counts = result["counts"]
  assert counts["all-to-all"] == 0, counts
  assert counts["all-gather"] > 0, counts  # FSDP does gather its weights
  activations = [n for n in result["gathered"] if n not in result["param_sizes"]]
  assert not activations, (activations, result["param_sizes"])
