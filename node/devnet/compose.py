"""A devnet whose chain runs elsewhere and whose nodes run in their own containers (``derot compose``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from derot.devnet.network import Devnet, NodeProcess

#: what ``deploy`` writes for the node containers and ``derot compose`` itself
DONE_FILE = "network.json"


@dataclass
class ComposeNetwork(Devnet):
    """A :class:`Devnet` whose chain runs elsewhere and whose nodes run in their own containers."""

    host_template: str = "node-{i}"
    public_port: int = 7400
    peer_port: int = 7401
    metrics_port: int = 9100

    def host(self, index: int) -> str:
        return self.host_template.format(i=index)

    poll_interval = 0.5

    def node_addresses(self, proc: NodeProcess) -> dict[str, str]:
        return {
            "public_listen": f"0.0.0.0:{self.public_port}",
            "peer_listen": f"0.0.0.0:{self.peer_port}",
            "advertise_host": self.host(proc.index),
            "metrics_listen": f"0.0.0.0:{self.metrics_port}",
        }

    def deploy_only(self) -> dict:
        """Every set-up step of :meth:`Devnet.up` except starting processes; returns what ``network.json`` holds."""
        super().deploy_only()
        summary = {
            "rpc_url": self.rpc_url,
            "chain_id": self.deployment.chain_id,
            "registry": self.registry,
            "deploy_block": self.deployment.deploy_block,
            "threshold": self.threshold,
            "nodes": [
                {"index": p.index, "operator": p.operator, "platform": p.platform, "config": str(p.config_path),
                 "public": f"{self.host(p.index)}:{self.public_port}",
                 "peer": f"{self.host(p.index)}:{self.peer_port}"}
                for p in self.node_processes
            ],
        }
        (self.directory / DONE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary
