"""The demo's experiment calibrated so that the paper's regime exists (issue 13): the small
policy's pass@1 spreads from easy to hopeless questions, and the 14x model is better but
far from saturated, so that test-time compute has room on both sides of the FLOPs-matched
comparison (finding 4).

  tts run configs/reproduce.py --workdir runs/reproduce

The demo's code path and stages (configs/demo.py); only the fields below differ. Figures in
the comments were measured on all 500 test questions (policy stage, 2 CPU cores); README.md
("configs/reproduce.py") gives the sweeps. Both models stop at a validation-loss target
rather than a step count, which lands seeds at the same competence: at seeds 0 and 1 (every
seed field, the task's questions too) the small policy's pass@1 is 0.60 and 0.60, the 14x
model's greedy accuracy 0.83 and 0.89 (with a 500-step stop instead, policy seeds 0 and 1:
0.56 / 0.13 and 0.70 / 0.94).
"""
import os

import ml_collections

from tts import cli


def get_config() -> ml_collections.ConfigDict:
  # Loaded by path, as `tts run` loads a config: configs/ is not a package on sys.path.
  c = cli.load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py"))
  # The task and the small policy stay the demo's. At mod 17 and 23 neither model learns the
  # tables in 500 steps (greedy small / 14x: 0.07 / 0.15 and 0.06 / 0.09). The 14x model:
  # the demo's (3 layers, d_model 144) learned the task whole in 500 steps (greedy 0.97);
  # the small model's depth (2 layers) 14x wider (700,832 parameters, 13.4x) learns it more
  # slowly, so a loss target can stop it part-way. At the targets below the small policy's
  # pass@1 by quintile of per-question pass@1 is 1.00, 0.94, 0.69, 0.34, 0.06 (seed 0) and
  # 1.00, 0.97, 0.73, 0.28, 0.02 (seed 1); the 14x model is ahead greedily by +0.15 [+0.10,
  # +0.20] and +0.23 [+0.19, +0.28] (paired, 500 questions).
  c.models.large.update(num_layers=2, d_model=176, num_heads=8, num_kv_heads=2, d_ff=512)
  # Both models stop at a validation loss, not a step count: accuracy jumps from ~0.1 to ~1
  # within a few hundred steps, at a step that depends on the seed, and is one function of
  # validation loss across seeds (README). Checked every 5 steps (every 25 overshoots: the
  # loss falls up to 3.6x between checks). Targets: small 0.03 (pass@1 0.60 at seeds 0 and
  # 1, stopped at steps 670 and 865), 14x 0.015 (greedy 0.83 and 0.89, steps 515 and 595).
  # `steps` spans the schedule and caps the run: with 1000, seed 1's small policy had not
  # jumped when the schedule ran out (val loss 0.24). The policy stage warns when a target
  # is not reached.
  for name, target in (("small", 0.03), ("large", 0.015)):
    c.policy[name].update(steps=2000, eval_every=5, stop_at_val_loss=target)
  # Policy accuracy on every test question (+-0.04 at 95% instead of +-0.1 on 100).
  c.policy_eval.num_questions = 500
  # Search, difficulty and revision search on all 500 test questions: 5 difficulty bins x 2
  # cross-validation folds of 50 (the demo's 100 leaves folds of 10, where choosing among 7
  # settings overfits). About 5x the demo's time for those three stages.
  c.search.num_questions = 500
  # The revision model: fine-tuned at the demo's lr 3e-3 its first answers fell to pass@1
  # 0.31 (the policy: 0.52 on the same 200 questions), at 1e-3 to 0.34 (README).
  c.revision.lr = 1e-3
  return c
