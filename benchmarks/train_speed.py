"""Training speed of gptlab's Lightning path against a plain PyTorch loop written like nanoGPT's.

Each variant is a Lightning run of experiment=shakespeare_char (plus the variant's overrides) whose
steps alternate A B A B with a plain loop's steps: a callback runs one plain-loop step after each
Lightning step, so drift and contention on a shared machine hit both alike. Both start from the same
weights (two independent copies) and train on the same windows, in the same order, with the same
schedule, clipping and thread count; the plain loop always uses nanoGPT's CPU setup (default AdamW, no
compile, fp32). After training, both models are evaluated eagerly in fp32 on the same fixed validation
windows. With the same optimizer (`same_optimizer`) the two val losses agree to rounding: both paths
compute the same thing. The other variants differ from the plain loop only by their settings' numerics.

    python benchmarks/train_speed.py                 # every variant, steps 50-300
    python benchmarks/train_speed.py --variants same_optimizer --steps 600
    python benchmarks/train_speed.py --variants fast --steps 2000 --ranges 50-300 0-2000
    python benchmarks/train_speed.py --variants compile --matched  # Lightning's overhead at compile
    python benchmarks/train_speed.py --smoke         # a few steps, for the test suite
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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
from gptlab.run.hydra import compose_config, instantiate_group
from gptlab.run.speed import resolve_auto_speed

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
# name -> overrides of the Lightning run
VARIANTS = {
    "same_optimizer": ["model.optimizer.fused=false"],  # Lightning's overhead alone
    "default": [],  # gptlab as configured (fused AdamW)
    "compile": ["model.compile=true"],  # + torch.compile
    # bf16 autocast (attention kept in fp32) + compile, with unfused AdamW: Lightning refuses clipping
    # with a fused optimizer under mixed precision (configs/experiment/shakespeare_char_fast.yaml)
    "fast": ["experiment=shakespeare_char_fast"],
}


class PlainLoop:
    """nanoGPT's training loop: gather a batch of windows, forward, backward, clip, step.

    ``starts`` (steps, batch) holds each step's window offsets. nanoGPT draws them with torch.randint
    each step; here they are the Lightning loader's draws, so both paths train on the same tokens.
    """

    def __init__(self, model: torch.nn.Module, optimizer, scheduler, tokens: np.ndarray,
                 starts: torch.Tensor, block_size: int, clip: float) -> None:  # fmt: skip
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.tokens, self.starts, self.block_size, self.clip = tokens, starts.tolist(), block_size, clip
        self.losses: list[float] = []

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        windows = [
            torch.from_numpy(self.tokens[i : i + self.block_size + 1].astype(np.int64))
            for i in self.starts[step]
        ]
        batch = torch.stack(windows)
        return batch[:, :-1], batch[:, 1:]

    def step(self, step: int) -> None:
        inputs, targets = self.get_batch(step)
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
    """Time each Lightning step, then run (and time) one plain-loop step; step ``i`` of both lists is
    optimizer step ``i`` (step 0 includes a compile's first pass)."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning_ms: list[float] = []
        self.plain_ms: list[float] = []
        self.same_batches = True
        self._mark = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.lightning_ms.append((now - self._mark) * 1e3)
        step = len(self.plain_ms)
        # untimed: the plain loop must read the very windows Lightning just trained on
        self.same_batches &= torch.equal(batch[0], self.plain.get_batch(step)[0])
        start = time.perf_counter()
        self.plain.step(step)
        self._mark = time.perf_counter()
        self.plain_ms.append((self._mark - start) * 1e3)


def lightning_windows(datamodule, steps: int) -> torch.Tensor:
    """The start offsets (steps, batch) of the training windows the Lightning loader reads, in order:
    its sampler's global batches, epoch after epoch (one process, no accumulation)."""
    sampler = datamodule.train_dataloader().sampler
    batches = []
    for epoch in range(math.ceil(steps / sampler.steps)):
        sampler.set_epoch(epoch)
        batches.append(sampler.global_batches())
    train = datamodule.datasets["train"]
    return train.start + train.stride * torch.cat(batches)[:steps]


def shared_parameters(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    """Names of ``a``'s parameters that share storage with one of ``b``'s (none for true copies)."""
    storages = {p.untyped_storage().data_ptr() for p in b.parameters()}
    return [name for name, p in a.named_parameters() if p.untyped_storage().data_ptr() in storages]


def timing(lightning_ms: list[float], plain_ms: list[float], first: int, last: int, tokens: int) -> dict:
    """Median and mean ms per step of both paths over steps ``first`` .. ``last - 1``."""
    a, b = lightning_ms[first:last], plain_ms[first:last]
    lightning, plain = statistics.median(a), statistics.median(b)
    return {
        "lightning_ms_per_step": round(lightning, 3),
        "plain_ms_per_step": round(plain, 3),
        "lightning_tokens_per_s": round(tokens / lightning * 1e3),
        "plain_tokens_per_s": round(tokens / plain * 1e3),
        "lightning_over_plain_throughput": round(plain / lightning, 3),
        # wall time of the whole range, compile and any stall included
        "lightning_total_s": round(sum(a) / 1e3, 2),
        "plain_total_s": round(sum(b) / 1e3, 2),
        "lightning_over_plain_total": round(sum(b) / sum(a), 3),
    }


def measure(overrides: list[str], steps: int, ranges: list[tuple[int, int]], threads: int,
            matched: bool = False) -> dict:  # fmt: skip
    """Median ms/step and tokens/s of one Lightning run and its interleaved plain loop over each range
    of steps, and both models' val loss at the end. ``matched``: the plain loop takes the run's own
    optimizer settings and compile, so the ratio is Lightning's overhead at that configuration."""
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-", ignore_cleanup_errors=True) as out_dir:
        return _measure(overrides, steps, ranges, threads, matched, out_dir)


def _measure(overrides: list[str], steps: int, ranges: list[tuple[int, int]], threads: int,
             matched: bool, out_dir: str) -> dict:  # fmt: skip
    torch.set_num_threads(threads)
    # a variant may name its own experiment (one built on shakespeare_char)
    own_experiment = any(o.startswith("experiment=") for o in overrides)
    cfg = compose_config(
        *([] if own_experiment else ["experiment=shakespeare_char"]),
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
    resolve_auto_speed(cfg)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model, **datamodule.model_kwargs())

    plain_model = copy.deepcopy(model)
    settings = cfg.model.optimizer
    optimizer = torch.optim.AdamW(
        weight_decay_groups(plain_model), lr=settings.lr, betas=tuple(settings.betas),
        weight_decay=settings.weight_decay, **({"fused": settings.get("fused")} if matched else {}),
    )  # fmt: skip
    if matched and cfg.model.get("compile"):
        plain_model.backbone.compile()
    scheduler = instantiate(cfg.model.scheduler)(optimizer)
    train = datamodule.datasets["train"]
    plain = PlainLoop(
        plain_model, optimizer, scheduler, np.asarray(train.tokens), lightning_windows(datamodule, steps),
        cfg.model.backbone.block_size, cfg.trainer.gradient_clip_val,
    )  # fmt: skip

    timer = Interleave(plain)
    callbacks = [*instantiate_group(cfg.callbacks), timer]
    loggers = instantiate_group(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)

    tokens_per_step = cfg.data.batch_size * cfg.model.backbone.block_size
    timings = {
        f"{first}-{last}": timing(timer.lightning_ms, timer.plain_ms, first, last, tokens_per_step)
        for first, last in ranges
    }
    # The trained weights in a fresh eager model (the same in fp32 for both paths, no recompile).
    evaluated = instantiate(cfg.model, **datamodule.model_kwargs(), compile=False)
    evaluated.load_state_dict(model.state_dict())
    return {
        "overrides": overrides,
        "threads": threads,
        "plain_matched": matched,
        "trained_steps": len(timer.plain_ms),
        **timings[f"{ranges[0][0]}-{ranges[0][1]}"],  # the first range, at the top level
        "ranges": timings,
        "same_batches": timer.same_batches,
        "shared_parameters": shared_parameters(model, plain_model),
        "parameters_differ": any(
            not torch.equal(a, b) for a, b in zip(model.parameters(), plain_model.parameters(), strict=True)
        ),
        # the fixed validation windows gptlab-train evaluates, token-weighted (unrounded: with different
        # optimizers the two differ, if only in the last digits)
        "lightning_val_loss": val_loss(evaluated, datamodule),
        "plain_val_loss": val_loss(plain_model, datamodule),
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
    parser.add_argument(
        "--ranges", nargs="+", metavar="FIRST-LAST",
        help="step ranges to report, e.g. 50-300 0-2000 (default: SKIP-STEPS)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--matched", action="store_true",
        help="the plain loop takes each run's optimizer settings and compile (not its precision): "
        "the ratio is then Lightning's own overhead at that configuration",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a few steps of one variant (for tests)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = parser.parse_args()
    # smoke: same_optimizer (both paths compute the same) and default (a different optimizer)
    steps, skip = (12, 2) if args.smoke else (args.steps, args.skip)
    variants = ["same_optimizer", "default"] if args.smoke else args.variants
    ranges = [(skip, steps)]
    if args.ranges and not args.smoke:
        ranges = [tuple(int(x) for x in r.split("-")) for r in args.ranges]
    if any(not 0 <= first < last <= steps for first, last in ranges):
        parser.error(f"every range FIRST-LAST needs 0 <= FIRST < LAST <= --steps ({steps})")

    # smoke: the val loss on 48 evenly spaced windows instead of all ~1,700
    overrides = [*args.overrides, *(["data.max_eval_windows=48"] if args.smoke else [])]
    results = {
        name: measure(VARIANTS[name] + overrides, steps, ranges, args.threads, args.matched)
        for name in variants
    }
    plain = "the run's optimizer and compile" if args.matched else "default AdamW, no compile"
    print(f"\n{args.threads} threads; plain = nanoGPT-style loop ({plain}, fp32)")
    for first, last in ranges:
        print(f"\nsteps {first}-{last}: median ms/step, tokens/s; total = wall time of the range")
        print(
            f"{'variant':<16} {'gptlab ms':>10} {'plain ms':>9} {'gptlab tok/s':>13} {'plain tok/s':>12} "
            f"{'ratio':>6} {'gptlab s':>9} {'plain s':>8} {'ratio':>6}"
        )
        for name, result in results.items():
            r = result["ranges"][f"{first}-{last}"]
            print(
                f"{name:<16} {r['lightning_ms_per_step']:>10.2f} {r['plain_ms_per_step']:>9.2f} "
                f"{r['lightning_tokens_per_s']:>13,} {r['plain_tokens_per_s']:>12,} "
                f"{r['lightning_over_plain_throughput']:>6.3f} {r['lightning_total_s']:>9.1f} "
                f"{r['plain_total_s']:>8.1f} {r['lightning_over_plain_total']:>6.3f}"
            )
    print(f"\nval loss after {steps} steps (same fixed validation windows, fp32 eval)")
    print(f"{'variant':<16} {'gptlab':>8} {'plain':>8} {'same batches':>13}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['lightning_val_loss']:>8.4f} {r['plain_val_loss']:>8.4f} "
            f"{str(r['same_batches']):>13}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
