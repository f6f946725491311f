"""Training speed of gptlab's Lightning path against a plain PyTorch loop written like nanoGPT's.

Each variant is a Lightning run of experiment=shakespeare_char (plus the variant's overrides) whose
steps alternate A B A B with a plain loop's steps: a callback runs one plain-loop step after each
Lightning step, so drift and contention on a shared machine hit both alike. Both start from the same
weights and train on the same tokens with the same schedule, clipping and thread count; the plain loop
always uses nanoGPT's CPU setup (default AdamW, no compile).

    python benchmarks/train_speed.py                 # every variant, steps 50-300
    python benchmarks/train_speed.py --variants same_optimizer --steps 600
    python benchmarks/train_speed.py --smoke         # a few steps, for the test suite
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from gptlab import PROJECT_ROOT
from gptlab.models.optim import weight_decay_groups
from gptlab.utils import compose_config, instantiate_group

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
# name -> overrides of the Lightning run
VARIANTS = {
    "same_optimizer": ["model.optimizer.fused=false"],  # Lightning's overhead alone
    "default": [],  # gptlab as configured (fused AdamW)
    "compile": ["model.compile=true"],  # + torch.compile
}


class PlainLoop:
    """nanoGPT's training loop: random windows via torch.randint, forward, backward, clip, step."""

    def __init__(self, model: torch.nn.Module, optimizer, scheduler, tokens: np.ndarray, batch_size: int,
                 block_size: int, clip: float, seed: int = 1337) -> None:  # fmt: skip
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.tokens, self.batch_size, self.block_size, self.clip = tokens, batch_size, block_size, clip
        self.generator = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(
            len(self.tokens) - self.block_size, (self.batch_size,), generator=self.generator
        )
        windows = [
            torch.from_numpy(self.tokens[i : i + self.block_size + 1].astype(np.int64)) for i in starts
        ]
        batch = torch.stack(windows)
        return batch[:, :-1], batch[:, 1:]

    def step(self, step: int) -> None:
        inputs, targets = self.get_batch()
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        if step % 10 == 0:  # nanoGPT reads the loss back every log_interval steps
            self.losses.append(loss.item())


class Interleave(L.Callback):
    """Time each Lightning step, then run (and time) one plain-loop step."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning_ms: list[float] = []
        self.plain_ms: list[float] = []
        self._mark = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.lightning_ms.append((now - self._mark) * 1e3)
        self.plain.step(len(self.plain_ms))
        self._mark = time.perf_counter()
        self.plain_ms.append((self._mark - now) * 1e3)


def measure(overrides: list[str], steps: int, skip: int, threads: int) -> dict:
    """Median ms/step and tokens/s of one Lightning run and its interleaved plain loop."""
    torch.set_num_threads(threads)
    out_dir = tempfile.mkdtemp(prefix="gptlab-bench-")
    cfg = compose_config(
        "experiment=shakespeare_char",
        f"trainer.max_steps={steps}",
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
        "callbacks.text_sampler=null",
        f"paths.output_dir={out_dir}",
        *overrides,
    )
    L.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model, **datamodule.model_kwargs())

    plain_model = copy.deepcopy(model)
    settings = cfg.model.optimizer
    optimizer = torch.optim.AdamW(
        weight_decay_groups(plain_model), lr=settings.lr, betas=tuple(settings.betas),
        weight_decay=settings.weight_decay,
    )  # fmt: skip
    scheduler = instantiate(cfg.model.scheduler)(optimizer)
    train = datamodule.datasets["train"]
    plain = PlainLoop(
        plain_model, optimizer, scheduler, np.asarray(train.tokens[: len(train) + train.block_size]),
        cfg.data.batch_size, cfg.model.backbone.block_size, cfg.trainer.gradient_clip_val,
    )  # fmt: skip

    timer = Interleave(plain)
    callbacks = [*instantiate_group(cfg.callbacks), timer]
    loggers = instantiate_group(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)

    tokens_per_step = cfg.data.batch_size * cfg.model.backbone.block_size
    lightning = statistics.median(timer.lightning_ms[skip:])
    plain_ms = statistics.median(timer.plain_ms[skip:])
    return {
        "overrides": overrides,
        "steps": f"{skip}-{steps}",
        "threads": threads,
        "lightning_ms_per_step": round(lightning, 3),
        "plain_ms_per_step": round(plain_ms, 3),
        "lightning_tokens_per_s": round(tokens_per_step / lightning * 1e3),
        "plain_tokens_per_s": round(tokens_per_step / plain_ms * 1e3),
        "lightning_over_plain_throughput": round(plain_ms / lightning, 3),
        # the same fixed validation windows gptlab-train evaluates
        "lightning_val_loss": round(val_loss(model, datamodule), 4),
        "plain_val_loss": round(val_loss(plain_model, datamodule), 4),
    }


@torch.no_grad()
def val_loss(model: torch.nn.Module, datamodule) -> float:
    """Token-weighted cross-entropy over the validation windows."""
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in datamodule.val_dataloader():
        logits = model(inputs)
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every Lightning run")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=50, help="warm-up steps left out of the median")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a few steps of one variant (for tests)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = parser.parse_args()
    steps, skip = (12, 2) if args.smoke else (args.steps, args.skip)
    variants = ["same_optimizer"] if args.smoke else args.variants

    results = {name: measure(VARIANTS[name] + args.overrides, steps, skip, args.threads) for name in variants}
    print(f"\nsteps {skip}-{steps}, {args.threads} threads; plain = nanoGPT-style loop (default AdamW)")
    print(
        f"{'variant':<16} {'gptlab ms':>10} {'plain ms':>9} {'gptlab tok/s':>13} {'plain tok/s':>12} "
        f"{'ratio':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:<16} {r['lightning_ms_per_step']:>10.2f} {r['plain_ms_per_step']:>9.2f} "
            f"{r['lightning_tokens_per_s']:>13,} {r['plain_tokens_per_s']:>12,} "
            f"{r['lightning_over_plain_throughput']:>6.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
