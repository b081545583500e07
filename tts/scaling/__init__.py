"""Difficulty bins, compute-optimal strategy selection and FLOPs accounting: pure functions
over arrays read from result files (the stages in tts/stages do the reading and writing)."""
