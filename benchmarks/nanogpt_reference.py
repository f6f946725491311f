"""A standalone training loop that behaves like nanoGPT's ``train.py`` for its CPU shakespeare_char recipe.

Written here (nanoGPT was read for behaviour, not copied), it imports only torch, numpy and the standard
library, so its whole-process wall time is what a nanoGPT user waits. What it reproduces:

- data: nanoGPT's ``data/shakespeare_char/prepare.py``: the characters of the text (its first 1,115,394
  bytes), sorted into a vocabulary, the first 90% of characters for training and the rest for
  validation, written as uint16 ``train.bin`` / ``val.bin`` and a ``meta.pkl``, here in a cache dir;
- model: GPT-2 blocks with no biases (LayerNorms and Linears), the unpadded vocabulary, the head tied
  to the token embedding, nanoGPT's init (normal 0.02, residual projections 0.02/sqrt(2·n_layer)), built
  in nanoGPT's order, so that one seed gives nanoGPT's very weights and batches;
- loop: a batch of random windows drawn from a fresh memmap each step (the next one fetched between the
  forward and the backward), ``estimate_loss`` on ``eval_iters`` batches of train and of val every
  ``eval_interval`` iterations (and at 0 and at the end), a checkpoint when val improves, linear warmup
  then cosine decay to ``min_lr``, AdamW with decay on 2-D tensors only, gradient clipping at 1.0,
  iterations 0 to ``max_iters`` inclusive, torch's threads left as they are.

    python benchmarks/nanogpt_reference.py                       # the recipe: 2000 iterations
    python benchmarks/nanogpt_reference.py --max-iters 5 --eval-interval 5 --eval-iters 2 --out-json r.json

``--out-json`` writes wall_s (process start to end), first_step_s (process start to the first step done),
median_step_ms, eval_s (all estimate_loss calls), val_loss (the last evaluation's) and val_losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "data" / "shakespeare_char.txt"
# nanoGPT's shakespeare_char is tiny-shakespeare: 1,115,394 characters.
TEXT_BYTES = 1_115_394
RECIPE = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
    warmup_iters=100, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
)  # fmt: skip


def process_start() -> float:
    """When this process started (epoch seconds): Linux's /proc, else the time this module was loaded."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(stat[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return LOADED


LOADED = time.time()


def prepare(text_path: Path, data_dir: Path) -> int:
    """Write train.bin, val.bin and meta.pkl as nanoGPT's prepare.py does (unless already there for this
    text); returns the vocabulary size."""
    meta_path = data_dir / "meta.pkl"
    source = f"{text_path.resolve()}:{text_path.stat().st_size}:{text_path.stat().st_mtime_ns}"
    if meta_path.exists():
        meta = pickle.loads(meta_path.read_bytes())
        if meta.get("source") == source:
            return meta["vocab_size"]
    with open(text_path, "rb") as f:
        text = f.read(TEXT_BYTES).decode("utf-8", errors="ignore")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", text[:split]), ("val", text[split:])):
        np.array([stoi[ch] for ch in part], dtype=np.uint16).tofile(data_dir / f"{name}.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi, "source": source}
    meta_path.write_bytes(pickle.dumps(meta))
    return len(chars)


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.qkv(x).split(c, 2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        # The same construction order as nanoGPT's block, so the seeded default inits draw alike.
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.attn = SelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.fc_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = head.weight  # tied: the head's tensor, as in nanoGPT
        # nanoGPT's init, in its order: every weight N(0, 0.02) module by module (the tied one once more
        # for the head, which comes last), then the residual projections re-drawn, scaled for depth.
        with torch.no_grad():
            for module in [*self.modules(), head]:
                if isinstance(module, nn.Linear | nn.Embedding):
                    module.weight.normal_(0.0, 0.02)
            for block in self.blocks:
                for proj in (block.attn.proj, block.fc_proj):
                    proj.weight.normal_(0.0, 0.02 / math.sqrt(2 * n_layer))

    def num_params(self) -> int:
        """nanoGPT's count: every parameter once (the tied one once), position embeddings excluded."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]):
    """AdamW as nanoGPT builds it on CPU: weight decay on the 2-D tensors (matmuls, embeddings), none on
    the norms' gains; PyTorch's default (unfused) implementation."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_at(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT's get_lr: linear warmup to ``lr`` over ``warmup`` iterations, cosine to ``min_lr`` at
    ``decay_iters``, then ``min_lr``."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def get_batch(path: Path, block_size: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # A fresh memmap per batch, as nanoGPT does (a long-lived one grows the process's memory).
    data = np.memmap(path, dtype=np.uint16, mode="r")
    starts = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in starts])
    return x, y


