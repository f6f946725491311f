"""Exact resume, SIGTERM / Ctrl-C checkpoints, the NaN guard, atomic checkpoint writes, run directories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.callbacks.checkpoint_io import AtomicCheckpointIO
from gptlab.callbacks.fault_tolerance import FiniteLossGuard, NonFiniteLossError
from gptlab.run.dirs import RunNameInUse, run_directory
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

QUIET = ["callbacks.text_sampler=null", "callbacks.throughput=null", "test=false"]


def checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_twenty_steps_resumed_for_twenty_more_equal_forty_in_one_go(compose_train, corpus, tmp_path):
    # steps_per_epoch=15: the first leg crosses an epoch and stops mid-epoch, so the resumed loader
    # must skip the 5 batches it already served in epoch 1; dropout: the random states must resume too
    common = [
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "data.steps_per_epoch=15",
        "trainer.deterministic=true", "trainer.val_check_interval=10", "model.backbone.dropout=0.1",
        "model.scheduler.total_steps=40", "model.scheduler.warmup_steps=5",
    ]  # fmt: skip
    whole = compose_train(*common, "trainer.max_steps=40", f"paths.output_dir={tmp_path / 'whole'}")
    whole_val = train(whole)
    first = compose_train(*common, "trainer.max_steps=20", f"paths.output_dir={tmp_path / 'legs'}")
    train(first)
    resumed_from = tmp_path / "legs" / "checkpoints" / "last.ckpt"
    assert checkpoint(resumed_from)["global_step"] == 20
    second = compose_train(
        *common, "trainer.max_steps=40", f"paths.output_dir={tmp_path / 'legs'}", f"ckpt_path={resumed_from}"
    )
    legs_val = train(second)

    a = checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = checkpoint(tmp_path / "legs" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 40
    diff = max((a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"])
    print(f"max parameter difference, 40 steps vs 20 + 20 resumed: {diff:.3g}")
    assert diff == 0.0
    assert whole_val == legs_val
    # one TensorBoard run holds both legs
    board = tmp_path / "legs" / "tensorboard"
    assert not [p for p in board.iterdir() if p.is_dir()]
    events = EventAccumulator(str(board))
    events.Reload()
    val_steps = [event.step for event in events.Scalars("val/loss")]
    assert min(val_steps) < 20 < max(val_steps)
    moments = [c["optimizer_states"][0]["state"].values() for c in (a, b)]
    for x, y in zip(*moments, strict=True):
        torch.testing.assert_close(x["exp_avg_sq"], y["exp_avg_sq"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "hardware",
    [[], pytest.param(["trainer=gpu", "trainer.deterministic=true"], marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a GPU (dropout then draws from the CUDA generator)"))],
    ids=["cpu", "gpu"],
)  # fmt: skip
def test_resume_with_dropout_is_exact(compose_train, corpus, tmp_path, hardware):
    common = [
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "model.backbone.n_layer=1", "data.steps_per_epoch=3",
        "model.backbone.dropout=0.1", "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0",
        "+trainer.limit_val_batches=1", *hardware,
    ]  # fmt: skip
    train(compose_train(*common, "trainer.max_steps=6", f"paths.output_dir={tmp_path / 'whole'}"))
    train(compose_train(*common, "trainer.max_steps=4", f"paths.output_dir={tmp_path / 'legs'}"))
    resumed_from = tmp_path / "legs" / "checkpoints" / "last.ckpt"
    assert len(checkpoint(resumed_from)["random_states"]) == 1  # one process
    train(compose_train(*common, "trainer.max_steps=6", f"paths.output_dir={tmp_path / 'legs'}",
                        f"ckpt_path={resumed_from}"))  # fmt: skip
    a = checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = checkpoint(tmp_path / "legs" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    for name, weight in a["state_dict"].items():
        torch.testing.assert_close(weight, b["state_dict"][name], rtol=0, atol=0)


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from gptlab.callbacks.fault_tolerance import random_states, set_random_states

    torch.save({"random_states": [random_states()]}, tmp_path / "states.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    (states,) = torch.load(tmp_path / "states.ckpt", weights_only=True)["random_states"]
    set_random_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_a_new_run_in_a_used_run_directory_starts_afresh_without_ckpt_path(
    compose_train, corpus, tmp_path, monkeypatch
):
    # Lightning's OnExceptionCheckpoint would turn ckpt_path=None into "last" and resume the old run
    common = [
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "trainer.max_steps=10",
        "trainer.val_check_interval=10", f"paths.output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    train(compose_train(*common))
    assert checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 10
    trained: list[int] = []
    training_step = GPTModule.training_step
    monkeypatch.setattr(
        GPTModule, "training_step", lambda self, *args: trained.append(1) or training_step(self, *args)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_train(*common))
    assert len(trained) == 10  # all ten steps again, not none
    assert not [w.message for w in caught if "ckpt_path" in str(w.message)]


def start_training(tmp_path: Path, corpus: Path, *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gptlab.train", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *QUIET, "run_name=preemptible",
        "trainer.val_check_interval=20", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_signal_during_training_leaves_a_checkpoint_that_resumes(tmp_path, corpus, signum):
    run = tmp_path / "train" / "runs" / "preemptible"
    process = start_training(tmp_path, corpus, "trainer.max_steps=100000", "model.scheduler.total_steps=1000")
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.ckpt").exists():  # training is under way
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    print(f"{signal.Signals(signum).name}: exit status {process.returncode}")
    assert process.returncode == (143 if signum == signal.SIGTERM else 1)
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    assert interrupted.is_file(), output[-3000:]
    stopped_at = checkpoint(interrupted)["global_step"]
    assert stopped_at >= 20 and f"at step {stopped_at}: saved" in output

    resumed = start_training(tmp_path, corpus, "ckpt_path=last", f"trainer.max_steps={stopped_at + 20}",
                             "model.scheduler.total_steps=1000")  # fmt: skip
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming from {interrupted}" in output
    assert f"`max_steps={stopped_at + 20}` reached" in output
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] > stopped_at
    assert not interrupted.exists()  # a fit that ends normally removes it
    assert [p.name for p in run.parent.iterdir()] == ["preemptible"]
    sessions = [(run / name).read_text() for name in ("config_resolved.1.yaml", "config_resolved.yaml")]
    assert "ckpt_path: null" in sessions[0] and "ckpt_path: last" in sessions[1]


class InjectNaN(L.Callback):
    """Test helper: turns one weight into NaN at a given step."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                pl_module.backbone.wte.weight[0, 0] = float("nan")


