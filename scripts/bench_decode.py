"""Decode throughput: our jitted sampler against Hugging Face transformers `generate` on
the same exported weights, the same prompts, in the same run (CPU).

  python scripts/bench_decode.py [--models 2x64 4x192] [--batch 16] [--new_tokens 96]

For each model (LAYERSxD_MODEL, a Llama with 4 heads, 2 KV heads, d_ff = 8/3 d, byte
vocabulary): random weights -> `tts.interop.export_hf` -> transformers loads the directory
as LlamaForCausalLM, and we import the same directory. Both sample --new_tokens tokens per
row at temperature 1 without filtering (no row stops early), after one untimed warm-up
(compiles); timed runs alternate between the two and the best of --repeats is kept.
transformers runs in its own process with --threads torch threads. Greedy decoding of both
is compared first, as a check that they run the same model.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
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
  model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
  prompts = torch.tensor(np.load(os.path.join(directory, "prompts.npy")), dtype=torch.long)

  def generate(new_tokens, greedy):
    with torch.no_grad():
      out = model.generate(prompts, attention_mask=torch.ones_like(prompts),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=not greedy, temperature=1.0, top_k=0, top_p=1.0,
                           pad_token_id=0, eos_token_id=None)
    return out[:, prompts.shape[1]:].numpy()

  for command in sys.stdin:
    if command.strip() == "greedy":
      answer = {"greedy": generate(GREEDY_TOKENS, True).tolist()}
    else:
      answer = {"seconds": elapsed(lambda: generate(args.new_tokens, False)),
                "threads": torch.get_num_threads()}
    print(json.dumps(answer), flush=True)


def bench(spec: str, args) -> tuple[int, float, float, float]:
  """Ours and transformers alternate, run after run, so a change in the machine's load
  (it is shared) hits both; each keeps its fastest run."""
  cfg = model_config(spec)
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, cfg.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
  lengths = np.full((args.batch,), args.prompt_len, np.int32)
  keys = jax.random.split(jax.random.key(0), args.batch)
  with tempfile.TemporaryDirectory() as tmp:
    directory = os.path.join(tmp, "hf")
    random = Transformer(cfg, nnx.Rngs(0))
    export_hf(LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(random))), ByteVocabulary(),
              directory)
    np.save(os.path.join(directory, "prompts.npy"), prompts)
    ours = load_hf_model(directory)  # the exported weights, read back
    worker = subprocess.Popen(
        [sys.executable, __file__, "--transformers_worker", directory, *sys.argv[1:]],
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
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=96)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=2, help="torch threads")
  parser.add_argument("--transformers_worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.transformers_worker:
    return transformers_worker(args.transformers_worker, args)
  tokens = args.batch * args.new_tokens
  print(f"devices: {jax.devices()}  batch {args.batch}, prompt {args.prompt_len}, "
        f"{args.new_tokens} new tokens, sampling at temperature 1")
  print(f"{'model':>8s}{'params':>12s}{'ours tok/s':>12s}{'HF tok/s':>12s}{'ratio':>8s}"
        f"{'greedy same':>13s}")
  for spec in args.models:
    params, t_ours, t_theirs, same = bench(spec, args)
    print(f"{spec:>8s}{params:12,d}{tokens / t_ours:12.0f}{tokens / t_theirs:12.0f}"
          f"{t_theirs / t_ours:7.1f}x{same:13.2f}")
  print(f"ratio = transformers generate time (torch {args.threads} threads, own process) "
        f"/ ours (target >= 2x); greedy same = fraction of rows whose first {GREEDY_TOKENS} "
        "greedy tokens agree")


if __name__ == "__main__":
  main()
