"""Run config keyed by the asset and check definitions themselves, not by their op names as strings.

    ops_config({raft_dataset: {"order": "retrieval"}, release_gate: {"policy": path}})
    -> {"ops": {"raft_dataset": {"config": {...}}, "adapter_evaluation_release_gate": {"config": {...}}}}

An asset or check that is renamed then breaks where the config is built, at import, instead of in a
user's run with "unknown op". An asset's op is named after it; a check's op after its asset and itself.
"""

from __future__ import annotations

from collections.abc import Mapping


def node_name(node) -> str:
    """The op name of an asset or asset-check definition (a string is taken as already one)."""
    return node if isinstance(node, str) else node.node_def.name


def ops_config(configs: Mapping) -> dict:
    """Dagster run config from {definition: its config}; empty configs are left out (the asset's defaults hold)."""
    return {"ops": {node_name(node): {"config": dict(config)} for node, config in configs.items() if config}}
