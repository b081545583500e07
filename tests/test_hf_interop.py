"""Hugging Face interop: our logits equal transformers' on the same weights, in both
directions; export -> import gives back the same bits; broken checkpoints name the tensor.

Nothing else catches a wrong weight layout (a transposed projection, mixed-up rotary
pairs, a missing bias): every other test trains and reads our own checkpoints.
"""
import dataclasses
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

import hf_models  # noqa: E402
from tts import cli  # noqa: E402
from tts.data.chain import chain_vocabulary  # noqa: E402
from tts.data.hf_tokenizer import HFTokenizer, export_tokenizer  # noqa: E402
from tts.data.tasks import task_config  # noqa: E402
from tts.data.vocab import NEWLINE, ByteVocabulary, step_end_ids  # noqa: E402
from tts.interop.hf_export import export_hf  # noqa: E402
from tts.interop.hf_import import load_hf_model  # noqa: E402
from tts.interop.hf_layout import TensorMap  # noqa: E402
from tts.model import LoadedModel, ModelConfig, Transformer  # noqa: E402
from tts.train.checkpoints import CheckpointMismatchError, load_model, save_params  # noqa: E402

# float32 on both sides; measured max |difference| ~3e-6 on logits of size ~4. A wrong
# layout (transposed q, unrotated pairs, a dropped bias) moves them by more than 0.1.
LOGIT_ATOL = 1e-4
TEXTS = ["Problem: What is 3 + 4?\nSolution:\n3 + 4 = 7\n\\boxed{7}\n",
         "Problem: Simplify $\\frac{6}{8}$.\nSolution:\nDivide by 2.\n\\boxed{\\frac{3}{4}}\n"]


def _logits(model: LoadedModel, tokens: np.ndarray) -> np.ndarray:
  return np.asarray(nnx.merge(model.graphdef, model.params)(tokens).logits)


def _torch_logits(hf_model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return hf_model(torch.tensor(tokens)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, 320, (2, 12))


@pytest.mark.slow
@pytest.mark.parametrize("kind,tie,theta", [("llama", False, 10_000.0), ("qwen2", True, 1e6)])
def test_import_matches_transformers(tmp_path, kind, tie, theta):
  hf_model = hf_models.save_tiny_model(str(tmp_path), kind, tie=tie, rope_theta=theta)
  ours = load_hf_model(str(tmp_path))
  assert ours.cfg.attention_bias == (kind == "qwen2") and ours.cfg.tie_embeddings == tie
  assert ours.cfg.rope_theta == theta
  expected = _torch_logits(hf_model, TOKENS)
  np.testing.assert_allclose(_logits(ours, TOKENS), expected, atol=LOGIT_ATOL, rtol=0)


def _random_model(seed=0, **overrides) -> LoadedModel:
  fields = dict(vocab_size=ByteVocabulary.vocab_size, num_layers=2, d_model=32, num_heads=4,
                num_kv_heads=2, d_ff=48, rope_theta=500.0)
  cfg = ModelConfig(**{**fields, **overrides})
  model = Transformer(cfg, nnx.Rngs(seed))
  params = nnx.to_pure_dict(nnx.state(model))
  # Non-trivial norm scales, biases and value head, so each is checked.
  keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), params)
  return LoadedModel.create(cfg, params)


def load_export(directory: str, architecture: str):
  """An exported directory loaded by transformers as serving would: the architecture
  config.json names, and every weight it expects present (a missing one would be left
  randomly initialised), none extra. float32, so logits compare with ours."""
  hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
      directory, output_loading_info=True, dtype=torch.float32)
  assert type(hf_model).__name__ == architecture
  assert {k: v for k, v in info.items() if v} == {}, info
  return hf_model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("tie,bias,dtype,architecture", [
    (True, False, "float32", "LlamaForCausalLM"),
    (False, True, "float32", "Qwen2ForCausalLM"),  # q/k/v biases, no o_proj bias
    (False, True, "bfloat16", "Qwen2ForCausalLM")])
