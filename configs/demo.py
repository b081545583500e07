"""The embedded default experiment: a generated task and tiny models, minutes on 2 CPU cores.

  tts run configs/demo.py --workdir runs/demo
  tts run configs/demo.py --workdir runs/demo --config.policy.small.steps=200  # any field
"""
import ml_collections

from tts.config_schema import all_fields
from tts.model.config import ModelConfig
from tts.scaling.config import DifficultyConfig, FlopsConfig, ReportConfig, SelectConfig
from tts.search.methods import MethodConfig
from tts.search.verifier import VerifierConfig
from tts.train.config import TrainConfig

# Logical parameter axes -> mesh axes (t5x/MaxText convention). `batch` shards data rows.
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("norm", None),
)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Left-to-right arithmetic chains mod a prime; difficulty = number of operations.
  c.task = dict(kind="chain", modulus=13, min_ops=1, max_ops=16,
                num_train=20_000, num_val=256, num_test=500, seed=0)
  # Training rows of max_len tokens; pack=True puts several examples in a row (no padding
  # waste), so batch_size counts rows, not examples. attend_across_examples: each example in
  # a packed row sees those before it, as in pretraining on concatenated documents (the
  # policy then solves a question with anything before it, tts/train/packing.py).
  c.data = dict(source="seqio", max_len=136, pack=True, attend_across_examples=False)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  # Test-time stages decode on each host's own devices with this mesh (hosts split the
  # questions): rows over data x fsdp, KV heads over tensor. Not part of any stage's
  # fingerprint: results agree across meshes up to float rounding (tests/test_search_hosts.py).
  c.decode_mesh = dict(data=-1, fsdp=1, tensor=1)
  c.logical_axis_rules = LOGICAL_AXIS_RULES
  # XLA's persistent compilation cache (tts/compile_cache.py): relative to the workdir, or an
  # absolute path / bucket shared by several runs; "" turns it off. In no fingerprint.
  c.compilation_cache = "compilation_cache"
  # The small policy and a model with 14x (+-1x) its parameters, trained on the same tokens.
  # vocab_size comes from the task, dropout from the training section.
  model = lambda **kw: all_fields(ModelConfig, exclude=("vocab_size", "dropout"), **kw)
  c.models = dict(
      small=model(num_layers=2, d_model=48, num_heads=4, num_kv_heads=2, d_ff=128),
      large=model(num_layers=3, d_model=144, num_heads=6, num_kv_heads=2, d_ff=416),
  )
  # Same data, steps and batches for both; only the learning rate differs. At 500 steps the
  # small model has learned part of the mod-13 arithmetic and loses its way in long chains
  # (errors differ per question: room for test-time compute); the large one learns more.
  # decay_all_params: these tiny models were calibrated with weight decay on every parameter;
  # with norms and embeddings left out (the library default) the small policy ends at val
  # loss 0.080 instead of 0.040 and pass@1 0.32 instead of 0.57 (measured 2026-11-26).
  train = dict(steps=500, batch_size=32, warmup_steps=50, weight_decay=0.01, clip_norm=1.0,
               eval_every=250, checkpoint_every=250, log_every=20, decay_all_params=True)
  c.policy = dict(small=all_fields(TrainConfig, lr=1e-2, **train),
                  large=all_fields(TrainConfig, lr=3e-3, **train))
  # Sampling temperature 0.7 for pass@1, as search will sample (search-and-learn uses 0.8).
  c.policy_eval = dict(num_questions=100, samples=8, temperature=0.7, max_new_tokens=136,
                       batch_size=256)
  # Monte-Carlo step labels (paper: 16 solutions per question, 16 rollouts per step prefix;
  # here fewer, so the stage takes a couple of minutes on 2 cores).
  c.label = dict(num_questions=256, solutions=4, rollouts=4, temperature=0.8,
                 max_new_tokens=136, questions_per_shard=32, rows_per_batch=1024, seed=0)
  # PRM and ORM: the small policy plus a value head. Paper: lr 3e-5, batch 128, dropout
  # 0.05, betas (0.9, 0.95), early stopping on 10% held-out questions. A 52k-parameter model
  # from scratch-level weights needs a larger step; patience counts evaluations.
  # base: the policy model they start from (small: the policy's size, as the paper; large:
  # a verifier 14x the policy, whose reading the search's FLOPs then count).
  c.verifiers = dict(base="small", heldout_fraction=0.1, seed=0)
  verifier = dict(steps=600, batch_size=64, lr=2e-3, warmup_steps=30, dropout=0.05, b1=0.9,
                  b2=0.95, eval_every=50, eval_batches=8, checkpoint_every=100, log_every=25,
                  keep_best=True, patience=4, decay_all_params=True)
  c.prm = all_fields(TrainConfig, **verifier)
  c.orm = all_fields(TrainConfig, **verifier)
  c.search = search_section()
  revision_sections(c, verifier)
  # Compute-optimal scaling. Difficulty from K = 32 samples per search question (paper:
  # 2048), 5 quantile bins; selection by 2-fold cross-validation against best-of-N weighted;
  # FLOPs-matched comparison with the 14x model at the paper's three R; 95% intervals from
  # 1000 paired bootstrap resamples of the questions (select.resamples).
  c.difficulty = all_fields(DifficultyConfig, samples=32, num_bins=5, temperature=0.8,
                            max_new_tokens=136, batch_size=640)
  c.select = all_fields(SelectConfig)
  c.flops = all_fields(FlopsConfig)
  c.report = all_fields(ReportConfig)
  return c


