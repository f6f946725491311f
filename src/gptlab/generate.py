"""``gptlab-generate``: sample text from a checkpoint; the checkpoint alone is enough.

gptlab-generate ckpt_path=path/to/last.ckpt prompt="ROMEO:" max_new_tokens=300 top_k=50
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from gptlab.run.entry import entry_point
from gptlab.run.hydra import check_device, settings_of
from gptlab.tasks.registry import load_module, task_for_module


def generate(cfg: DictConfig) -> list[str]:
    """Return ``cfg.num_samples`` continuations of ``cfg.prompt`` (prompt included)."""
    check_settings(cfg)
    model = load_module(cfg.ckpt_path, map_location=cfg.device).to(cfg.device)
    task = task_for_module(model)
    if not task.generates:
        raise ValueError(
            f"checkpoint '{cfg.ckpt_path}' holds a {task.name} ({type(model).__name__}), not a language model"
            + ("; gptlab-predict labels texts with it" if task.predictor else "")
            + ". Generate from a pretraining checkpoint"
        )
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    top_k = cfg.top_k or None
    return [
        cfg.prompt
        + model.generate(
            cfg.prompt,
            cfg.max_new_tokens,
            cfg.temperature,
            top_k,
            generator,
            top_p=cfg.top_p,
            repetition_penalty=cfg.repetition_penalty,
            stop=list(cfg.stop),
        )  # fmt: skip
        for _ in range(cfg.num_samples)
    ]


def check_settings(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg) - settings_of("generate"))
    if unknown:
        raise ValueError(
            f"gptlab-generate has no setting {unknown[0]!r}; its settings are "
            f"{', '.join(sorted(settings_of('generate')))}"
        )
    if not (isinstance(cfg.max_new_tokens, int) and cfg.max_new_tokens >= 0):
        raise ValueError(
            f"max_new_tokens={cfg.max_new_tokens}: give the number of tokens to write, 0 or more"
        )
    if cfg.top_k is not None and not (isinstance(cfg.top_k, int) and cfg.top_k >= 0):
        raise ValueError(
            f"top_k={cfg.top_k}: sample among the k likeliest tokens (k >= 1), or top_k=0 / null for all"
        )
    if cfg.num_samples < 1:
        raise ValueError(f"num_samples={cfg.num_samples}: give 1 or more")
    check_device(cfg.device)


def print_samples(cfg: DictConfig) -> None:
    """What gptlab-generate prints: each sample, separated by a rule."""
    for i, text in enumerate(generate(cfg)):
        if i:
            print("\n" + "-" * 40)
        print(text)


main = entry_point(print_samples, "generate")


if __name__ == "__main__":
    main()