def test_export_loads_in_transformers_with_same_logits(tmp_path, tie, bias, dtype, architecture):
  ours = _random_model(tie_embeddings=tie, attention_bias=bias)
  export_hf(ours, ByteVocabulary(), str(tmp_path / "hf"), dtype=dtype)
  hf_model = load_export(str(tmp_path / "hf"), architecture)
  if dtype == "bfloat16":  # the exported weights are ours rounded to bfloat16
    ours = LoadedModel.create(ours.cfg, jax.tree.map(
        lambda x: x.astype(jax.numpy.bfloat16).astype(x.dtype), ours.params))
  tokens = TOKENS % ours.cfg.vocab_size
  np.testing.assert_allclose(_torch_logits(hf_model, tokens), _logits(ours, tokens),
                             atol=LOGIT_ATOL, rtol=0)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  ids = tokenizer(TEXTS[0], add_special_tokens=False).input_ids
  assert ids == ByteVocabulary().encode(TEXTS[0])
  assert tokenizer.eos_token_id == ByteVocabulary.eos_id
  generation = transformers.GenerationConfig.from_pretrained(str(tmp_path / "hf"))
  assert (generation.eos_token_id, generation.pad_token_id) == (ByteVocabulary.eos_id,
                                                                ByteVocabulary.pad_id)
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["max_position_embeddings"] == 4096 and config["dtype"] == dtype


def test_export_shards_past_the_size_limit(tmp_path):
  """Past max_shard_bytes the weights go to several files and an index; transformers
  and our import read them back whole."""
  ours = _random_model(value_head=True, attention_bias=True, tie_embeddings=False)
  largest = max(v.nbytes for v in jax.tree.leaves(ours.params))
  export_hf(ours, ByteVocabulary(), str(tmp_path / "hf"), max_shard_bytes=largest)
  index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and not (tmp_path / "hf" / "model.safetensors").exists()
  assert sorted(p.name for p in (tmp_path / "hf").glob("model-*.safetensors")) == files
  hf_model = load_export(str(tmp_path / "hf"), "Qwen2ForCausalLM")
  tokens = TOKENS % ours.cfg.vocab_size
  np.testing.assert_allclose(_torch_logits(hf_model, tokens), _logits(ours, tokens),
                             atol=LOGIT_ATOL, rtol=0)
  again = load_hf_model(str(tmp_path / "hf"))
  np.testing.assert_array_equal(again.params["blocks"][1]["mlp"]["down"],
                                ours.params["blocks"][1]["mlp"]["down"])


def test_orbax_to_hf_to_import_round_trips_exactly(tmp_path):
  """A verifier (value head) saved by the trainer's save_params, exported, imported."""
  ours = _random_model(value_head=True, attention_bias=True, tie_embeddings=False)
  save_params(str(tmp_path / "orbax"), ours.params, ours.cfg)
  restored = load_model(str(tmp_path / "orbax"))
  export_hf(restored, chain_vocabulary(13), str(tmp_path / "hf"), max_positions=256)
  assert os.path.exists(tmp_path / "hf" / "value_head.safetensors")
  load_export(str(tmp_path / "hf"), "Qwen2ForCausalLM")  # the value head file is ignored
  again = load_hf_model(str(tmp_path / "hf"))
  assert again.cfg == dataclasses.replace(ours.cfg, max_positions=256)
  flat = lambda p: {jax.tree_util.keystr(k): np.asarray(v)
                    for k, v in jax.tree_util.tree_flatten_with_path(p)[0]}
  expected, got = flat(ours.params), flat(again.params)
  assert got.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_imported_model_keeps_its_tokenizer_and_exports_without_config(tmp_path):
  """`tts import` keeps tokenizer and generation files beside the weights, so `tts export`
  needs no task config, and the export keeps the checkpoint's position limit."""
  source = tmp_path / "qwen"
  hf_models.save_tiny_model(str(source), "qwen2", tie=True)
  hf_models.save_bpe_tokenizer(str(source), TEXTS)
  assert cli.main(["import", str(source), "--out", str(tmp_path / "ours")]) is None
  for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
    assert (tmp_path / "ours" / name).read_bytes() == (source / name).read_bytes()
  assert cli.main(["export", "--model", str(tmp_path / "ours"), "--out",
                   str(tmp_path / "hf"), "--dtype", "bfloat16"]) is None
  load_export(str(tmp_path / "hf"), "Qwen2ForCausalLM")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["max_position_embeddings"] == 512 and config["dtype"] == "bfloat16"
  exported = (tmp_path / "hf" / "tokenizer.json").read_bytes()
  assert exported == (source / "tokenizer.json").read_bytes()
  generation = transformers.GenerationConfig.from_pretrained(str(tmp_path / "hf"))
  assert generation.eos_token_id == HFTokenizer(str(source)).eos_id


