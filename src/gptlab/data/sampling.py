"""Which rank reads which samples: one global batch cut into per-rank micro-batches, resumable mid-epoch.

gptlab's datamodules shard their data themselves (the trainer configs set
``use_distributed_sampler: false``), so that

- ``data.batch_size`` is the *global* batch: samples per optimizer step over all ranks and
  accumulation steps. The same seed gives the same global batches on 1 process or 8.
- validation windows are split without padding, so the synced val loss equals the single-process one;
- the training loader remembers how far into its epoch it got, and Lightning stores that in the
  checkpoint, so a resumed run reads the batches the interrupted one would have read next.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is cut: ``global_batch = world_size * accumulate * micro_batch``."""

    global_batch: int
    world_size: int = 1
    rank: int = 0
    accumulate: int = 1

    def __post_init__(self) -> None:
        parts = self.world_size * self.accumulate
        if self.global_batch % parts:
            raise ValueError(
                f"data.batch_size={self.global_batch} (the global batch) does not divide into "
                f"{self.world_size} process(es) x {self.accumulate} accumulation step(s); make it a "
                f"multiple of {parts}, or change trainer.devices / trainer.num_nodes / "
                "trainer.accumulate_grad_batches"
            )

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world_size * self.accumulate)

    @classmethod
    def from_trainer(cls, global_batch: int, trainer: Any | None) -> BatchPlan:
        """The plan for ``trainer``'s processes and accumulation (one process without a trainer)."""
        if trainer is None:
            return cls(global_batch)
        # num_nodes x num_devices: known from the config, before the processes are started
        world_size = trainer.num_nodes * trainer.num_devices
        return cls(global_batch, world_size, trainer.global_rank, trainer.accumulate_grad_batches)

    def describe(self, tokens_per_sample: int | None = None) -> str:
        tokens = f" = {self.global_batch * tokens_per_sample:,} tokens" if tokens_per_sample else ""
        return (
            f"batch: {self.global_batch} samples{tokens} per optimizer step "
            f"({self.world_size} process(es) x {self.accumulate} accumulation x {self.micro_batch} per "
            "micro-batch)"
        )


class GlobalBatchSampler(Sampler[int]):
    """Random training windows, ``steps`` optimizer steps per epoch, shared out by rank.

    Every epoch draws ``steps`` global batches of distinct window indices from a generator seeded with
    ``(seed, epoch)``. Rank ``r`` reads, for accumulation step ``k``, the micro-batch at position
    ``k * world_size + r`` of each global batch: ranks never read the same window in a step, and the
    union over ranks and accumulation is the single-process batch. ``set_epoch`` (called by Lightning)
    picks the epoch; ``skip`` drops the first indices of the next pass (resuming mid-epoch).
    """

    def __init__(self, num_windows: int, steps: int, plan: BatchPlan, seed: int = 0) -> None:
        if num_windows < plan.global_batch:
            raise ValueError(
                f"only {num_windows} training windows for a global batch of {plan.global_batch}; lower "
                "data.batch_size or model.backbone.block_size, or use a longer corpus"
            )
        self.num_windows = num_windows
        self.steps = steps
        self.plan = plan
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.plan.accumulate * self.plan.micro_batch

    def global_batches(self) -> torch.Tensor:
        """This epoch's window indices, shape (steps, global_batch); the same on every rank."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = torch.randint(self.num_windows, (self.steps, self.plan.global_batch), generator=generator)
        # Redraw the rare batch that drew a window twice: memory stays O(batch), whatever the corpus size.
        for row in range(self.steps):
            while batches[row].unique().numel() < batches.size(1):
                batches[row] = torch.randint(self.num_windows, (batches.size(1),), generator=generator)
        return batches

    def __iter__(self) -> Iterator[int]:
        plan = self.plan
        micro = self.global_batches().view(self.steps, plan.accumulate, plan.world_size, plan.micro_batch)
        mine = micro[:, :, plan.rank].reshape(-1)
        skip, self.skip = self.skip, 0
        return iter(mine[skip:].tolist())


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous share of ``num_samples`` indices, in order, without padding (shares
    differ by at most one sample), so every sample is evaluated exactly once over all ranks."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.start = num_samples * rank // world_size
        self.end = num_samples * (rank + 1) // world_size

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of texts of similar length, so padding wastes little compute.

    Training (``shuffle=True``): every epoch, a generator seeded with ``(seed, epoch)`` shuffles the
    indices; they are sorted by length within pools of ``pool_batches`` global batches, cut into global
    batches and the batches shuffled. Rank ``r`` reads micro-batch ``k * world_size + r`` of each global
    batch, as :class:`GlobalBatchSampler` does; with several processes or accumulation steps a last,
    incomplete global batch is dropped so that every rank takes the same number of steps.
    Evaluation (``shuffle=False``): the rank's contiguous share of the indices (:class:`ShardSampler`),
    sorted by length within pools, cut into micro-batches. ``bucket=False``: no sorting.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        plan: BatchPlan,
        shuffle: bool = True,
        pool_batches: int = 50,
        seed: int = 0,
        bucket: bool = True,
    ) -> None:
        self.lengths = torch.as_tensor(lengths)
        self.plan = plan
        self.shuffle = shuffle
        self.pool_batches = pool_batches
        self.seed = seed
        self.bucket = bucket
        self.epoch = 0
        self.skip = 0  # batches to drop from the next pass (resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _in_lockstep(self) -> bool:
        return self.plan.world_size * self.plan.accumulate > 1

    def __len__(self) -> int:
        plan, n = self.plan, len(self.lengths)
        if not self.shuffle:
            shard = ShardSampler(n, plan.rank, plan.world_size)
            return -(-len(shard) // plan.micro_batch)
        if self._in_lockstep():
            return n // plan.global_batch * plan.accumulate
        return -(-n // plan.global_batch)

    def _batches(self, order: torch.Tensor, size: int) -> list[torch.Tensor]:
        batches = []
        for pool in order.split(size * self.pool_batches):
            if self.bucket:  # a stable sort keeps the shuffled order among equal lengths
                pool = pool[torch.sort(self.lengths[pool], stable=True).indices]
            batches.extend(pool.split(size))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.lengths), generator=generator)
            batches = self._batches(order, plan.global_batch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
            if self._in_lockstep():
                batches = [b for b in batches if len(b) == plan.global_batch]
            micro = plan.micro_batch
            mine = [
                batch[(k * plan.world_size + plan.rank) * micro :][:micro]
                for batch in batches
                for k in range(plan.accumulate)
            ]
        else:
            shard = ShardSampler(len(self.lengths), plan.rank, plan.world_size)
            mine = self._batches(torch.arange(shard.start, shard.end), plan.micro_batch)
        skip, self.skip = self.skip, 0
        return (batch.tolist() for batch in mine[skip:])


class ResumableDataLoader(DataLoader):
    """A DataLoader that counts the batches it served this epoch and, having ``state_dict`` and
    ``load_state_dict`` (:data:`gptlab.run.lightning_private.StatefulLoader`), has that count saved by
    Lightning in every checkpoint; on resume its sampler skips them."""

    def __iter__(self) -> Iterator[Any]:
        served = getattr(self, "_resume_at", 0)
        self._resume_at = 0
        if served >= len(self):  # saved at the end of an epoch: the next one starts afresh
            served = 0
        if self.batch_size is None:  # batches come from a batch sampler (BucketBatchSampler)
            self.batch_sampler.skip = served
        else:
            self.sampler.skip = served * self.batch_size
        self._served = served
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches_served": getattr(self, "_served", 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = state["batches_served"]
