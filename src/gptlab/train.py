"""``gptlab-train``: pretrain a GPT, or train a classifier, from the Hydra config in ``configs/train.yaml``.

gptlab-train experiment=shakespeare_char trainer.max_steps=500
gptlab-train experiment=austen_finetune model.pretrained=path/to/pretraining/last.ckpt
gptlab-train experiment=gpt2_classify model.pretrained_hf=path/to/hf/gpt2
"""

from __future__ import annotations

import signal
import sys

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gptlab.data.sampling import BatchPlan
from gptlab.models.checkpoint import Checkpoint
from gptlab.run.dirs import newest_resumable_checkpoint
from gptlab.run.hydra import (
    check_config_dir,
    instantiate_group,
    refuse_script_launcher_in_sweep,
    require_optional_packages,
    run_task,
)
from gptlab.run.record import log_checkpoint_path, log_config, record_run
from gptlab.tokenization import Tokenizer, run_tokenizer


def train(cfg: DictConfig) -> float | None:
    """Seed; build callbacks, loggers, trainer, data and model from ``cfg``; fit (or resume); test the
    best checkpoint; return the value of ``cfg.optimized_metric`` (for sweeps)."""
    OmegaConf.resolve(cfg)  # nothing like ${hydra:...} may reach a spawned process or a checkpoint
    record_run(cfg)
    L.seed_everything(cfg.seed, workers=True)

    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    refuse_script_launcher_in_sweep(trainer)

    # A fine-tune reads its pretrained checkpoint once: the tokenizer and the backbone come from it.
    pretrained = Checkpoint.read(cfg.model.pretrained) if cfg.model.get("pretrained") else None
    datamodule = instantiate(cfg.data, tokenizer=build_tokenizer(cfg, pretrained))
    batch = BatchPlan.from_trainer(datamodule.batch_size, trainer)  # refuses a batch that does not divide
    rank_zero_info(batch.describe(datamodule.tokens_per_sample))
    datamodule.prepare_data()
    datamodule.setup("fit")  # fits the tokenizer (and learns the labels) that the model is built with
    model_kwargs = datamodule.model_kwargs()
    if pretrained is not None:
        model_kwargs["pretrained"] = pretrained  # the checkpoint as read, not its path to read again
    model = instantiate(cfg.model, **model_kwargs)
    del pretrained, model_kwargs  # the weights live in the model now; free the checkpoint's memory
    rank_zero_info(f"model: {model.backbone.num_parameters() / 1e6:.2f}M parameters")
    log_config(cfg, loggers, batch=batch_hparams(batch, datamodule.tokens_per_sample))

    metrics = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from(cfg.get("ckpt_path"), trainer))
        metrics.update(trainer.callback_metrics)
        log_checkpoint_path(trainer, loggers)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(trainer.callback_metrics)

    return _optimized_metric(cfg, metrics, trainer, loggers)


def batch_hparams(batch: BatchPlan, tokens_per_sample: int | None) -> dict[str, int]:
    """The effective batch, logged with the run's hyperparameters."""
    hparams = {"global_samples": batch.global_batch, "processes": batch.world_size}
    hparams |= {"accumulate": batch.accumulate, "micro_batch": batch.micro_batch}
    if tokens_per_sample:
        hparams["tokens_per_step"] = batch.global_batch * tokens_per_sample
    return hparams


def resume_from(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """``ckpt_path`` as ``trainer.fit`` takes it; ``last`` becomes the newest last or interrupted
    checkpoint of this run directory, or nothing (a fresh start) when it has none yet, so the same
    command both starts and resumes a pre-emptible job."""
    if ckpt_path != "last":
        return ckpt_path
    newest = newest_resumable_checkpoint(trainer.default_root_dir, run=".")
    if newest is None:
        rank_zero_info(
            f"ckpt_path=last: no checkpoint in {trainer.default_root_dir} yet; starting from scratch"
        )
        return None
    rank_zero_info(f"resuming from {newest}")
    return str(newest)


def build_tokenizer(cfg: DictConfig, pretrained: Checkpoint | None) -> Tokenizer:
    """The tokenizer this run encodes its data with (see :func:`gptlab.tokenization.run_tokenizer`):
    a fine-tune's pretrained checkpoint's, a Hugging Face GPT-2's own, or ``cfg.tokenizer``."""
    # throw_on_missing: an experiment's `pretrained_hf: ???` fails here, before the data is prepared
    pretrained_hf = OmegaConf.select(cfg, "model.pretrained_hf", throw_on_missing=True)
    saved = None if pretrained is None else pretrained.tokenizer()
    tokenizer = run_tokenizer(lambda: instantiate(cfg.tokenizer), saved, pretrained_hf)
    if saved is not None:
        rank_zero_info(
            f"tokenizer: {tokenizer.kind} ({tokenizer.vocab_size} tokens) from {pretrained.path}; "
            "the tokenizer config is not used"
        )
    return tokenizer


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
def hydra_main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


def main() -> None:
    require_optional_packages(sys.argv[1:])
    try:
        hydra_main()
    except SIGTERMException:
        # Lightning stops on SIGTERM with a bare SystemExit (status 0); a scheduler should see "terminated"
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