def test_export_of_a_trained_model_takes_the_runs_config(tmp_path, capsys):
  """A trained model's tokenizer comes from its task: from the config named on the command
  line, else from the run's saved config.json, else the error says what to pass."""
  ours = _random_model()
  save_params(str(tmp_path / "run" / "policy"), ours.params, ours.cfg)
  argv = ["export", "--workdir", str(tmp_path / "run"), "--model", "policy", "--out",
          str(tmp_path / "hf")]
  with pytest.raises(SystemExit):
    cli.main(argv)
  assert "pass the experiment's config" in capsys.readouterr().err
  assert not (tmp_path / "hf").exists()
  task = {"task": task_config("chain", modulus=13).to_dict()}
  (tmp_path / "run" / "config.json").write_text(json.dumps(task))
  cli.main(argv)
  assert HFTokenizer(str(tmp_path / "hf")).encode("3 + 4 = 7\n") == chain_vocabulary(13).encode(
      "3 + 4 = 7\n")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tiny_llama"))
  hf_models.save_tiny_model(directory, "llama")
  return directory


def _broken_copy(tiny_llama, tmp_path, edit):
  import shutil
  shutil.copytree(tiny_llama, tmp_path, dirs_exist_ok=True)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  edit(tensors)
  save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  return str(tmp_path)


def test_missing_tensor_is_named(tiny_llama, tmp_path):
  name = "model.layers.1.mlp.up_proj.weight"
  broken = _broken_copy(tiny_llama, tmp_path, lambda t: t.pop(name))
  with pytest.raises(CheckpointMismatchError, match=f"tensor {name} is missing"):
    load_hf_model(broken)


def test_misshaped_tensor_is_named(tiny_llama, tmp_path):
  name = "model.layers.0.self_attn.k_proj.weight"
  broken = _broken_copy(tiny_llama, tmp_path,
                        lambda t: t.update({name: np.ascontiguousarray(t[name][:8])}))
  with pytest.raises(CheckpointMismatchError, match=rf"tensor {name} has shape \(8, 32\)"):
    load_hf_model(broken)


def test_sharded_read_takes_only_the_needed_rows():
  """What each device's callback reads: the block of our tensor, from only its heads' rows."""
  heads, head_dim, d = 4, 6, 5
  m = TensorMap(("q",), "q_proj.weight", ((heads, head_dim), (d,)), (2, 0, 1))
  hf = np.random.default_rng(0).normal(size=m.hf_shape)
  requested = []
  def read_rows(index):
    requested.append(index)
    return hf[index]
  index = (slice(1, 4), slice(2, 4), slice(None))  # d rows 1-3, heads 2-3, all of head_dim
  np.testing.assert_array_equal(m.read(read_rows, index), m.to_ours(hf)[index])
  assert requested == [(slice(2 * head_dim, 4 * head_dim), slice(1, 4))]
  np.testing.assert_array_equal(m.to_hf(m.to_ours(hf)), hf)


def test_prm_import_scores_steps_like_the_causal_lm(tiny_llama, tmp_path):
  """Math-Shepherd convention: score = softmax over (good, bad) next-token logits."""
  good, bad = 7, 11
  prm = load_hf_model(tiny_llama, prm_token_ids=(good, bad))
  out = nnx.merge(prm.graphdef, prm.params)(TOKENS)
  logits = np.asarray(out.logits)
  pair = np.stack([logits[..., good], logits[..., bad]], -1)
  expected = np.exp(pair[..., 0]) / np.exp(pair).sum(-1)
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(out.values)), expected, atol=1e-5)


def test_causal_lm_read_as_a_likelihood_verifier_gives_transformers_probabilities(tiny_llama):
  """A Hugging Face causal LM with no value head, loaded as a likelihood verifier and fed a
  prompt then two pieces of solution, reads the geometric mean of the probabilities
  transformers gives the solution's tokens."""
  from tts.search import verifier
  from tts.stages.search import load_verifier
  lm = load_verifier("", tiny_llama, "search.verifiers.lm.path", kind="likelihood")
  prompt, first, second = TOKENS[:, :5], TOKENS[:, 5:9], TOKENS[:, 9:]
  lengths = lambda x: np.full(len(x), x.shape[1], np.int32)
  scored = verifier.score_prompts(lm.graphdef, lm.params, prompt, lengths(prompt), 16, None,
                                  "mean")
  scored = verifier.score_tokens(lm.graphdef, lm.params, scored.state, first, lengths(first),
                                 None, "mean")
  scored = verifier.score_tokens(lm.graphdef, lm.params, scored.state, second, lengths(second),
                                 None, "mean")
  hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
  log_probs = jax.nn.log_softmax(_torch_logits(hf, TOKENS)[:, 4:-1])
  read = np.take_along_axis(np.asarray(log_probs), TOKENS[:, 5:, None], -1)[..., 0]
  running_mean = np.cumsum(read, -1) / np.arange(1, read.shape[1] + 1)
  np.testing.assert_allclose(scored.probs, np.exp(running_mean[:, first.shape[1]:]), rtol=1e-4)


