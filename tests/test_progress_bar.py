"""The Rich progress bar moves every few batches, and always on an epoch's or a run's last batch."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from gptlab.callbacks.progress_bar import SteppedRichProgressBar


def updated_batches(monkeypatch: pytest.MonkeyPatch, tmp_path, **trainer_options) -> list[int]:
    """Fit Lightning's BoringModel; return the batch indices at which the Rich bar was updated."""
    seen: list[int] = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: seen.append(args[-1]))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        callbacks=[SteppedRichProgressBar(update_every_n_batches=3)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **trainer_options,
    )
    trainer.fit(BoringModel())
    return seen


def test_updates_every_n_batches_and_at_the_last_step(monkeypatch, tmp_path):
    # BoringModel has 64 batches an epoch: the run ends at step 7, mid-epoch
    assert updated_batches(monkeypatch, tmp_path, max_steps=7) == [2, 5, 6]


def test_updates_on_each_epochs_last_batch(monkeypatch, tmp_path):
    assert updated_batches(monkeypatch, tmp_path, max_epochs=2, limit_train_batches=4) == [2, 3, 2, 3]


def test_rejects_a_non_positive_interval():
    with pytest.raises(ValueError, match="update_every_n_batches must be >= 1, got 0"):
        SteppedRichProgressBar(update_every_n_batches=0)
