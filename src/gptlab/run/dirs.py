"""Where a run writes: the ``${gptlab_run_dir:...}`` resolver behind ``hydra.run.dir``, and
``${gptlab_log_dir:...}`` behind ``hydra.sweep.dir``."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from gptlab.run.files import check_writable_dir

RESUMABLE = ("last*.ckpt", "interrupted.ckpt")


class RunNameInUse(SystemExit):
    """A new run named like an existing one. A SystemExit, so that raised where Hydra chooses the run
    directory (which wraps any other exception in a resolver traceback) it stops with its one line."""


class LogDirUnwritable(SystemExit):
    """``paths.log_dir`` cannot be written in: a SystemExit for the same reason as :class:`RunNameInUse`."""


def writable_log_dir(path: str) -> str:
    """``path`` (under ``paths.log_dir``), refused with one line when it cannot be created or written in."""
    try:
        check_writable_dir(path, "paths.log_dir")
    except PermissionError as err:
        raise LogDirUnwritable(f"error: {err}") from None
    return path


def newest_resumable_checkpoint(runs: str | Path, run: str = "*") -> Path | None:
    """The most recently written last (or interrupted) checkpoint of ``runs/<run>`` (a glob)."""
    found = [ckpt for pattern in RESUMABLE for ckpt in Path(runs).glob(f"{run}/checkpoints/{pattern}")]
    return max(found, key=lambda ckpt: ckpt.stat().st_mtime) if found else None


def run_directory(runs: str, run_name: str | None = None, ckpt_path: str | None = None) -> str:
    """The directory of a run under ``runs``.

    - ``run_name=<name>``: ``runs/<name>``; the same name again continues in it with ``ckpt_path=last``
      (or a checkpoint of that run), and is refused without: a new run never writes into an old one.
    - resuming a checkpoint file of a run under ``runs``: that run's directory, so the resumed run keeps
      its checkpoints and its TensorBoard run.
    - one process of a multi-process launch (torchrun with a ``--rdzv-id``, a SLURM job of several
      tasks): a name every process agrees on, so all ranks share one directory (and a requeued job,
      with ``ckpt_path=last``, finds its own checkpoints there).
    - ``ckpt_path=last``: the run with the newest last (or interrupted) checkpoint.
    - otherwise the start time, to the microsecond.
    """
    root = Path(writable_log_dir(runs))
    if run_name:
        run = root / run_name
        resuming = ckpt_path == "last" or (
            ckpt_path and Path(ckpt_path).resolve().is_relative_to(run.resolve())
        )
        # the processes of a multi-process launch all name the same directory, and rank 0 may make it first
        single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if not resuming and single_process and run.is_dir() and any(run.iterdir()):
            raise RunNameInUse(
                f"error: run_name={run_name}: {run} already holds a run. Resume it with ckpt_path=last, "
                "or start a new run with another run_name"
            )
        return str(run)
    if ckpt_path and ckpt_path != "last":
        checkpoints = Path(ckpt_path).resolve().parent
        if checkpoints.name == "checkpoints" and checkpoints.parent.parent == root.resolve():
            return str(checkpoints.parent)
    # before ckpt_path=last: a requeued job resumes its own run, not whichever run wrote last
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1 and env.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return str(root / f"torchrun-{env['TORCHELASTIC_RUN_ID']}")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
        return str(root / f"slurm-{env['SLURM_JOB_ID']}")
    if ckpt_path == "last" and (newest := newest_resumable_checkpoint(root)) is not None:
        return str(newest.parent.parent)
    return str(root / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f"))
