"""Training-behaviour callbacks: they change how a run trains or stops (fine-tuning schedule, curriculum, early
stopping, divergence guard, checkpoints, GPU speed-ups)."""
