"""Running an entry point: Hydra helpers, run directories and the recorded config."""
