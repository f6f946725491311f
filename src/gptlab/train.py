"""``gptlab-train``: pretrain a GPT from the Hydra config in ``configs/train.yaml``.

gptlab-train experiment=shakespeare_char trainer.max_steps=500
"""

from __future__ import annotations

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from gptlab.utils import check_config_dir, instantiate_group, log_config


def train(cfg: DictConfig) -> float | None:
    """Seed, build data, model, callbacks, loggers and trainer from ``cfg``; fit; test; return the
    value of ``cfg.optimized_metric`` (for sweeps)."""
    OmegaConf.resolve(cfg)  # nothing like ${hydra:...} may reach a spawned process or a checkpoint
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.prepare_data()
    datamodule.setup("fit")  # the fitted tokenizer fixes the vocabulary size
    model = instantiate(cfg.model, vocab_size=datamodule.tokenizer.vocab_size, tokenizer=datamodule.tokenizer)
    rank_zero_info(f"model: {model.backbone.num_parameters() / 1e6:.2f}M parameters")

    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_config(cfg, loggers)

    metrics = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(trainer.callback_metrics)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(trainer.callback_metrics)

    return _optimized_metric(cfg, metrics, trainer, loggers)


def _optimized_metric(cfg: DictConfig, metrics: dict, trainer: L.Trainer, loggers: list) -> float | None:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(
            f"optimized_metric '{name}' was never logged; logged metrics: {sorted(metrics)}. "
            "Set optimized_metric to one of them."
        )
    value = float(metrics[name])
    for logger in loggers:  # TensorBoard's HPARAMS tab shows hp_metric beside the run's config
        logger.log_metrics({"hp_metric": value}, step=trainer.global_step)
    return value


@hydra.main(version_base="1.3", config_path=check_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
