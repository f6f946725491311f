"""The one home of the private Lightning APIs gptlab relies on, where Lightning has no public one.

Each is checked by tests/test_lightning_private.py, which fails with a message naming what changed
when a Lightning upgrade moves or renames it.
"""

from __future__ import annotations

from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.trainer.states import RunningStage

# Lightning saves the state of each train DataLoader that matches this protocol (``state_dict`` and
# ``load_state_dict``) in every checkpoint and gives it back on resume (``CombinedLoader``);
# ``gptlab.data.sampling.ResumableDataLoader`` relies on it to skip the batches already served.
StatefulLoader = _Stateful


def relaunches_command_line(strategy: Strategy) -> bool:
    """Whether the strategy starts its other ranks by running this command line again (``ddp``)."""
    return isinstance(strategy.launcher, _SubprocessScriptLauncher)


def set_peak_flops(monitor: ThroughputMonitor, peak_flops: int) -> None:
    """Give a set-up ``ThroughputMonitor`` the hardware's peak FLOP/s, which it otherwise takes only from
    Lightning's table of known GPUs."""
    monitor.available_flops = peak_flops
    for throughput in monitor._throughputs.values():
        throughput.available_flops = peak_flops


def last_training_time(monitor: ThroughputMonitor) -> float | None:
    """The ``time.perf_counter()`` of the monitor's last training batch, or None before the first one."""
    times = monitor._throughputs[RunningStage.TRAINING]._time
    return monitor._t0s[RunningStage.TRAINING] + times[-1] if times else None


def shift_training_start(monitor: ThroughputMonitor, seconds: float) -> None:
    """Move the monitor's training clock's origin, so ``seconds`` of pause do not count as training."""
    monitor._t0s[RunningStage.TRAINING] += seconds
