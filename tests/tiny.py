"""The demo config at toy scale: every stage runs in seconds (a helper for the tests)."""
import os

from tts import cli

DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")
TINY = [
    "--config.task.num_train=256", "--config.task.num_val=16", "--config.task.num_test=16",
    "--config.task.max_ops=3", "--config.data.source=python", "--config.data.max_len=40",
    "--config.models.small.d_model=16", "--config.models.small.d_ff=32",
    "--config.models.large.d_model=32", "--config.models.large.d_ff=64",
    "--config.models.large.num_layers=2", "--config.models.large.num_heads=4",
    "--config.policy.small.steps=60", "--config.policy.large.steps=3",
    "--config.policy.small.batch_size=8", "--config.policy.large.batch_size=8",
    "--config.policy.small.eval_every=30", "--config.policy.large.eval_every=3",
    "--config.policy.small.checkpoint_every=30",
    "--config.policy_eval.num_questions=10", "--config.policy_eval.samples=2",
    "--config.policy_eval.max_new_tokens=24", "--config.policy_eval.batch_size=8",
    "--config.label.num_questions=12", "--config.label.solutions=2",
    "--config.label.rollouts=2", "--config.label.max_new_tokens=24",
    "--config.label.questions_per_shard=4", "--config.label.rows_per_batch=32",
    "--config.prm.steps=6", "--config.prm.batch_size=8", "--config.prm.eval_every=2",
    "--config.prm.checkpoint_every=2", "--config.prm.warmup_steps=2",
    "--config.orm.steps=6", "--config.orm.batch_size=8", "--config.orm.eval_every=2",
    "--config.orm.checkpoint_every=2", "--config.orm.warmup_steps=2",
    "--config.search.num_questions=5", "--config.search.budgets=(1, 2, 4)",
    "--config.search.max_new_tokens=24", "--config.search.max_step_tokens=8",
    "--config.search.rows_per_batch=8",
    "--config.revision_data.num_questions=32", "--config.revision_data.samples=8",
    "--config.revision_data.max_new_tokens=24", "--config.revision_data.rows_per_batch=64",
    "--config.revision.steps=6", "--config.revision.batch_size=4",
    "--config.revision.eval_every=2", "--config.revision.checkpoint_every=2",
    "--config.revision.warmup_steps=2", "--config.revision.eval_batches=2",
    "--config.revision_sampling.max_new_tokens=24", "--config.revision_sampling.rows_per_batch=16",
    "--config.revision_orm_data.num_questions=6", "--config.revision_orm_data.chains=2",
    "--config.revision_orm_data.chain_length=2",
    "--config.revision_orm.steps=4", "--config.revision_orm.batch_size=8",
    "--config.revision_orm.eval_every=2", "--config.revision_orm.checkpoint_every=2",
    "--config.revision_orm.warmup_steps=2",
    "--config.revision_search.budgets=(1, 2, 4)",
    "--config.revision_search.full_chains=2",
    "--config.difficulty.samples=4", "--config.difficulty.num_bins=2",
    "--config.difficulty.max_new_tokens=24", "--config.difficulty.batch_size=16",
]


def config(*extra):
  return cli.apply_overrides(cli.load_config(DEMO), TINY + list(extra), DEMO)
