"""What one ClientApp process knows of its run, read once per run and node config.

The institution's SecAgg+ mod and its client both need the run's typed
settings and this node's identity and folders for every message. In the
simulation engine one process serves many messages; in the Deployment Engine
each message may start a fresh process. Either way the conversion from
Flower's raw configs happens here, once per distinct config, and both callers
get the same immutable objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from flwr.app import Context

from federation.settings import RunSettings

from .node import InstitutionNode, resolve_node

#: Distinct (run config, node config) pairs a process keeps: a SuperNode
#: process serves one institution, a simulation a few at a time.
_KEPT = 16

_Items = tuple[tuple[str, object], ...]


def _items(config: Mapping[str, object]) -> _Items:
    return tuple(sorted((str(k), v) for k, v in config.items()))


@lru_cache(maxsize=_KEPT)
def _settings(run_config: _Items) -> RunSettings:
    return RunSettings.from_run_config(dict(run_config))


@lru_cache(maxsize=_KEPT)
def _node(node_config: _Items, settings: RunSettings) -> InstitutionNode:
    return resolve_node(dict(node_config), settings)


def run_settings(context: Context) -> RunSettings:
    """The run's typed settings (raises ``ConfigError`` naming a bad key, every time)."""
    return _settings(_items(context.run_config))


def institution_node(context: Context, settings: RunSettings) -> InstitutionNode:
    """This node's institution and folders under ``settings``."""
    return _node(_items(context.node_config), settings)
