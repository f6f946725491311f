"""gptlab's Hydra sweeper on Optuna: ``hydra/sweeper=optuna`` (see configs/hydra/sweeper/optuna.yaml).
Hydra finds it in the ``hydra_plugins`` namespace package."""