def train(args: argparse.Namespace) -> dict:
    started = process_start()
    r = RECIPE
    data_dir = args.work_dir / "data" / "shakespeare_char"
    vocab_size = prepare(args.text, data_dir)
    out_dir = args.work_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = GPT(vocab_size, r["block_size"], r["n_layer"], r["n_head"], r["n_embd"])
    threads = torch.get_num_threads()
    print(f"number of parameters: {model.num_params() / 1e6:.2f}M, vocab {vocab_size}, threads {threads}")
    optimizer = make_optimizer(model, r["learning_rate"], r["weight_decay"], (r["beta1"], r["beta2"]))
    train_bin, val_bin = data_dir / "train.bin", data_dir / "val.bin"

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {}
        for split, path in (("train", train_bin), ("val", val_bin)):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                losses[k] = model(*get_batch(path, r["block_size"], r["batch_size"])).item()
            out[split] = losses.mean().item()
        model.train()
        return out

    x, y = get_batch(train_bin, r["block_size"], r["batch_size"])
    step_s: list[float] = []
    val_losses: dict[int, float] = {}
    eval_s, first_step_s, best_val = 0.0, None, float("inf")
    for it in range(args.max_iters + 1):
        lr = lr_at(it, r["learning_rate"], r["min_lr"], r["warmup_iters"], args.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % args.eval_interval == 0:
            t = time.perf_counter()
            losses = estimate_loss()
            eval_s += time.perf_counter() - t
            val_losses[it] = losses["val"]
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val:
                best_val = losses["val"]
                if it > 0:
                    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": it}
                    torch.save(state, out_dir / "ckpt.pt")
        t = time.perf_counter()
        loss = model(x, y)
        x, y = get_batch(train_bin, r["block_size"], r["batch_size"])  # between forward and backward
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t)
        if first_step_s is None:
            first_step_s = time.time() - started
        if it % args.log_interval == 0:
            print(f"iter {it}: loss {loss.item():.4f}, time {step_s[-1] * 1000:.2f}ms")
    return {
        "wall_s": time.time() - started,
        "first_step_s": first_step_s,
        "median_step_ms": 1000 * statistics.median(step_s),
        "eval_s": eval_s,
        "val_loss": val_losses[max(val_losses)],
        "val_losses": val_losses,
        "steps": len(step_s),
        "params": model.num_params(),
        "vocab_size": vocab_size,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-iters", type=int, default=2000, help="last iteration (also lr_decay_iters)")
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument(
        "--eval-iters", type=int, default=20, help="batches of train and of val per evaluation"
    )
    parser.add_argument("--log-interval", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--text", type=Path, default=TEXT, help="the corpus (its first 1,115,394 bytes)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "data" / ".cache" / "nanogpt_reference",
                        help="prepared data (data/shakespeare_char/) and the checkpoint (out/)")  # fmt: skip
    parser.add_argument("--out-json", type=Path, default=None, help="write the timings and losses here")
    args = parser.parse_args(argv)
    if args.max_iters < 0 or args.eval_interval < 1 or args.eval_iters < 1 or args.log_interval < 1:
        parser.error("--max-iters must be >= 0 and --eval-interval, --eval-iters, --log-interval >= 1")
    result = train(args)
    summary = {k: result[k] for k in ("wall_s", "first_step_s", "median_step_ms", "eval_s", "val_loss")}
    print(json.dumps(summary))
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
