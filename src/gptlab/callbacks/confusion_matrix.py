"""Log a classifier's confusion matrix as an image to TensorBoard after validation and test."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure


class ConfusionMatrixLogger(L.Callback):
    """Plot ``pl_module.<stage>_confmat`` (a torchmetrics confusion matrix the module updates and resets)
    with the module's ``label_names`` after each validation and test, as ``<stage>/confusion_matrix``.

    Modules without such a metric (the language model) are left alone. ``normalize=True`` shows each
    row (a true label) as fractions, which reads better when classes differ in size.
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        metric = getattr(pl_module, f"{stage}_confmat", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if metric is None or not loggers or not metric.update_called:
            return
        matrix = metric.compute()  # on every rank: compute() syncs across processes
        if trainer.global_rank != 0:
            return
        if self.normalize:
            matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
        size = 2.0 + 0.9 * len(pl_module.label_names)
        # A bare Figure, not pyplot: no global state and no display backend needed.
        fig = Figure(figsize=(size, size), layout="tight")
        ax = fig.subplots()
        metric.plot(matrix, ax=ax, labels=list(pl_module.label_names))
        ax.set_title(f"{stage} confusion matrix (step {trainer.global_step})")
        for logger in loggers:
            logger.experiment.add_figure(f"{stage}/confusion_matrix", fig, global_step=trainer.global_step)
