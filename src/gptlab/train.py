"""``gptlab-train``: pretrain a GPT, or train a classifier, from the Hydra config in ``configs/train.yaml``.

gptlab-train experiment=shakespeare_char trainer.max_steps=500
gptlab-train experiment=austen_finetune model.pretrained=path/to/pretraining/last.ckpt
gptlab-train experiment=gpt2_classify model.pretrained_hf=path/to/hf/gpt2
"""

from __future__ import annotations

import copy
import logging
import pickle

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gptlab.callbacks.last_step import ValidateLastStep
from gptlab.checkpoints import fit
from gptlab.checkpoints.read import Checkpoint
from gptlab.data.sampling import BatchPlan
from gptlab.run.board import link_board_run, log_hparams
from gptlab.run.dirs import newest_resumable_checkpoint
from gptlab.run.entry import entry_point
from gptlab.run.hydra import (
    RunStopped,
    instantiate_group,
    refuse_script_launcher_in_sweep,
)
from gptlab.run.record import hold_run_log, log_checkpoint_path, record_run, summarize_run
from gptlab.run.speed import resolve_auto_speed
from gptlab.tokenization import Tokenizer, UnknownCharactersError, run_tokenizer

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Seed; build callbacks, loggers, trainer, data and model from ``cfg``; check that the run may write
    in its directory, then record it; fit (or resume); test the best checkpoint; return the value of
    ``cfg.optimized_metric`` (for sweeps)."""
    hold_run_log()  # nothing reaches the run directory before check_resumable
    composed = copy.deepcopy(cfg)
    OmegaConf.resolve(cfg)  # nothing like ${hydra:...} may reach a spawned process or a checkpoint
    L.seed_everything(cfg.seed, workers=True)
    resolve_auto_speed(cfg)  # trainer.precision=auto, model.compile=auto: this machine's choice

    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    refuse_missing_callbacks(cfg, trainer)
    refuse_script_launcher_in_sweep(trainer)
    if cfg.train and trainer.max_steps == 0:
        raise RunStopped(
            "trainer.max_steps=0 trains nothing; give the number of optimizer steps (e.g. "
            "trainer.max_steps=2000), or train=false to only test"
        )

    # A fine-tune reads its pretrained checkpoint once: the tokenizer and the backbone come from it.
    pretrained = Checkpoint.read(cfg.model.pretrained) if cfg.model.get("pretrained") else None
    datamodule = instantiate(cfg.data, tokenizer=build_tokenizer(cfg, pretrained))
    batch = BatchPlan.from_trainer(datamodule.batch_size, trainer)  # refuses a batch that does not divide
    rank_zero_info(batch.describe(datamodule.tokens_per_sample))
    datamodule.prepare_data()
    try:
        datamodule.setup("fit")  # fits the tokenizer (and learns the labels) that the model is built with
    except UnknownCharactersError as err:
        raise RunStopped(str(err)) from None
    model_kwargs = datamodule.model_kwargs()
    if pretrained is not None:
        model_kwargs["pretrained"] = pretrained  # the checkpoint as read, not its path to read again
    model = instantiate(cfg.model, **model_kwargs)
    del pretrained, model_kwargs  # the weights live in the model now; free the checkpoint's memory
    flops = model.backbone.flops_per_token() / 1e6  # training: forward and backward
    rank_zero_info(
        f"model: {model.backbone.num_parameters() / 1e6:.2f}M parameters, {flops:,.2f} MFLOP per token"
        + describe_frozen(model)
    )
    ckpt_path = resume_from(cfg.get("ckpt_path"), trainer) if cfg.train else None
    check_resumable(ckpt_path, model)
    warn_if_schedule_cannot_finish(cfg)
    record_run(cfg, composed)
    board = link_board_run(cfg, loggers)
    parameters = {"parameters": model.backbone.num_parameters()}
    log_hparams(cfg, loggers, batch=batch_hparams(batch, datamodule.tokens_per_sample), model=parameters)

    metrics = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(trainer.callback_metrics)
        log_best(trainer)
        log_checkpoint_path(trainer, loggers)
        stop_if_terminated(trainer)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        say_which_split_is_tested(datamodule)
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(trainer.callback_metrics)
        stop_if_terminated(trainer)

    summarize_run(cfg, trainer, metrics, board)
    return _optimized_metric(cfg, metrics)


def refuse_missing_callbacks(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Every callback is a config entry (configs/callbacks/); the one a run cannot do without is the last
    step's validation when the metric a sweep reads would otherwise never be logged."""
    interval = trainer.val_check_interval
    validates_last = isinstance(interval, int) and trainer.max_steps > 0 and trainer.max_steps % interval == 0
    if (
        cfg.train
        and not trainer.fast_dev_run
        and (cfg.get("optimized_metric") or "").startswith("val/")
        and not validates_last
        and not any(isinstance(c, ValidateLastStep) for c in trainer.callbacks)
    ):
        raise RunStopped(
            f"callbacks.validate_last_step is off, so a run of trainer.max_steps={trainer.max_steps} with "
            f"trainer.val_check_interval={interval} never validates at its end and optimized_metric="
            f"{cfg.optimized_metric} may never be logged; keep callbacks.validate_last_step, make max_steps "
            "a multiple of val_check_interval, or set optimized_metric=null"
        )


