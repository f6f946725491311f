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


def test_the_training_bar_counts_the_runs_steps_across_data_epochs(tmp_path):
    bar = SteppedRichProgressBar(update_every_n_batches=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path, callbacks=[bar], logger=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=0, max_steps=10, limit_train_batches=4,
    )  # fmt: skip
    trainer.fit(BoringModel())
    task = bar.progress.tasks[bar.train_progress_bar_id]
    # one task for the run (Lightning's: "Epoch 2/-2", 2/4 batches of the third data epoch)
    assert (task.description, task.completed, task.total) == ("step", 10, 10)
    assert "v_num" not in bar.get_metrics(trainer, trainer.lightning_module)


def test_tokens_per_s_is_measured_between_updates_and_not_across_a_validation(monkeypatch):
    from types import SimpleNamespace

    from gptlab.callbacks import progress_bar

    clock = iter([10.0, 12.0, 13.0, 100.0, 102.0])  # perf_counter at each update
    monkeypatch.setattr(progress_bar.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress_bar, "_tokens_per_step", lambda trainer: 768)
    bar, trainer = SteppedRichProgressBar(), SimpleNamespace(global_step=0)
    for step in (10, 20, 30):
        trainer.global_step = step
        bar._measure(trainer)
    assert bar._tokens_per_s == pytest.approx(10 * 768 / 1.0)  # steps 20 -> 30 in 1 s
    bar._since = None  # what on_validation_end does: the pause is not a training interval
    for step in (40, 50):
        trainer.global_step = step
        bar._measure(trainer)
    assert bar._tokens_per_s == pytest.approx(10 * 768 / 2.0)  # 100 -> 102 s, not 13 -> 100 s
