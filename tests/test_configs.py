"""Every config composes, mirrors its constructor, and typos get Hydra's clear errors."""

from __future__ import annotations

import inspect

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

from gptlab import CONFIG_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


CPU_TRAINERS = [t for t in options("trainer") if t not in {"gpu", "ddp", "mps"}]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_resolves(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    assert "${" not in OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_composes(compose_train, trainer):
    cfg = compose_train(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"
    assert cfg.trainer.max_steps == 2000  # every trainer keeps the step-based defaults


@pytest.mark.parametrize("debug", options("debug"))
def test_every_debug_config_composes(compose_train, debug):
    cfg = compose_train(f"debug={debug}")
    assert cfg.trainer.accelerator == "cpu"


def test_unknown_experiment_names_the_choices(compose_train):
    with pytest.raises(
        ConfigCompositionException, match=r"(?s)shakespear_char.*Available options.*shakespeare_char"
    ):
        compose_train("experiment=shakespear_char")


def test_override_of_a_missing_key_is_refused(compose_train):
    with pytest.raises(ConfigCompositionException, match=r"(?s)Could not override .model.lr.*\+model.lr=0.1"):
        compose_train("model.lr=0.1")


def _targets(node, found):
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append(node)
        for key in node:
            if not OmegaConf.is_missing(node, key):  # `???`: a value the user must pass
                _targets(node[key], found)
    return found


@pytest.mark.parametrize("experiment", options("experiment"))
def test_config_keys_are_constructor_arguments(compose_train, experiment):
    """A key in YAML is an argument of the `_target_` beside it (configs mirror constructors)."""
    cfg = compose_train(f"experiment={experiment}")
    for node in _targets(cfg, []):
        try:
            target = get_class(node._target_)
            params = inspect.signature(target.__init__).parameters
        except ValueError:
            params = inspect.signature(get_method(node._target_)).parameters
        accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in node if not k.startswith("_") and k not in params]
        assert accepts_kwargs or not unknown, f"{node._target_} takes no {unknown}"


def test_slurm_launcher_composes(compose_train):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train("hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", keep_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.nodes == 2 and launcher.tasks_per_node == launcher.gpus_per_node == 1


def test_the_parallel_launcher_runs_as_many_jobs_as_the_optuna_sweeper_asks(compose_train):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    search = compose_train("hparams_search=shakespeare_optuna", "hydra.sweeper.n_jobs=3", keep_hydra=True)
    assert search.hydra.launcher._target_ == joblib and search.hydra.launcher.n_jobs == 3
    grid = compose_train("hydra/launcher=parallel", keep_hydra=True)
    assert grid.hydra.launcher._target_ == joblib and grid.hydra.launcher.n_jobs == -1  # one per core
    slurm = compose_train("hparams_search=shakespeare_optuna", "hydra/launcher=slurm", keep_hydra=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")  # the command line's launcher wins


@pytest.mark.parametrize(
    ("search", "experiment", "direction"),
    [("shakespeare_optuna", "shakespeare_char", "minimize"), ("austen_optuna", "austen_scratch", "maximize")],
)
def test_optuna_searches_compose_with_their_experiment(compose_train, search, experiment, direction):
    cfg = compose_train(f"hparams_search={search}", f"experiment={experiment}", keep_hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.gptlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == direction and sweeper.sampler.seed == 1234
    assert {"max": "maximize", "min": "minimize"}[cfg.optimized_metric_mode] == direction
    assert sweeper.params["model.optimizer.lr"].startswith("tag(log, interval(")
    for key in sweeper.params:  # every searched key exists in the experiment's config
        assert OmegaConf.select(cfg, key) is not None, key
