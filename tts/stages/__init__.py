"""Stage implementations; `tts.experiment` lists them in order."""
