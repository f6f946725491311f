"""A classifier's reliability diagram (accuracy against confidence) as an image in TensorBoard at test."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.utilities import dim_zero_cat


def reliability_bins(
    confidences: torch.Tensor, correct: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per equal-width confidence bin: the mean confidence, the accuracy and the number of predictions
    (a confidence on a bin edge goes to the bin above, a confidence of 1 to the last one)."""
    index = (confidences * n_bins).long().clamp(max=n_bins - 1)
    count = torch.zeros(n_bins).index_add_(0, index, torch.ones_like(confidences))
    confidence = torch.zeros(n_bins).index_add_(0, index, confidences) / count.clamp(min=1)
    accuracy = torch.zeros(n_bins).index_add_(0, index, correct.float()) / count.clamp(min=1)
    return confidence, accuracy, count


class ReliabilityDiagram(L.Callback):
    """After each test, plot ``pl_module.test_ece`` (a torchmetrics ``MulticlassCalibrationError`` the
    module updates) as ``test/reliability``: each bin's accuracy against its mean confidence, the diagonal
    a perfectly calibrated model would follow, and how many test texts each bin holds. Modules without
    that metric are left alone."""

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = getattr(pl_module, "test_ece", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if metric is None or not loggers or not metric.update_called:
            return
        ece = float(metric.compute())  # on every rank: syncs across processes
        with metric.sync_context():
            confidences, correct = dim_zero_cat(metric.confidences), dim_zero_cat(metric.accuracies)
        if trainer.global_rank != 0:
            return
        confidence, accuracy, count = reliability_bins(confidences.cpu(), correct.cpu(), metric.n_bins)
        from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no display backend

        fig = Figure(figsize=(5, 6), layout="tight")
        top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        width = 1 / metric.n_bins
        centers = (torch.arange(metric.n_bins) + 0.5) * width
        filled = count > 0
        top.bar(centers[filled], accuracy[filled], width=width, edgecolor="black", label="accuracy")
        top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="calibrated")
        top.plot(confidence[filled], accuracy[filled], "o", color="tab:red", label="mean confidence")
        top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        top.set_title(f"test reliability (ECE {ece:.3f}, step {trainer.global_step})")
        top.legend(loc="upper left")
        bottom.bar(centers, count, width=width, edgecolor="black", color="gray")
        bottom.set(xlabel="confidence of the predicted class", ylabel="texts")
        for logger in loggers:
            logger.experiment.add_figure("test/reliability", fig, global_step=trainer.global_step)
