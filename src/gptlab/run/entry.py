"""The one pattern of gptlab's five commands: ``main = entry_point(task, "train")`` gives ``gptlab-train``,
which checks the command line, runs ``task(cfg)`` under Hydra, and ends in one line when the run stops."""

from __future__ import annotations

import difflib
import inspect
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from gptlab.run.hydra import (
    check_config_dir,
    multirun_flag_first,
    refuse_unknown_settings,
    require_optional_packages,
    run_task,
    settings_of,
)

Task = Callable[[DictConfig], Any]


def entry_point(task: Task, config_name: str) -> Callable[[], None]:
    """``main()`` of ``gptlab-<config_name>``: ``-m`` anywhere, missing optional packages and keys that no
    config has or nothing reads refused in one line, ``task`` run by :func:`run_task`, and a SIGTERM
    ending the process with status 143 (Lightning stops on it with a bare exit status 0)."""

    @hydra.main(version_base="1.3", config_path=check_config_dir(), config_name=config_name)
    def hydra_main(cfg: DictConfig) -> Any:
        return run_task(task, cfg)

    def main() -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        argv = multirun_flag_first(sys.argv[1:])
        require_optional_packages(argv)
        refuse_unknown_settings(argv, config_name)
        refuse_unknown_keys(argv, config_name)
        sys.argv[1:] = argv
        try:
            hydra_main()
        except SIGTERMException:
            sys.exit(128 + signal.SIGTERM)

    return main


def refuse_unknown_keys(argv: Sequence[str], config_name: str) -> None:
    """Stop with one line naming the closest real key when an override names a key the composed config
    lacks (Hydra would advise ``+key=...``, which nothing reads) or appends one (``+key``) that no
    constructor takes. A sweep's values are checked with their first choice."""
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra reports a malformed override itself
    plain = []
    for override in parsed:
        if override.is_sweep_override():
            try:
                plain.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
            except Exception:  # noqa: BLE001 -- glob(...) over a group: checked with the group's default
                continue
        else:
            plain.append(override.input_line)
    cfg = _compose(config_name, plain)
    if cfg is None:
        return  # a composition error of another kind: Hydra reports it, with the options it has
    for override in parsed:
        key = override.key_or_group
        if override.package is not None or override.is_hydra_override() or override.is_delete():
            continue
        if override.is_add() and not override.is_force_add() and not _is_read(cfg, key, config_name):
            _refuse(config_name, key, cfg, f"+{key}")


def _compose(config_name: str, overrides: list[str]) -> DictConfig | None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=check_config_dir()):
            return compose(config_name, overrides=overrides)
    except HydraException as err:
        missing = re.search(r"Could not override '([^']+)'", str(err))
        if missing is None:
            return None
        key = missing[1]
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        _refuse(config_name, key, _compose(config_name, rest), key)
        return None
    finally:
        GlobalHydra.instance().clear()


def _is_read(cfg: DictConfig, key: str, config_name: str) -> bool:
    """Whether something reads an appended ``key``: a top-level setting, or an argument of the
    constructor (``_target_``) of the node it is added to."""
    parent, _, name = key.rpartition(".")
    if not parent:
        return name in settings_of(config_name)
    node = OmegaConf.select(cfg, parent)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return True  # a plain mapping (model.backbone, ...): its reader takes what it holds
    try:
        parameters = inspect.signature(get_object(node._target_)).parameters
    except (ImportError, ValueError, TypeError):
        return True
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return takes_any or name in parameters


def _refuse(config_name: str, key: str, cfg: DictConfig | None, shown: str) -> None:
    parent, _, name = key.rpartition(".")
    node = None if cfg is None else OmegaConf.select(cfg, parent) if parent else cfg
    siblings = [str(k) for k in node if str(k) != name] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else "check the spelling"
    raise SystemExit(
        f"error: gptlab-{config_name} has no setting '{shown}' (nothing reads it); {hint} "
        f"(`gptlab-{config_name} --cfg job` prints every setting)"
    )
