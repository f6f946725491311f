"""``gptlab-export``: write a checkpoint's model for use outside gptlab; the checkpoint alone is enough.

gptlab-export ckpt_path=path/to/last.ckpt format=hf out=exports/my-gpt2
gptlab-export ckpt_path=path/to/last.ckpt format=safetensors out=exports/my-model

``hf``: a directory ``transformers.GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer`` load (the
backbone must be GPT-2-compatible). ``safetensors``: the whole module's weights plus its config and
tokenizer as JSON, for :func:`gptlab.checkpoints.formats.load_safetensors`. A classifier trained
with LoRA is exported with its adapters merged into the weights: a plain model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gptlab.checkpoints.formats import export_hf, export_safetensors
from gptlab.run.entry import entry_point
from gptlab.tasks.registry import load_module

log = logging.getLogger(__name__)

WRITERS = {"hf": export_hf, "safetensors": export_safetensors}


def export(cfg: DictConfig) -> list[Path]:
    """Export ``cfg.ckpt_path`` in ``cfg.format`` to the directory ``cfg.out``; return the files written."""
    if cfg.format not in WRITERS:
        raise ValueError(f"format={cfg.format!r} is not one of {sorted(WRITERS)}")
    out = Path(cfg.out).expanduser()
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(
            f"'{out}' already holds files; choose another out=, or pass overwrite=true to write over them"
        )
    model = load_module(cfg.ckpt_path).for_export()
    files = WRITERS[cfg.format](model, out)
    log.info("exported %s as %s: %s", cfg.ckpt_path, cfg.format, ", ".join(str(file) for file in files))
    return files


main = entry_point(export, "export")


if __name__ == "__main__":
    main()
