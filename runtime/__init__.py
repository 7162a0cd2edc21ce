"""What a run needs around Lightning that is not a callback: atomic files, atomic checkpoint IO, the cheap
profiler, `--ckpt_path last` resolution, and every private Lightning name litlab touches (`lightning_private`)."""
