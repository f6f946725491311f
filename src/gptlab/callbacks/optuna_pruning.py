"""Feed an Optuna sweep's pruner from the trainer: each validation's metric is reported to the job's trial.

optuna-integration's ``PyTorchLightningPruningCallback`` reports once per epoch, but gptlab's runs
validate every ``val_check_interval`` optimizer steps within one long epoch, so this one reports at
``trainer.global_step``."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation to trial ``trial_number`` of the study in ``storage``, and
    raise ``optuna.TrialPruned`` (the sweeper records the trial as pruned) when ``pruner`` says so.
    Without a storage (an in-memory study) there is nothing to report to and it does nothing."""

    def __init__(self, monitor: str, storage: str | None, study_name: str, trial_number: int, pruner=None):
        self.monitor, self.storage, self.study_name = monitor, storage, study_name
        self.trial_number, self.pruner = trial_number, pruner
        self._trial = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.storage is None or not trainer.is_global_zero or self._trial is not None:
            return
        import optuna

        storage = optuna.storages.RDBStorage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        self._trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.storage is None:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise KeyError(f"optuna_pruning: '{self.monitor}' was not logged by the validation")
            self._trial.report(float(value), step=trainer.global_step)
            prune = self._trial.should_prune()
        # every rank stops together
        if trainer.strategy.broadcast(prune):
            import optuna

            message = f"trial {self.trial_number} pruned at step {trainer.global_step}: {self.monitor}"
            rank_zero_info(message)
            raise optuna.TrialPruned(message)
