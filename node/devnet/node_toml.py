"""The config file a devnet writes for each of its nodes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from derot.devnet.network import Devnet, NodeProcess


def node_toml(net: Devnet, proc: NodeProcess, key_file: Path) -> str:
    """The ``node.toml`` of devnet node ``proc`` (its operator key in ``key_file``)."""
    addresses = net.node_addresses(proc)
    lines = [
        "[node]",
        f'name = "node-{proc.index}"',
        f'data_dir = "{proc.directory}"',
        f'public_listen = "{addresses["public_listen"]}"',
        f'peer_listen = "{addresses["peer_listen"]}"',
        f'advertise_host = "{addresses["advertise_host"]}"',
        f'faults = "{net.node_faults.get(proc.index, "")}"',
        f'peer_routes = "{net.peer_routes.get(proc.index, "")}"',
        "",
        "[chain]",
        f'rpc_url = "{net.rpc_url}"',
        f'registry = "{net.registry}"',
        f"confirmations = {net.confirmations}",
        f"poll_interval = {net.poll_interval}",
        f"start_block = {net.deployment.deploy_block}",
        f'operator_key_file = "{key_file}"',
        "",
        "[attest]",
        'mode = "devnet"',
        f'devnet_roots = "{net.directory / "roots"}"',
        f'node_tee = "devnet:{proc.platform}"',
        "",
        "[dkg]",
        f"phase_timeout = {net.phase_timeout}",
        "",
        "[metrics]",
        f'listen = "{addresses["metrics_listen"]}"',
        "",
    ]
    if net.mqtt_url:
        lines += ["[mqtt]", f'url = "{net.mqtt_url}"', ""]
    return "\n".join(lines)
