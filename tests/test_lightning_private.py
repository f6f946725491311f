"""The private Lightning APIs in gptlab.run.lightning_private still do what gptlab relies on.

A failure here after a Lightning upgrade means Lightning moved or changed one of them: adapt
src/gptlab/run/lightning_private.py (the only module that touches them) to the new version.
"""

from __future__ import annotations

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.utilities import CombinedLoader

from gptlab.callbacks.throughput import GPTThroughputMonitor
from gptlab.data.sampling import BatchPlan, GlobalBatchSampler, ResumableDataLoader
from gptlab.run.lightning_private import StatefulLoader, relaunches_command_line

CHANGED = "Lightning changed a private API gptlab uses; adapt gptlab/run/lightning_private.py: "


def trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **kwargs)


def test_the_script_launcher_is_told_apart_from_the_spawning_ones():
    assert relaunches_command_line(trainer(devices=2, strategy="ddp").strategy), (
        CHANGED + "strategy=ddp no longer uses _SubprocessScriptLauncher"
    )
    for strategy in ("ddp_spawn", "ddp_fork"):
        assert not relaunches_command_line(trainer(devices=2, strategy=strategy).strategy), (
            CHANGED + f"strategy={strategy} now uses _SubprocessScriptLauncher"
        )
    assert not relaunches_command_line(trainer(devices=1).strategy)


def test_lightning_saves_and_restores_a_resumable_loaders_state():
    plan = BatchPlan(global_batch=2)

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(range(20), batch_size=2, sampler=GlobalBatchSampler(20, 5, plan, seed=0))

    first_run = loader()
    assert isinstance(first_run, StatefulLoader), CHANGED + "ResumableDataLoader no longer matches _Stateful"
    combined = CombinedLoader(first_run, mode="max_size_cycle")
    iterator = iter(combined)
    first = [next(iterator)[0] for _ in range(2)]
    state = combined._state_dicts()
    assert state == [{"batches_served": 2}], CHANGED + f"CombinedLoader saved {state} for the loader"

    again = CombinedLoader(loader(), mode="max_size_cycle")
    again._load_state_dicts(state)
    rest = [batch for batch, *_ in again]
    assert [b.tolist() for b in first + rest] == [b.tolist() for b in loader()], (
        CHANGED + "a loader restored by CombinedLoader does not continue where it stopped"
    )


class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)


def test_the_peak_flops_reach_every_throughput_counter():
    monitor = GPTThroughputMonitor(peak_flops=1e12)
    run = trainer(max_steps=1, limit_val_batches=1)
    run.strategy.connect(_Tiny())
    run.state.fn, run.state.stage = "fit", "train"
    monitor.setup(run, run.lightning_module, "fit")
    counters = getattr(monitor, "_throughputs", None)
    assert counters, CHANGED + "ThroughputMonitor no longer keeps its counters in _throughputs"
    assert all(counter.available_flops == 10**12 for counter in counters.values())
    assert monitor.available_flops == 10**12
