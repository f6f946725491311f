"""Loss curves for the speedrun search (benchmarks/MEASUREMENTS.md, section 7): gptlab's own model,
optimizers and schedules in a plain loop, validated on all of shakespeare_char's val windows. Not a timing
tool. Each argument is one run's JSON, e.g.

    python benchmarks/speedrun_search.py '{"name": "muon", "steps": 800, "evals": [400, 800], "opt": "muon",
        "lr": 3e-3, "sched": "wsd", "warmup": 50, "decay": 0.4, "min_lr": 0.0, "qk_norm": true}'
"""

import functools
import json
import sys
import time
from pathlib import Path

import torch

from gptlab.models.optim import MuonAdamW, warmup_cosine, warmup_stable_decay
from gptlab.tasks.lm import GPTModule

text = (Path(__file__).parents[1] / "data" / "shakespeare_char.txt").read_text(encoding="utf-8").read()
raw = text.encode("utf-8")
cut = len(raw) - int(0.1 * len(raw))
train_text, val_text = raw[:cut].decode("utf-8", "ignore"), raw[cut:].decode("utf-8", "ignore")
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
train_ids = torch.tensor([stoi[c] for c in train_text])
val_ids = torch.tensor([stoi[c] for c in val_text])
V = len(chars)


def val_loss(model, T=64):
    n = (len(val_ids) - 1) // T
    x = val_ids[: n * T].view(n, T)
    y = val_ids[1 : n * T + 1].view(n, T)
    model.eval()
    tot = 0.0
    with torch.no_grad():
        for i in range(0, n, 256):
            logits = model(x[i : i + 256])
            tot += torch.nn.functional.cross_entropy(
                logits.reshape(-1, V), y[i : i + 256].reshape(-1), reduction="sum"
            ).item()
    model.train()
    return tot / (n * T)


def run(
    name,
    steps,
    evals,
    batch=12,
    T=64,
    opt="adamw",
    lr=1e-3,
    sched="cosine",
    warmup=100,
    decay=0.3,
    min_lr=1e-4,
    wd=0.1,
    betas=(0.9, 0.99),
    adam_lr=None,
    clip=1.0,
    seed=1337,
    **backbone,
):
    torch.manual_seed(seed)
    bb = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, **backbone}
    if opt == "muon":
        factory = functools.partial(
            MuonAdamW, lr=lr, weight_decay=wd, betas=betas, adam_lr=adam_lr, fused=True
        )
    else:
        factory = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=wd, betas=betas, fused=True)
    model = GPTModule(V, bb, optimizer=factory)
    o = model.configure_optimizers()["optimizer"]
    s = (
        warmup_cosine(o, warmup, steps, min_lr)
        if sched == "cosine"
        else warmup_stable_decay(o, steps, warmup, decay, min_lr)
    )
    g = torch.Generator().manual_seed(seed)
    out = []
    t_train = 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        ix = torch.randint(len(train_ids) - T - 1, (batch,), generator=g)
        x = torch.stack([train_ids[i : i + T] for i in ix])
        y = torch.stack([train_ids[i + 1 : i + T + 1] for i in ix])
        loss = model._loss((x, y))
        o.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        o.step()
        s.step()
        t_train += time.perf_counter() - t0
        if step in evals:
            out.append((step, round(val_loss(model, T), 3)))
    print(json.dumps({"name": name, "ms_per_step": round(1000 * t_train / steps, 1), "val": out}), flush=True)


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        kw = json.loads(spec)
        run(**kw)
