"""``gptlab-generate``: sample text from a checkpoint; the checkpoint alone is enough.

gptlab-generate ckpt_path=path/to/last.ckpt prompt="ROMEO:" max_new_tokens=300 top_k=50
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from gptlab.models.io import load_module
from gptlab.run.hydra import check_config_dir


def generate(cfg: DictConfig) -> list[str]:
    """Return ``cfg.num_samples`` continuations of ``cfg.prompt`` (prompt included)."""
    model = load_module(cfg.ckpt_path, map_location=cfg.device).to(cfg.device)
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    top_k = cfg.top_k if cfg.top_k and cfg.top_k > 0 else None
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


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="generate")
def main(cfg: DictConfig) -> None:
    for i, text in enumerate(generate(cfg)):
        if i:
            print("\n" + "-" * 40)
        print(text)


if __name__ == "__main__":
    main()
