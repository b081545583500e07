"""Decode throughput: our jitted sampler against Hugging Face transformers `generate` on
the same exported weights, the same prompts, in the same run.

  python scripts/bench_decode.py [--models 2x64 4x192] [--batches 16 256] [--new_tokens 96]
      [--torch_device cuda]

For each model (LAYERSxD_MODEL, a Llama with 4 heads, 2 KV heads, d_ff = 8/3 d, byte
vocabulary): random weights -> `tts.interop.export_hf` -> transformers loads the directory
as LlamaForCausalLM, and we import the same directory. Both sample --new_tokens tokens per
row at temperature 1 without filtering (no row stops early), after one untimed warm-up
(compiles); timed runs alternate between the two and the best of --repeats is kept.
"matmul floor": the same number of decode steps running only the step's weight matmuls
(q, k, v, o, the MLP's three and the logits, same shapes, no attention, sampling or cache)
in one jitted loop: no decoder of this model, ours or another, runs faster on this
machine with XLA's matmuls, so it says what a ratio can reach here.
transformers runs in its own process with --threads torch threads, on --torch_device (on a
GPU machine name cuda: JAX takes the GPU by default). Greedy decoding of both is compared
first, as a check that they run the same model.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.data.vocab import ByteVocabulary
from tts.interop.hf_export import export_hf
from tts.interop.hf_import import load_hf_model
from tts.model import LoadedModel, ModelConfig, Transformer
from tts.search.sampler import SamplingConfig, sample


GREEDY_TOKENS = 16


def model_config(spec: str) -> ModelConfig:
  layers, d = (int(x) for x in spec.split("x"))
  return ModelConfig(vocab_size=ByteVocabulary.vocab_size, num_layers=layers, d_model=d,
                     num_heads=4, num_kv_heads=2, d_ff=8 * d // 3 // 8 * 8, tie_embeddings=True)


def elapsed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def transformers_worker(directory: str, args):
  """A separate process that never starts JAX (in one process, JAX's CPU threads and
  torch's compete for the cores). Reads commands from stdin, answers one JSON line each:
  "greedy" -> the greedy tokens; "time" -> seconds of one sampled generate."""
  import torch
  import transformers
  torch.set_num_threads(args.threads)
  device = torch.device(args.torch_device)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval().to(device)
  prompts = torch.tensor(np.load(os.path.join(directory, "prompts.npy")), dtype=torch.long,
                         device=device)

  def generate(new_tokens, greedy):
    with torch.no_grad():
      out = model.generate(prompts, attention_mask=torch.ones_like(prompts),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=not greedy, temperature=1.0, top_k=0, top_p=1.0,
                           pad_token_id=0, eos_token_id=None)
    if device.type == "cuda":
      torch.cuda.synchronize()
    return out[:, prompts.shape[1]:].cpu().numpy()

  for command in sys.stdin:
    if command.strip() == "greedy":
      answer = {"greedy": generate(GREEDY_TOKENS, True).tolist()}
    else:
      answer = {"seconds": elapsed(lambda: generate(args.new_tokens, False)),
                "threads": torch.get_num_threads()}
    print(json.dumps(answer), flush=True)


def matmul_floor(cfg: ModelConfig, batch: int, steps: int, repeats: int) -> float:
  """Seconds of `steps` decode steps' weight matmuls alone (best of `repeats`)."""
  d, dh = cfg.d_model, cfg.head_dim
  shapes = [(d, cfg.num_heads * dh), (d, cfg.num_kv_heads * dh), (d, cfg.num_kv_heads * dh),
            (cfg.num_heads * dh, d), (d, cfg.d_ff), (d, cfg.d_ff), (cfg.d_ff, d)]
  key = jax.random.key(0)
  layers = [[jax.random.normal(jax.random.fold_in(key, 8 * i + j), s) * s[0] ** -0.5
             for j, s in enumerate(shapes)] for i in range(cfg.num_layers)]
  head = jax.random.normal(jax.random.fold_in(key, 8 * cfg.num_layers),
                           (d, cfg.vocab_size)) * d ** -0.5

  def step(x, layers, head):
    for q, k, v, o, gate, up, down in layers:
      attn = x @ q  # k and v are computed (as they would be cached) and folded in below
      x = x + (attn + jnp.mean(x @ k) + jnp.mean(x @ v)) @ o
      x = x + (jax.nn.silu(x @ gate) * (x @ up)) @ down
    return x + jnp.mean(x @ head)

  run = jax.jit(lambda x, layers, head: jax.lax.fori_loop(
      0, steps, lambda _, x: step(x, layers, head), x))
  x = jnp.ones((batch, d))
  jax.block_until_ready(run(x, layers, head))
  return min(elapsed(lambda: jax.block_until_ready(run(x, layers, head)))
             for _ in range(repeats))


def bench(spec: str, batch: int, args) -> tuple[int, float, float, float]:
  """Ours and transformers alternate, run after run, so a change in the machine's load
  (it is shared) hits both; each keeps its fastest run."""
  cfg = model_config(spec)
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, cfg.vocab_size, (batch, args.prompt_len)).astype(np.int32)
  lengths = np.full((batch,), args.prompt_len, np.int32)
  keys = jax.random.split(jax.random.key(0), batch)
  with tempfile.TemporaryDirectory() as tmp:
    directory = os.path.join(tmp, "hf")
    random = Transformer(cfg, nnx.Rngs(0))
    export_hf(LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(random))), ByteVocabulary(),
              directory)
    np.save(os.path.join(directory, "prompts.npy"), prompts)
    ours = load_hf_model(directory)  # the exported weights, read back
    worker = subprocess.Popen(
        [sys.executable, __file__, "--transformers_worker", directory, "--threads",
         str(args.threads), "--torch_device", args.torch_device, "--new_tokens",
         str(args.new_tokens)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ask(command):
      worker.stdin.write(command + "\n")
      worker.stdin.flush()
      return json.loads(worker.stdout.readline())

    def run_ours(new_tokens, temperature):
      out = sample(ours.graphdef, ours.params, prompts, lengths, keys,
                   SamplingConfig(temperature=temperature, max_new_tokens=new_tokens), ())
      return np.asarray(jax.block_until_ready(out.tokens))

    same = np.mean(np.all(run_ours(GREEDY_TOKENS, 0.0) == np.asarray(ask("greedy")["greedy"]),
                          axis=1))
    run_ours(args.new_tokens, 1.0)  # warm-ups: our compile, torch's first allocations
    ask("time")
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
      t_ours.append(elapsed(lambda: run_ours(args.new_tokens, 1.0)))
      t_theirs.append(ask("time")["seconds"])
    worker.stdin.close()
    worker.wait()
  return cfg.num_params, min(t_ours), min(t_theirs), same


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=["2x64", "4x192"],
                      help="LAYERSxD_MODEL per model")
  parser.add_argument("--batches", type=int, nargs="+", default=[16, 256])
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=96)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=2, help="torch threads")
  parser.add_argument("--torch_device", default="cpu", help="where transformers runs: cpu, cuda")
  parser.add_argument("--transformers_worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.transformers_worker:
    return transformers_worker(args.transformers_worker, args)
  print(f"ours on {jax.devices()}, transformers on {args.torch_device}; prompt "
        f"{args.prompt_len}, {args.new_tokens} new tokens, sampling at temperature 1")
  print(f"{'model':>8s}{'params':>12s}{'batch':>7s}{'ours tok/s':>12s}{'HF tok/s':>12s}"
        f"{'ratio':>8s}{'floor tok/s':>13s}{'ratio at floor':>16s}{'greedy same':>13s}")
  for spec in args.models:
    for batch in args.batches:
      params, t_ours, t_theirs, same = bench(spec, batch, args)
      t_floor = matmul_floor(model_config(spec), batch, args.new_tokens, args.repeats)
      tokens = batch * args.new_tokens
      print(f"{spec:>8s}{params:12,d}{batch:7d}{tokens / t_ours:12.0f}"
            f"{tokens / t_theirs:12.0f}{t_theirs / t_ours:7.1f}x{tokens / t_floor:13.0f}"
            f"{t_theirs / t_floor:15.1f}x{same:13.2f}", flush=True)
  print(f"ratio = transformers generate time (torch {args.threads} threads, own process) "
        f"/ ours (the target: 5x); floor = the decode steps' weight matmuls alone, and "
        f"ratio at floor the most any decoder could reach here; greedy same = fraction of "
        f"rows whose first {GREEDY_TOKENS} greedy tokens agree")


if __name__ == "__main__":
  main()
