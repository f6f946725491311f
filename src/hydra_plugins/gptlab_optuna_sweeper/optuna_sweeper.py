"""A Hydra sweeper that lets Optuna pick each job's overrides, on Hydra's public ``Sweeper`` API.

The study lives in ``hydra.sweeper.storage`` (by default ``optuna.db`` in the sweep directory), so running
the same command again resumes it: finished trials are kept, trials that were interrupted or failed are run
again with the same parameters, and only the trials still missing from ``n_trials`` are run. Job ``N`` of
the sweep directory is always trial ``N`` of the study (the pruning callback finds its trial that way).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.gptlab_optuna_sweeper.plots import save_plots
from hydra_plugins.gptlab_optuna_sweeper.search_space import SearchSpace

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler | functools.partial,
        pruner: optuna.pruners.BasePruner | None,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        params: DictConfig | None = None,
    ) -> None:
        if not isinstance(direction, str):
            raise ValueError(
                f"hydra.sweeper.direction={direction}: gptlab's jobs return one metric (optimized_metric), "
                "so the study has one direction: minimize or maximize"
            )
        if pruner is not None and storage is None:
            raise ValueError(
                "hydra.sweeper.pruner needs a storage (the jobs report their validation metric to the study "
                "through it): set hydra.sweeper.storage, or hydra.sweeper.pruner=null"
            )
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must be at least 1")
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)
        warn_if_sequential(self.launcher, self.n_jobs)

    def sweep(self, arguments: list[str]) -> None:
        space = SearchSpace.parse(self.params, arguments)
        if not space.distributions:
            raise ValueError(
                "nothing to search: give hydra.sweeper.params (see configs/hparams_search/) or a sweep on "
                "the command line, such as 'model.optimizer.lr=tag(log, interval(1e-4, 1e-2))'"
            )
        sampler = self.sampler
        if isinstance(sampler, functools.partial):  # the grid sampler takes the search space
            sampler = sampler(search_space=space.grid())
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the sqlite file's directory
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            sampler=sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        self._check_same_command(study)
        again = self._retry_unfinished(study)
        todo = self.n_trials - sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        log.info(
            f"Optuna study '{self.study_name}' ({self.storage or 'in memory'}): "
            f"{self.n_trials - todo} of {self.n_trials} trials finished; running {max(todo, 0)} "
            f"({again} of them again, as they were interrupted or failed)"
        )
        failed = ran = 0
        self._grid_done = False
        while todo > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, todo))]
            for trial, job in zip(trials, self._launch(trials, space), strict=True):
                failed += self._tell(study, trial, job) == TrialState.FAIL
            ran += len(trials)
            todo -= len(trials)
            if self._grid_done:
                log.info(f"the grid sampler has run every combination ({ran} trials in this session)")
                break
            if failed / ran > self.max_failure_rate:
                raise RuntimeError(
                    f"{failed} of {ran} trials failed, more than hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}; see the failed jobs' logs in {self.sweep_dir}"
                )
        self._report(study)

    def _check_same_command(self, study: optuna.Study) -> None:
        """A study resumed with other overrides (another experiment, model, ...) would mix two searches."""
        command = list(self.config.hydra.overrides.task)
        earlier = study.user_attrs.get("overrides")
        if earlier is None:
            study.set_user_attr("overrides", command)
        elif sorted(earlier) != sorted(command):
            raise ValueError(
                f"study '{self.study_name}' in {self.storage} was run with the overrides {earlier}, not "
                f"{command}. Run the same command to resume it, or start another study with "
                "hydra.sweeper.study_name=<new name>."
            )

    @staticmethod
    def _retry_unfinished(study: optuna.Study) -> int:
        """Trials left running by an interrupted sweep are marked failed; each failed trial that was not
        retried yet is queued again with its parameters."""
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        again = 0
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                study.tell(trial.number, state=TrialState.FAIL)
            if trial.state in (TrialState.RUNNING, TrialState.FAIL) and trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                again += 1
        return again

    def _launch(self, trials: list[optuna.Trial], space: SearchSpace) -> list[JobReturn]:
        """Launch the trials as jobs numbered like the trials (consecutive numbers in one launch)."""
        overrides = [space.suggest(trial) for trial in trials]
        self.validate_batch_is_legal(overrides)
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(trials) + 1):
            if end == len(trials) or trials[end].number != trials[end - 1].number + 1:
                batch: Sequence[Sequence[str]] = overrides[start:end]
                returns += self.launcher.launch(batch, initial_job_idx=trials[start].number)
                start = end
        return returns

    def _tell(self, study: optuna.Study, trial: optuna.Trial, job: JobReturn) -> TrialState:
        value: Any = job._return_value  # a failed job's exception, read without raising it
        if job.status == JobStatus.COMPLETED and isinstance(value, int | float) and math.isfinite(value):
            state, values = TrialState.COMPLETE, float(value)
        else:
            state = TrialState.PRUNED if isinstance(value, optuna.TrialPruned) else TrialState.FAIL
            values = None
        try:
            study.tell(trial, values, state=state)
        except RuntimeError:
            # The grid sampler calls study.stop() once its grid is done, which only study.optimize() allows;
            # the trial is recorded before that.
            if not isinstance(study.sampler, optuna.samplers.GridSampler):
                raise
            self._grid_done = True
        return state

    def _report(self, study: optuna.Study) -> None:
        """optimization_results.yaml with the best trial, and the plots, in the sweep directory."""
        if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            log.warning(f"no trial of study '{self.study_name}' completed; no best trial and no plots")
            return
        best = {"name": self.study_name, "best_params": study.best_params, "best_value": study.best_value}
        (self.sweep_dir / "optimization_results.yaml").write_text(OmegaConf.to_yaml(best))
        log.info(f"best trial: {study.best_trial.number}, value {study.best_value}, {study.best_params}")
        save_plots(study, self.sweep_dir)


def warn_if_sequential(launcher: Launcher, n_jobs: int) -> None:
    """Hydra's basic launcher runs the jobs of a launch one after another, so n_jobs > 1 gains nothing."""
    if n_jobs > 1 and type(launcher).__name__ == "BasicLauncher":
        log.warning(
            f"warning: hydra.sweeper.n_jobs={n_jobs}, but hydra/launcher=basic runs trials one after another;"
            " hydra/launcher=parallel (the search configs' default) runs them at once"
        )
