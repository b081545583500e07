"""Every file under configs/ loads as `tts run` loads it. Those that need nothing from the
command line (a generated task, both policies trained) pass the load-time check, keep the
14x (+-1x) parameter ratio the FLOPs-matched comparison is about, and search test questions
that exist. configs/math_hf.py needs files: tests/test_math_hf.py runs it."""
import glob
import os

import pytest

from tts import cli
from tts.config_check import check_config
from tts.data.tasks import make_task
from tts.stages.policy import model_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads(path):
  config = cli.load_config(path)
  if config.task.kind != "chain":
    return
  check_config(config)
  vocab_size = make_task(config.task).vocab.vocab_size
  small, large = (model_config(config, name, vocab_size).num_params for name in ("small", "large"))
  assert 13 <= large / small <= 15, (path, small, large)
  assert config.search.num_questions <= config.task.num_test, path


def test_reproduce_has_room_for_cross_validation():
  """5 difficulty bins x 2 cross-validation folds of ~50 search questions each."""
  config = cli.load_config(os.path.join(CONFIG_DIR, "reproduce.py"))
  assert config.search.num_questions >= 500
