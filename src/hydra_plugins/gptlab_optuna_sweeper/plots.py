"""The plots of a study, as PNG files in the sweep directory and as figures in its TensorBoard events."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib
import optuna

log = logging.getLogger(__name__)


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """``optuna_{history,importances,parallel_coordinate}.png``, also in ``out_dir/tensorboard``'s IMAGES
    tab; a plot that the study cannot give yet (importances need two completed trials) is skipped."""
    matplotlib.use("Agg")  # sweeps run headless
    from optuna.visualization import matplotlib as plots
    from torch.utils.tensorboard import SummaryWriter

    makers = {
        "history": plots.plot_optimization_history,
        "importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    saved = []
    writer = SummaryWriter(str(out_dir / "tensorboard"))
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                figure = make(study).figure
        except (ValueError, RuntimeError) as err:
            log.info(f"no {name} plot: {err}")
            continue
        path = out_dir / f"optuna_{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        writer.add_figure(f"optuna/{name}", figure, global_step=len(study.trials))  # closes the figure
        saved.append(path)
    writer.close()
    log.info(f"plots: {', '.join(p.name for p in saved)} in {out_dir}")
    return saved
