"""Helpers that tests load into CLI subprocesses (`--trainer.callbacks+=helpers.<name>`)."""
