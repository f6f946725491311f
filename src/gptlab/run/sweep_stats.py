"""Statistics over a sweep's repeats: jobs that differ only in a repeat axis (``seed``, ``data.fold``) are
one configuration, summarised per metric as mean, standard deviation and a 95% Student-t confidence
interval, and compared with a baseline configuration (Welch's interval for the difference of means)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

# Two-sided 95% quantiles of Student's t, t_{0.975}(df), for df = 1..30; beyond 30, the rows below (a df
# between two rows takes the smaller one's, so the interval is never narrower than it should be).
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
T975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))
Z975 = 1.960
PANELS_PER_ROW = 4  # of the summary plot, one panel per metric

# The metrics a summary reports, when a job has them: losses, accuracy and F1, a classifier's calibration
# and its classical baseline on the same split, and time to a target.
REPORTED = (
    "val/loss", "val/bpb", "val/acc", "test/loss", "test/bpb", "test/acc", "test/ece", "baseline/",
    "target/", "job/seconds",
)  # fmt: skip


def t975(df: float) -> float:
    """t_{0.975}(df) from the table (a fractional df, as Welch's gives, rounds down)."""
    df = math.floor(df)
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    return next((t for above, t in reversed(T975_LARGE) if df >= above), T975[-1]) if df < 1000 else Z975


def reported(name: str) -> bool:
    return name.startswith(REPORTED) or "f1" in name


def axis(override: str) -> str:
    """The key an override sets (``+seed=1`` and ``seed=1`` both set ``seed``)."""
    return override.split("=", 1)[0].lstrip("+~")


def as_hydra_writes(override: str) -> str:
    """An override as Hydra writes it in a job's overrides (``lr=1e-3`` is ``lr=0.001``, ``true`` is
    ``True``), so that a baseline typed either way finds its configuration."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_override(override)
    except OverrideParseException:
        return override
    return f"{parsed.get_key_element()}={parsed.get_value_element_as_str()}"


def describe(values: Sequence[float]) -> dict:
    """n, mean, sample standard deviation and the 95% t interval of the mean (None below two values)."""
    n, mean = len(values), statistics.mean(values)
    if n < 2:
        return {"n": n, "values": list(values), "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t975(n - 1) * std / math.sqrt(n)
    return {"n": n, "values": list(values), "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def difference(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """This configuration's mean minus the baseline's, with Welch's 95% interval when both have repeats."""
    diff = statistics.mean(values) - statistics.mean(baseline)
    if len(values) < 2 or len(baseline) < 2:
        return {"mean": diff, "ci95": None}
    va, vb = statistics.variance(values) / len(values), statistics.variance(baseline) / len(baseline)
    if va + vb == 0:
        return {"mean": diff, "ci95": [diff, diff]}
    df = (va + vb) ** 2 / (va**2 / (len(values) - 1) + vb**2 / (len(baseline) - 1))
    half = t975(df) * math.sqrt(va + vb)
    return {"mean": diff, "ci95": [diff - half, diff + half]}


def group(jobs: Iterable[dict], repeat: Sequence[str], baseline: str | None = None) -> dict:
    """The configurations of a sweep's jobs (dicts with ``job``, ``overrides``, ``status`` and
    ``metrics``), each with every reported metric's statistics over its completed repeats and, given a
    ``baseline`` (overrides, space-separated, that exactly one configuration has), the difference to it.
    Returns ``{"configurations": [...], "baseline": name or None, "baseline_error": message or None}``."""
    jobs = list(jobs)
    configs: dict[tuple[str, ...], dict] = {}
    for job in jobs:
        key = tuple(o for o in job["overrides"] if axis(o) not in repeat)
        config = configs.setdefault(key, {"overrides": list(key), "jobs": [], "failed": 0, "values": {}})
        config["jobs"].append(job["job"])
        if job["status"] != "completed":
            config["failed"] += 1
            continue
        for name, value in job.get("metrics", {}).items():
            if value is not None and math.isfinite(value) and reported(name):
                config["values"].setdefault(name, []).append(float(value))
    # the overrides every job shares are printed once above the tables, not in each name
    shared = set.intersection(*(set(k) for k in configs)) if configs else set()
    for key, config in configs.items():
        config["name"] = " ".join(o for o in key if o not in shared) or "(all jobs)"

    wanted = {as_hydra_writes(o) for o in baseline.split()} if baseline else set()
    matches = [c for c in configs.values() if wanted and wanted <= set(c["overrides"])]
    base, error = (matches[0], None) if len(matches) == 1 else (None, None)
    if wanted and len(matches) != 1:
        error = (
            f"baseline '{baseline}' matches {len(matches)} configurations, not one; give the overrides "
            f"that name exactly one of: {'; '.join(c['name'] for c in configs.values())}"
        )
    values = {id(c): c.pop("values") for c in configs.values()}
    for config in configs.values():
        mine = values[id(config)]
        config["metrics"] = {name: describe(v) for name, v in sorted(mine.items())}
        config["baseline"] = config is base
        if base is not None:
            for name, stats in config["metrics"].items():
                other = values[id(base)].get(name) if config is not base else None
                stats["diff"] = difference(mine[name], other) if other else None
    result = list(configs.values())
    return {"configurations": result, "baseline": base["name"] if base else None, "baseline_error": error}


def cell(stats: dict) -> str:
    """``mean ± std`` as the table shows it."""
    return f"{stats['mean']:.4g}" if stats["std"] is None else f"{stats['mean']:.4g} ± {stats['std']:.2g}"


def interval(ci: list[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def signed(diff: dict) -> str:
    """A difference to the baseline with its interval."""
    return f"{diff['mean']:+.4g} {interval(diff['ci95'])}"


def plot(configurations: list[dict], path: Path, title: str) -> Path | None:
    """One panel per metric: each configuration's mean with its 95% interval, and its repeats as dots
    (the baseline in another colour). None when no configuration has a value."""
    names = sorted({m for c in configurations for m in c["metrics"]})
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window (sweeps run on servers)
    import matplotlib.pyplot as plt

    labels = [c["name"] + (" (baseline)" if c["baseline"] else "") for c in configurations]
    # a classifier reports a dozen metrics: rows of PANELS_PER_ROW panels, not one strip metres wide
    cols = min(len(names), PANELS_PER_ROW)
    rows = math.ceil(len(names) / cols)
    width = 2 + 0.07 * max(len(label) for label in labels) + 3.5 * cols  # labels, then panels
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, rows * (1.2 + 0.45 * len(labels)) + 0.5), squeeze=False, sharey=True
    )
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        for row, config in enumerate(configurations):
            stats = config["metrics"].get(name)
            if stats is None:
                continue
            color = "tab:orange" if config["baseline"] else "tab:blue"
            ax.scatter(stats["values"], [row] * stats["n"], s=12, color=color, alpha=0.5)
            ci = stats["ci95"] or [stats["mean"], stats["mean"]]
            err = [[stats["mean"] - ci[0]], [ci[1] - stats["mean"]]]
            ax.errorbar([stats["mean"]], [row], xerr=err, fmt="o", color=color, capsize=3)
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels)  # shared by every panel
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}\nmean and 95% t interval; dots: single runs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