def test_tokenizer_round_trip(tmp_path):
  """A trained byte-level BPE through HFTokenizer: the same ids as transformers, text back
  unchanged, newline-bearing tokens as step ends; our vocabularies exported keep their ids."""
  corpus = TEXTS * 20 + ["Steps apart:\n\n"] * 40  # so that "\n\n" is one token
  directory = hf_models.save_bpe_tokenizer(str(tmp_path / "bpe"), corpus, vocab_size=300)
  tok = HFTokenizer(directory)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  for text in TEXTS + ["unseen words: ∑ é\n\n"]:
    ids = tok.encode(text)
    assert ids == reference(text, add_special_tokens=False).input_ids
    assert tok.decode(ids + [tok.eos_id, tok.pad_id]) == text
  newline_tokens = {i for i in range(tok.vocab_size) if "\n" in reference.decode([i])}
  assert step_end_ids(tok, NEWLINE) == newline_tokens and len(newline_tokens) > 1
  for vocab, text in [(chain_vocabulary(13), "Q: 3 + 5\n3 + 5 = 8\nA: 8"),
                      (ByteVocabulary(), TEXTS[1])]:
    export_tokenizer(vocab, str(tmp_path / repr(vocab)))
    with open(tmp_path / repr(vocab) / "config.json", "w") as f:
      json.dump({"eos_token_id": vocab.eos_id}, f)
    exported = HFTokenizer(str(tmp_path / repr(vocab)))
    assert exported.encode(text) == vocab.encode(text)
    assert exported.decode(vocab.encode(text)) == vocab.decode(vocab.encode(text)) == text
    assert step_end_ids(exported, NEWLINE) == step_end_ids(vocab, NEWLINE)


SHARDED_LOAD = """
import numpy as np, jax, importlib.util, sys
from flax import nnx
from tts.interop import hf_import
from tts.model.sharding import make_mesh
spec = importlib.util.spec_from_file_location("demo", sys.argv[2])
demo = importlib.util.module_from_spec(spec); spec.loader.exec_module(demo)
reads = []
original = hf_import.SafetensorFiles.read
def recording(self, name, index=(), dtype=np.float32):
  out = original(self, name, index, dtype)
  reads.append((name, out.shape))
  return out
hf_import.SafetensorFiles.read = recording
mesh = make_mesh(dict(data=1, fsdp=2, tensor=2))
sharded = hf_import.load_hf_model(sys.argv[1], mesh, demo.LOGICAL_AXIS_RULES)
q = sharded.params["blocks"][0]["attn"]["q"]
assert len(jax.devices()) == 4
assert tuple(q.sharding.spec) == ("fsdp", "tensor", None), q.sharding.spec
assert {s for n, s in reads if n.endswith("layers.0.self_attn.q_proj.weight")} == {(16, 16)}
single = hf_import.load_hf_model(sys.argv[1])
tokens = np.arange(24).reshape(2, 12) % 300
run = lambda m: np.asarray(jax.jit(lambda p: nnx.merge(m.graphdef, p)(tokens).logits)(m.params))
stacked = hf_import.load_hf_model(sys.argv[1], mesh, demo.LOGICAL_AXIS_RULES,
                                  precision={"scan_layers": True})
assert tuple(stacked.params["blocks"]["attn"]["q"].sharding.spec) == (None, "fsdp", "tensor", None)
print("max_diff", max(np.abs(run(sharded) - run(single)).max(),
                      np.abs(run(stacked) - run(single)).max()))
"""


