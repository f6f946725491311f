"""The OmegaConf resolvers gptlab's configs use, registered wherever a config is composed: by gptlab's
entry points, and by Hydra itself through the ``hydra_plugins.gptlab_resolvers`` plugin, so that Hydra's
compose API (a test's or a notebook's) resolves ``${gptlab_root:}`` without importing anything first."""

from __future__ import annotations

from omegaconf import OmegaConf

from gptlab import PROJECT_ROOT
from gptlab.run.dirs import run_directory, writable_log_dir


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("gptlab_root", lambda: str(PROJECT_ROOT), replace=True)
    # cached: every reading in this process (Hydra's, Lightning's DDP launcher's) gets the same directory
    OmegaConf.register_new_resolver("gptlab_run_dir", run_directory, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("gptlab_log_dir", writable_log_dir, replace=True)


register_resolvers()
