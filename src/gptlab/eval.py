"""``gptlab-eval``: test a checkpoint on a data set's test split; the checkpoint alone rebuilds the model.

gptlab-eval ckpt_path=logs/train/runs/<time>/checkpoints/best-step000600.ckpt
gptlab-eval ckpt_path=... data.path=other.jsonl
gptlab-eval ckpt_path=... data=corpus data.path=<any text> data.eval_sets='{kjv: kjv.txt}'  (an LM)
"""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.run.board import log_hparams
from gptlab.run.entry import entry_point
from gptlab.run.hydra import instantiate_group
from gptlab.run.speed import resolve_auto_speed
from gptlab.tasks.registry import load_module, task_for_module


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the test split of ``cfg.data``; return the test metrics."""
    model = load_module(cfg.ckpt_path)
    with open_dict(cfg):
        # The checkpoint stands in for a model config: data configs may refer to ${model.backbone...}.
        cfg.model = OmegaConf.create(dict(model.hparams))
    OmegaConf.resolve(cfg)
    L.seed_everything(cfg.seed, workers=True)
    resolve_auto_speed(cfg)  # trainer.precision=auto

    # The checkpoint's tokenizer (and label names) decide how the data is encoded.
    datamodule = instantiate(cfg.data, **model.data_kwargs())
    task = task_for_module(model)
    if not isinstance(datamodule, task.datamodule_class()):
        raise ValueError(
            f"checkpoint '{cfg.ckpt_path}' holds a {type(model).__name__} but the data config makes a "
            f"{type(datamodule).__name__}; test a {task.name} on {task.data_hint}"
        )
    if hasattr(datamodule, "eval_sets"):  # a language model tests on them too (test/<name>/loss and bpb)
        model.eval_sets = list(datamodule.eval_sets)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hparams(cfg, loggers)
    trainer.test(model, datamodule=datamodule)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


main = entry_point(evaluate, "eval")


if __name__ == "__main__":
    main()