def stop_if_terminated(trainer: L.Trainer) -> None:
    """Stop on a SIGTERM that came after a stage's last batch (a checkpoint, the baseline's fit): Lightning
    acts on it only between batches, and its next stage would forget it, so a sweep would start its next
    job instead of ending."""
    if trainer.received_sigterm:
        raise SIGTERMException


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


def check_resumable(ckpt_path: str | None, model: L.LightningModule) -> None:
    """Refuse, before anything is written in the run directory, a checkpoint this model cannot continue:
    weights of other shapes, texts preprocessed otherwise, or token ids from another tokenizer."""
    if ckpt_path is None:
        return
    try:
        # mmap: only the shapes are read here; Lightning loads the checkpoint again to resume
        fit.check_fits(
            Checkpoint.read(ckpt_path, mmap=True),
            model,
            fix="resume with the data and model config it was trained with, or start a new run without "
            "ckpt_path",
        )
    except (ValueError, FileNotFoundError, pickle.UnpicklingError) as err:  # CheckpointMismatch included
        raise RunStopped(f"cannot resume {ckpt_path}: {err}") from None


def say_which_split_is_tested(datamodule: L.LightningDataModule) -> None:
    """A data config without a test split (``test_fraction: 0``) tests on the validation split again."""
    splits = getattr(datamodule, "datasets", {})
    if "test" in splits and splits["test"] is splits.get("val"):
        rank_zero_info(
            "test: data.test_fraction=0, so the test stage evaluates the validation split (test/* is the "
            "best checkpoint's val/*); set data.test_fraction for a held-out test split"
        )


def warn_if_schedule_cannot_finish(cfg: DictConfig) -> None:
    """A warmup longer than the run never reaches the configured learning rate."""
    warmup = OmegaConf.select(cfg, "model.scheduler.warmup_steps")
    max_steps = OmegaConf.select(cfg, "trainer.max_steps")
    if warmup and max_steps and max_steps > 0 and warmup >= max_steps:
        log.warning(
            f"warning: model.scheduler.warmup_steps={warmup} >= trainer.max_steps={max_steps}: the learning "
            "rate never reaches model.optimizer.lr; shorten the warmup for a run this short"
        )


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


def _optimized_metric(cfg: DictConfig, metrics: dict) -> float | None:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise RunStopped(
            f"optimized_metric '{name}' was never logged; logged metrics: {sorted(metrics)}. "
            "Set optimized_metric to one of them."
        )
    return float(metrics[name])


def describe_frozen(model: torch.nn.Module) -> str:
    """How many parameters train when some are frozen (LoRA, ``model.trainable_blocks``), since the
    trainer's model summary is off; nothing when all of them train."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == total:
        return ""
    return f"; {trainable:,} of its {total:,} parameters train ({trainable / total:.1%}), the rest are frozen"


def log_best(trainer: L.Trainer) -> None:
    """``best/<monitor>``: the best checkpoint's score, a column of its own in TensorBoard's HPARAMS."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.best_model_score is None:
        return
    for logger in trainer.loggers:
        logger.log_metrics(
            {f"best/{checkpoint.monitor}": float(checkpoint.best_model_score)}, trainer.global_step
        )


main = entry_point(train, "train")


if __name__ == "__main__":
    main()