class SigtermAfterTheLastTestBatch(L.Callback):
    """Test helper: this process sends itself SIGTERM once the test stage has run its last batch."""

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_after_the_last_batch_still_stops_the_run(compose_train, corpus):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, "callbacks.text_sampler=null", "callbacks.throughput=null",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "test=true",
        "+callbacks.sigterm._target_=tests.test_fault_tolerance.SigtermAfterTheLastTestBatch",
    )  # fmt: skip
    with pytest.raises(SIGTERMException):  # main() turns it into exit status 143; a sweep ends there
        train(cfg)


def test_a_nan_loss_stops_the_run_and_the_last_good_checkpoint_survives(compose_train, corpus):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "trainer.max_steps=100",
        "trainer.val_check_interval=10", "+callbacks.inject_nan.at_step=25",
        "+callbacks.inject_nan._target_=tests.test_fault_tolerance.InjectNaN",
    )  # fmt: skip
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at step 25 \(last finite loss: \d\.\d{4} at step 24\)"
    ):
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = checkpoint(last)
    assert saved["global_step"] == 20
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())
    assert torch.isfinite(load_module(last)(torch.zeros(1, 4, dtype=torch.long))).all()
    assert not (last.parent / "interrupted.ckpt").exists()


def test_a_checkpoint_with_non_finite_weights_is_refused():
    weights = {"backbone.wte.weight": torch.tensor([1.0, float("inf")]), "step": torch.tensor(3)}
    trainer = type("FakeTrainer", (), {"global_step": 7})()
    with pytest.raises(NonFiniteLossError, match="weight 'backbone.wte.weight' is not finite at step 7"):
        FiniteLossGuard().on_save_checkpoint(trainer, None, {"state_dict": weights})


def test_an_interrupted_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def crash_midway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_run_directories_for_names_resumes_and_launchers(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    old, new = runs / "2026-01-01_00-00-00_000001", runs / "2026-01-02_00-00-00_000001"
    for run, mtime in [(old, 2_000_000), (new, 1_000_000)]:  # the older-named run was written last
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        os.utime(run / "checkpoints" / "last.ckpt", (mtime, mtime))
    assert run_directory(str(runs), "mine") == str(runs / "mine")
    assert run_directory(str(runs), None, str(new / "checkpoints" / "last.ckpt")) == str(new)
    assert run_directory(str(runs), None, "last") == str(old)
    elsewhere = tmp_path / "other" / "checkpoints" / "last.ckpt"
    assert Path(run_directory(str(runs), None, str(elsewhere))).parent == runs  # a new run
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    assert run_directory(str(runs)) == str(runs / "torchrun-job7")
    assert run_directory(str(runs), None, "last") == str(runs / "torchrun-job7")  # its own run, if requeued


@pytest.mark.slow
def test_a_compiled_model_checkpoint_loads_into_an_uncompiled_model(compose_train, corpus):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "model.compile=true", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0",
    )  # fmt: skip
    train(cfg)
    path = Path(cfg.paths.output_dir) / "checkpoints"
    saved = checkpoint(next(path.glob("*.ckpt")))
    assert not [k for k in saved["state_dict"] if "_orig_mod" in k]
    model = load_module(next(path.glob("*.ckpt")))
    assert not hasattr(model.backbone, "_orig_mod")
    torch.testing.assert_close(
        model.state_dict()["backbone.wte.weight"], saved["state_dict"]["backbone.wte.weight"]
    )


