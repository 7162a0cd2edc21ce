"""Training-behaviour callbacks: they change how a run trains or stops (fine-tuning schedule, curriculum, early
stopping, divergence and collapse guards, checkpoints, GPU speed-ups)."""
