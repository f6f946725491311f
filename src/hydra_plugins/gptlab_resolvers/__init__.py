"""Hydra imports every module under ``hydra_plugins`` when it starts (a run, a sweep, or the compose API);
importing this one registers gptlab's resolvers, and the search-path plugin does nothing else."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from gptlab.run.resolvers import register_resolvers


class GptlabResolvers(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_resolvers()  # again, in case another library replaced a resolver of the same name