def test_last_checkpoint_is_the_newest_step_even_when_val_loss_did_not_improve(compose_train, corpus):
    cfg = compose_train(
        f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, "trainer.max_steps=20",
        "trainer.val_check_interval=10", "model.optimizer.lr=0.0", "model.scheduler=null",
    )  # fmt: skip
    train(cfg)  # learning rate 0: the val loss never improves after the first validation
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-step000010.ckpt", "last.ckpt"]
    assert checkpoint(checkpoints / "last.ckpt")["global_step"] == 20


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_checkpoints_get_the_permissions_of_any_file_the_user_writes(tmp_path, mask):
    previous = os.umask(mask)
    try:
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
        (tmp_path / "plain").touch()
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_an_interrupt_checkpoint_is_saved_without_lightnings_weights_only_notice(tmp_path, caplog):
    from gptlab.callbacks.fault_tolerance import InterruptCheckpoint

    class Preempted(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            raise SIGTERMException

    model = GPTModule(vocab_size=8, backbone={"block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 8})
    model.optimizer_factory = torch.optim.AdamW
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[InterruptCheckpoint(str(tmp_path)), Preempted()], enable_model_summary=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader([(torch.zeros(4, dtype=torch.long),) * 2], batch_size=1)
    with caplog.at_level("INFO"), pytest.raises(SIGTERMException):
        trainer.fit(model, loader)
    assert "optimizer_states" in checkpoint(tmp_path / "interrupted.ckpt")  # the whole training state
    assert "weights_only" not in caplog.text


def test_a_reused_run_name_is_refused_unless_resuming(tmp_path):
    runs = tmp_path / "runs"
    assert run_directory(str(runs), "mine") == str(runs / "mine")  # a new name
    (runs / "mine" / "checkpoints").mkdir(parents=True)
    (runs / "mine" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(RunNameInUse, match=r"run_name=mine: .* already holds a run\. Resume it with "
                       r"ckpt_path=last, or start a new run with another run_name"):  # fmt: skip
        run_directory(str(runs), "mine")
    assert run_directory(str(runs), "mine", "last") == str(runs / "mine")
    assert run_directory(str(runs), "mine", str(runs / "mine" / "checkpoints" / "last.ckpt"))


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_refused_run_leaves_the_other_run_untouched(tmp_path, corpus):
    def cli(*overrides: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "gptlab.train", f"data.path={corpus}", f"paths.log_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}", *TINY_OVERRIDES, *QUIET, "trainer.max_steps=3",
            "+trainer.limit_val_batches=2", *overrides,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    done = cli("run_name=mine")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "train" / "runs" / "mine"
    before = snapshot(run)
    assert str(run / ".hydra" / "config.yaml") in before and str(run / "train.log") in before
    done = cli("run_name=mine")  # the same name again, not resuming
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: run_name=mine: {run} already holds a run. Resume it with ckpt_path=last, or start a new "
        "run with another run_name"
    ]
    done = cli("ckpt_path=last", "model.backbone.n_layer=3")  # resumes the newest run: the one above
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert f"cannot resume {last}: it holds a model of another shape " in done.stdout
    assert "backbone.n_layer: 2 in the checkpoint, 3 here" in done.stdout
    assert snapshot(run) == before
    assert [p.name for p in (tmp_path / "train" / "runs").iterdir()] == ["mine"]


def test_a_resume_checks_once_that_the_checkpoint_fits(compose_train, corpus, tmp_path, monkeypatch):
    from gptlab.checkpoints import fit

    common = [f"data.path={corpus}", *TINY_OVERRIDES, *QUIET, f"paths.output_dir={tmp_path / 'run'}"]
    train(compose_train(*common, "trainer.max_steps=4"))
    calls = []
    check_fits = fit.check_fits

    def counted(*args, **kwargs):
        calls.append(args[0].path)
        return check_fits(*args, **kwargs)

    monkeypatch.setattr(fit, "check_fits", counted)
    train(compose_train(*common, "trainer.max_steps=6", "ckpt_path=last"))
    assert calls == [tmp_path / "run" / "checkpoints" / "last.ckpt"]
    assert checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 6