def revision_sections(c: ml_collections.ConfigDict, verifier: dict):
  """The revision model (docs/paper.md): trajectories of the policy's own answers, SFT from the
  policy, a revision-aware ORM, and chains at every budget split. Paper: 64 samples per
  question, lr 1e-5, batch 128, dropout 0; here 16 samples and a larger step for a
  52k-parameter model (300 steps: val loss 0.46 at lr 3e-3, 0.54 at 1e-3). The checkpoint
  is the evaluation after the lowest val loss. It does not learn to revise: the policy it
  starts from cannot solve a question with anything before it (README, configs/reproduce.py)."""
  c.revision_data = dict(num_questions=512, samples=16, temperature=1.0, max_new_tokens=136,
                         max_in_context=4, heldout_fraction=0.1, rows_per_batch=512, seed=0)
  c.revision = all_fields(TrainConfig, steps=300, batch_size=16, lr=3e-3, warmup_steps=20,
                          eval_every=25, eval_batches=8, checkpoint_every=50, log_every=25,
                          keep_best=True, evals_after_best=1, patience=3,
                          decay_all_params=True)
  # Chains: each answer sees the last `window` answers of its chain (paper: 4).
  c.revision_sampling = dict(window=4, temperature=0.8, max_new_tokens=136, rows_per_batch=256)
  # The revision ORM learns from chains on train questions the revision model never saw.
  c.revision_orm_data = dict(num_questions=64, chains=4, chain_length=4, seed=1)
  # Its rows hold up to 4 earlier answers (~550 tokens): 16 rows a step, not the ORM's 64.
  c.revision_orm = all_fields(TrainConfig, **dict(verifier, batch_size=16, steps=200,
                                                  eval_every=25, checkpoint_every=50))
  # On the search stage's test questions, budgets up to 8 (every answer re-reads its history:
  # N = 16 doubles the stage's time). full_chains: chains that run to the largest budget
  # (pass@1 per revision step is read off them).
  c.revision_search = dict(budgets=(1, 2, 4, 8), full_chains=2, seed=0)


def search_section(process_verifier: str = "lm") -> dict:
  """The `search` stage: methods x budgets on test questions, each method scored by one of
  `verifiers` (paths in the workdir). Beam widths: M = sqrt(N) (beam_width=0) and M = 4, as
  the paper sweeps; lookahead k = 1 with sqrt(N), k = 3 with M = 4.

  The paper's menu is scored by `lm`, a likelihood verifier: the 14x model's probability of
  the least likely token so far (FLOPs count its size). At these sizes a value head trained
  on Monte-Carlo labels does not learn to check a step (README: within-question AUROC about
  0.5 for every PRM and ORM tried), while the 14x model's probabilities rank a question's
  right answers above its wrong ones with AUROC 0.86. The trained PRM and ORM still score
  best-of-N up to 16, beside it (extended menu, and the verifier checks).
  process_verifier: the verifier of the paper's menu (configs/math_hf.py: an imported PRM)."""
  method = lambda verifier=process_verifier, **kw: all_fields(MethodConfig, verifier=verifier,
                                                              **kw)
  trained = {f"best_of_n_{v}": method(kind="best_of_n", verifier=v) for v in ("prm", "orm")
             if v != process_verifier}
  return dict(
      verifiers=dict(lm=all_fields(VerifierConfig, path="policy/large/final", kind="likelihood",
                                   likelihood_reading="min"),
                     prm=all_fields(VerifierConfig, path="prm/final", kind="prm"),
                     orm=all_fields(VerifierConfig, path="orm/final", kind="orm")),
      aggregation="last",  # PRM step scores -> solution score (the ORM always uses last)
      num_questions=100, budgets=(1, 2, 4, 8, 16), seed=0,
      # search-and-learn samples at 0.8; a step is at most max_step_tokens tokens.
      temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=136, max_step_tokens=16,
      rows_per_batch=1024,  # candidate rows decoded together (questions x N)
      methods=dict(
          # One best-of-N run at the largest N serves every smaller one: to 256, so the
          # FLOPs-matched comparison at small R stays inside the runs.
          best_of_n=method(kind="best_of_n", budgets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
          **trained,
          beam_sqrt=method(kind="beam", beam_width=0),
          beam4=method(kind="beam", beam_width=4),
          lookahead_sqrt_k1=method(kind="lookahead", beam_width=0, lookahead=1),
          lookahead4_k3=method(kind="lookahead", beam_width=4, lookahead=3),
          dvts4=method(kind="dvts", beam_width=4),
      ),
  )
