"""Speed settings chosen by the machine: ``trainer.precision=auto`` and ``model.compile=auto``.

Resolved once, before the trainer and the model are built, into the values Lightning and
:class:`~gptlab.tasks.lm.GPTModule` take; the run's recorded config holds what was chosen.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

# Steps from which a compiled run repays its warm-up (benchmarks/MEASUREMENTS.md, "Automatic speed
# settings"): on CPUs compile gains a few percent per step against ~30 s of cold compilation; on GPUs it
# gains far more per step, so a short run already repays it.
COMPILE_MIN_STEPS = {"cpu": 20_000, "cuda": 500}


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The feature flags the CPU reports (empty where /proc/cpuinfo is missing, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def auto_precision(accelerator: str, flags: set[str]) -> str:
    """bf16 autocast on a GPU and on a CPU with bf16 matrix units (AMX); fp32 on other CPUs, where bf16
    matmuls are emulated and slower than fp32."""
    if uses_cuda(accelerator) or (accelerator == "cpu" and "amx_bf16" in flags):
        return "bf16-mixed"
    return "32-true"


def auto_compile(accelerator: str, max_steps: int) -> bool:
    """Compile when the run is long enough to repay the compilation (``max_steps=-1``: epoch-bound,
    length unknown, not compiled)."""
    return max_steps >= COMPILE_MIN_STEPS["cuda" if uses_cuda(accelerator) else "cpu"]


def resolve_auto_speed(cfg: DictConfig, flags: set[str] | None = None) -> None:
    """Replace ``trainer.precision=auto`` and ``model.compile=auto`` in ``cfg`` by this machine's choice,
    and keep torch.compile's cache under ``paths.cache_dir`` (unless TORCHINDUCTOR_CACHE_DIR is set)."""
    trainer, model = cfg.get("trainer"), cfg.get("model")
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    chosen = []
    with open_dict(cfg):
        if trainer is not None and trainer.get("precision") == "auto":
            flags = cpu_flags() if flags is None else flags
            trainer.precision = auto_precision(accelerator, flags)
            seen = (
                " ".join(sorted(flags & {"amx_bf16", "avx512_bf16", "avx512f"})) or "none of amx_bf16/avx512"
            )
            chosen.append(f"trainer.precision={trainer.precision} (CPU flags: {seen})")
        if model is not None and model.get("compile") == "auto":
            model.compile = auto_compile(accelerator, int(OmegaConf.select(cfg, "trainer.max_steps") or -1))
            chosen.append(f"model.compile={model.compile}")
    if chosen:
        rank_zero_info(f"speed settings chosen for this machine: {', '.join(chosen)}")
    cache_dir = OmegaConf.select(cfg, "paths.cache_dir")
    if model is not None and model.get("compile") is True and cache_dir:
        # inductor reads the variable when it compiles, so a warm cache survives across runs
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir) / "torchinductor"))
