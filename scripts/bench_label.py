"""Monte-Carlo labelling throughput: rollouts branching off one shared prefill of each
solution (what the label stage does) against prefilling every rollout's own prefix, on the
same policy, solutions and keys, in the same run.

  python scripts/bench_label.py --workdir runs/demo [--questions 32] [--rollouts 4]

Needs the demo's trained small policy (workdir/policy/small/final). Each variant runs once
to compile, then --repeats timed runs, the fastest of which counts (the machine's noise
is one-sided). Labels must agree.
"""
import argparse
import copy
import time

import jax
import numpy as np

from tts.cli import load_config
from tts.data.tasks import make_task
from tts.search.sampler import SamplingConfig, Work, pad_prompts
from tts.stages.data import read_split
from tts.stages.policy import load_policy
from tts.train import labelling


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--questions", type=int, default=32)
  parser.add_argument("--solutions", type=int, default=4)
  parser.add_argument("--rollouts", type=int, default=4)
  parser.add_argument("--rows_per_batch", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest counts")
  args = parser.parse_args()

  cfg = load_config(args.config)
  task = make_task(cfg.task)
  examples = read_split(args.workdir, "train")[:args.questions]
  policy = load_policy(args.workdir)
  sampling = SamplingConfig(temperature=0.8, max_new_tokens=cfg.label.max_new_tokens)
  width = pad_prompts([e["prompt_ids"] for e in examples], task.vocab.pad_id)[0].shape[1]
  solutions, _, _ = labelling.sample_solutions(
      task, policy, examples, list(range(len(examples))), args.solutions, sampling,
      jax.random.key(0), args.rows_per_batch)
  rollouts = sum((len(s.step_ends) - 1) * args.rollouts for s in solutions)
  print(f"devices: {jax.devices()}; policy {policy.cfg.num_params:,} params; "
        f"{len(solutions)} solutions, {rollouts:,} rollouts")

  def run(share):
    batch = copy.deepcopy(solutions)
    labelling.label(task, policy, examples, batch, args.rollouts, sampling, jax.random.key(1),
                    args.rows_per_batch, width, share_prefixes=share)
    times = []
    for _ in range(args.repeats):
      batch, work = copy.deepcopy(solutions), Work()
      start = time.perf_counter()
      tokens = labelling.label(task, policy, examples, batch, args.rollouts, sampling,
                               jax.random.key(1), args.rows_per_batch, width,
                               share_prefixes=share, work=work)
      times.append(time.perf_counter() - start)
    return min(times), tokens, batch, work

  shared_s, tokens, shared, work = run(True)
  own_s, _, own, _ = run(False)
  same = np.mean([a.labels == b.labels for a, b in zip(shared, own)])
  print(f"{'':30s}{'wall s':>10s}{'rollouts/s':>12s}{'tokens/s':>12s}")
  print(f"{'shared prefix caches':30s}{shared_s:10.2f}{rollouts / shared_s:12.0f}"
        f"{tokens / shared_s:12.0f}")
  print(f"{'each rollout re-prefilled':30s}{own_s:10.2f}{rollouts / own_s:12.0f}"
        f"{tokens / own_s:12.0f}")
  print(f"speed-up: {own_s / shared_s:.2f}x (target >= 3x); solutions with identical labels: "
        f"{same:.3f}")
  print(f"live row-tokens: {work.live_fraction:.3f} of the {work.row_tokens:,} the rollouts' "
        "decoding computed")


if __name__ == "__main__":
  main()
