"""`tts import` and `tts export`: Hugging Face directories to and from our saved models.

  tts import /models/llama --out runs/imported/policy          # orbax params + model.json
  tts import /models/prm --out runs/imported/prm --good_token + --bad_token -
  tts export configs/demo.py --workdir runs/demo --model prm/final --out exported/prm

An imported directory is what `load_model` reads (a policy stage's final/, a verifier
path); it keeps the checkpoint's tokenizer files, so exporting it needs no config. A trained
model is exported with the tokenizer of the config's task, so the ids match the weights.
"""
import json
import os

from tts.data.hf_tokenizer import TOKENIZER_FILE, HFTokenizer
from tts.data.tasks import make_task
from tts.interop.hf_export import GENERATION_FILE, export_hf
from tts.interop.hf_import import keep_checkpoint_files, load_hf_model
from tts.train.checkpoints import load_model, save_params


def import_checkpoint(hf_dir: str, out: str, good_token: str = "", bad_token: str = "") -> str:
  """Saves the checkpoint in our format; good/bad tokens make a causal LM a PRM."""
  prm_ids = None
  if good_token or bad_token:
    from tts.data.hf_tokenizer import HFTokenizer
    from tts.stages.search import prm_token_ids
    prm_ids = prm_token_ids(good_token, bad_token, HFTokenizer(hf_dir),
                            "tts import --good_token/--bad_token")
  model = load_hf_model(hf_dir, prm_token_ids=prm_ids)
  save_params(out, model.params, model.cfg)
  keep_checkpoint_files(hf_dir, out)
  return os.path.abspath(out)


def export_model(config, workdir: str, model_path: str, out: str, **options) -> str:
  """Exports the saved model at `model_path` (relative to the workdir unless absolute);
  `options` go to export_hf (dtype, max_positions, max_shard_bytes)."""
  source = os.path.join(workdir, model_path)
  model = load_model(source)
  if os.path.isfile(os.path.join(source, TOKENIZER_FILE)):
    vocab = HFTokenizer(source)
  elif config is None:
    raise ValueError(f"{source} has no {TOKENIZER_FILE} (a trained model, not an imported "
                     "one): pass the experiment's config, or the --workdir of its run, so its "
                     "task's tokenizer is exported")
  else:
    vocab = make_task(config.task).vocab
  generation = None
  if os.path.isfile(os.path.join(source, GENERATION_FILE)):
    with open(os.path.join(source, GENERATION_FILE)) as f:
      generation = json.load(f)
  return export_hf(model, vocab, out, generation=generation, **options)
