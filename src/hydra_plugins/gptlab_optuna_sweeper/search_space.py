"""The search space of an Optuna sweep, written in Hydra's override grammar (as hydra-optuna-sweeper 1.x read
it, so existing ``hparams_search`` configs keep working):

- ``choice(a, b, c)`` or ``a,b,c``: a categorical parameter;
- ``range(start, stop, step)``: an integer (or float) parameter on that grid, ``stop`` excluded;
- ``interval(low, high)``: a float in [low, high]; ``tag(log, interval(...))`` samples it on a log scale,
  ``tag(int, interval(...))`` (also with ``log``) as an integer;
- a plain value fixes the key for every trial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial


@dataclass
class SearchSpace:
    """Optuna distributions by override key, and the overrides every trial gets unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    # a categorical value's text in the override grammar (quoted where it needs to be)
    _choice_text: dict[str, dict[Any, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
        """``params`` (the config's ``hydra.sweeper.params``) first, then the command line's overrides:
        a later override of a key replaces an earlier one, so ``model.backbone.n_layer=2`` on the command
        line fixes a parameter that the search config samples."""
        lines = [f"{key}={value}" for key, value in (params or {}).items()]
        space = cls()
        for override in OverridesParser.create().parse_overrides([*lines, *arguments]):
            space.add(override)
        return space

    def add(self, override: Override) -> None:
        key = override.get_key_element()
        self.distributions.pop(key, None)
        self.fixed.pop(key, None)
        if not override.is_sweep_override():
            self.fixed[key] = override.get_value_element_as_str()
            return
        sweep = override.value()
        if override.is_choice_sweep():
            if override.value_type.name == "GLOB_CHOICE_SWEEP":
                raise ValueError(f"{override.input_line}: glob() cannot be searched by Optuna; use choice()")
            values = list(override.sweep_iterator())
            texts = list(override.sweep_string_iterator())
            if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
                values = texts  # lists and dicts are searched by their text
            self.distributions[key] = CategoricalDistribution(values)
            self._choice_text[key] = dict(zip(values, texts, strict=True))
        elif isinstance(sweep, RangeSweep):
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError(f"{override.input_line}: the range is empty")
            kind = IntDistribution if all(isinstance(v, int) for v in values) else FloatDistribution
            self.distributions[key] = kind(values[0], values[-1], step=sweep.step)
        elif isinstance(sweep, IntervalSweep):
            unknown = set(sweep.tags) - {"log", "int"}
            if unknown:
                raise ValueError(
                    f"{override.input_line}: unknown tag(s) {sorted(unknown)}; use log and/or int"
                )
            log = "log" in sweep.tags
            if "int" in sweep.tags:
                self.distributions[key] = IntDistribution(int(sweep.start), int(sweep.end), log=log)
            else:
                self.distributions[key] = FloatDistribution(sweep.start, sweep.end, log=log)

    def suggest(self, trial: Trial) -> list[str]:
        """Sample a trial's parameters; its overrides: the fixed ones, then the sampled ones."""
        overrides = [f"{key}={value}" for key, value in self.fixed.items()]
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                value = self._choice_text[key][trial.suggest_categorical(key, distribution.choices)]
            elif isinstance(distribution, IntDistribution):
                d = distribution
                value = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
            else:
                d = distribution
                value = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
            overrides.append(f"{key}={value}")
        return overrides

    def grid(self) -> dict[str, list]:
        """The search space as GridSampler takes it; every parameter must be enumerable."""
        grid = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[key] = list(distribution.choices)
            elif isinstance(distribution, IntDistribution) and not distribution.log:
                grid[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
            else:
                raise ValueError(
                    f"the grid sampler needs choice() or an integer range() for {key}, not {distribution}"
                )
        return grid
