"""`tts import` and `tts export`: Hugging Face directories to and from our saved models.

  tts import /models/llama --out runs/imported/policy          # orbax params + model.json
  tts import /models/prm --out runs/imported/prm --good_token + --bad_token -
  tts export configs/demo.py --workdir runs/demo --model prm/final --out exported/prm

An imported directory is what `load_model` reads (a policy stage's final/, a verifier
path). Export takes the tokenizer from the config's task, so the ids match the weights.
"""
import os

from tts.data.tasks import make_task
from tts.interop.hf_export import export_hf
from tts.interop.hf_import import load_hf_model
from tts.train.checkpoints import load_model, save_params


def import_checkpoint(hf_dir: str, out: str, good_token: str = "", bad_token: str = "") -> str:
  """Saves the checkpoint in our format; good/bad tokens make a causal LM a PRM."""
  prm_ids = None
  if good_token or bad_token:
    from tts.data.hf_tokenizer import HFTokenizer
    from tts.stages.search import prm_token_ids
    prm_ids = prm_token_ids({"good_token": good_token, "bad_token": bad_token},
                            HFTokenizer(hf_dir), "tts import --good_token/--bad_token")
  model = load_hf_model(hf_dir, prm_token_ids=prm_ids)
  save_params(out, model.params, model.cfg)
  return os.path.abspath(out)


def export_model(config, workdir: str, model_path: str, out: str) -> str:
  """Exports the saved model at `model_path` (relative to the workdir unless absolute)."""
  model = load_model(os.path.join(workdir, model_path))
  return export_hf(model, make_task(config.task).vocab, out)