@pytest.mark.slow
def test_sharded_import_reads_each_devices_slice(tiny_llama):
  """On 4 forced host devices (fsdp=2 x tensor=2) every device's callback reads a quarter of
  q_proj (its half of the heads, its half of d_model), and the sharded model computes the
  same logits as one loaded on a single device; so does one imported with its layers
  stacked (scan_layers), each device reading its block of every layer."""
  import subprocess
  import sys
  demo = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")
  root = os.path.join(os.path.dirname(__file__), "..")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=os.path.abspath(root))
  out = subprocess.run([sys.executable, "-c", SHARDED_LOAD, tiny_llama, demo], env=env,
                       capture_output=True, text=True, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  diff = float(out.stdout.split("max_diff")[-1])
  assert diff < 1e-5


def test_import_with_stacked_layers_is_the_unrolled_import_stacked(tiny_llama):
  """A config section with scan_layers imports into the stacked layout: every weight equal
  to the unrolled import's, layer by layer (a layer read twice or out of order differs)."""
  from tts.model import layer_layout
  unrolled = load_hf_model(tiny_llama)
  stacked = load_hf_model(tiny_llama, precision={"scan_layers": True, "remat": "full"},
                          field="models.small")
  assert (stacked.cfg.scan_layers, stacked.cfg.remat) == (True, "full")
  jax.tree.map(np.testing.assert_array_equal, stacked.params,
               layer_layout.convert(unrolled.params, True))


def test_bfloat16_checkpoint_stays_bfloat16_unless_the_config_widens_it(tiny_llama, tmp_path):
  """Most published checkpoints are bfloat16, which numpy cannot hold: the import keeps it
  bfloat16 (weights, compute and cache: half of float32's memory) with the exact stored
  values, and widens it exactly when a config section asks for float32."""
  import shutil

  from safetensors.torch import load_file as load_torch
  from safetensors.torch import save_file as save_torch
  shutil.copytree(tiny_llama, tmp_path, dirs_exist_ok=True)
  path = str(tmp_path / "model.safetensors")
  tensors = {k: v.to(torch.bfloat16) for k, v in load_torch(path).items()}
  save_torch(tensors, path, metadata={"format": "pt"})
  expected = tensors["model.layers.1.mlp.down_proj.weight"].float().numpy().T
  kept = load_hf_model(str(tmp_path))
  assert {str(x.dtype) for x in jax.tree.leaves(kept.params)} == {"bfloat16"}
  assert (kept.cfg.param_dtype, kept.cfg.dtype, kept.cfg.kv_dtype) == ("bfloat16",) * 3
  np.testing.assert_array_equal(
      np.asarray(kept.params["blocks"][1]["mlp"]["down"], np.float32), expected)
  widened = load_hf_model(str(tmp_path), precision={"param_dtype": "float32", "dtype": ""},
                          field="policy.small")
  assert {str(x.dtype) for x in jax.tree.leaves(widened.params)} == {"float32"}
  assert (widened.cfg.dtype, widened.cfg.kv_dtype) == ("bfloat16", "bfloat16")
  np.testing.assert_array_equal(np.asarray(widened.params["blocks"][1]["mlp"]["down"]),
                                expected)
  with pytest.raises(ValueError, match=r"policy.small: model dtype='float64'"):
    load_hf_model(str(tmp_path), precision={"dtype": "float64"}, field="policy.small")
  assert load_hf_model(tiny_llama).cfg.param_dtype == "float32"  # a float32 checkpoint


def test_unexpected_tensor_is_named(tiny_llama, tmp_path):
  """A checkpoint with more layers than its config.json says must not load silently."""
  name = "model.layers.2.mlp.up_proj.weight"
  broken = _broken_copy(tiny_llama, tmp_path, lambda t: t.update(
      {name: t["model.layers.1.mlp.up_proj.weight"].copy()}))
  with pytest.raises(CheckpointMismatchError, match=f"tensor {name} is in the checkpoint"):
    load_hf_model(broken)


@pytest.mark.parametrize("change, needle", [
    (dict(model_type="mistral"), "model_type='mistral' is not supported"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling="),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(num_hidden_layers=None), "'num_hidden_layers' is missing"),
])
def test_unsupported_config_json_names_the_field(change, needle):
  """A config.json we would read wrongly (other RoPE, activation, architecture) is refused."""
  from tts.interop.hf_layout import model_config_from_hf
  base = dict(model_type="llama", vocab_size=64, num_hidden_layers=2, hidden_size=32,
              num_attention_heads=4, intermediate_size=64)
  config = {k: v for k, v in {**base, **change}.items() if v is not None}
  assert model_config_from_hf(base, "config.json").num_layers == 2
  with pytest.raises(ValueError, match=re.escape(needle)):
    model_config_from_hf(config, "config.json")
