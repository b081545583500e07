"""Data: tokenizers, the generated chain task, MATH-format JSONL, grading, seqio.

Use `tts.data.tasks.make_task(config.task)`. Only `tts.data.seqio_tasks` imports
TensorFlow; keep it that way (see tests/test_data_seqio.py).
"""
