"""The servicers reach the node only through :class:`derot.net.api.NodeApi`; :class:`derot.service.api.ServiceApi`
implements every method of it with the same parameters and the same sync/async kind (a servicer awaits exactly
the methods the Protocol declares async), and the servicers touch nothing else."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from derot.net import servicers
from derot.net.api import NodeApi
from derot.service.api import ServiceApi


def protocol_methods() -> dict[str, object]:
    return {name: member for name, member in vars(NodeApi).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def test_service_api_implements_every_node_api_method_alike():
    methods = protocol_methods()
    assert len(methods) >= 12
    for name, declared in methods.items():
        implemented = getattr(ServiceApi, name, None)
        assert implemented is not None, f"ServiceApi lacks {name}"
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), name
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(declared).parameters), name
    assert {"limits", "metrics"} <= set(NodeApi.__annotations__)


def test_the_servicers_call_only_node_api_members():
    """Every ``api.<name>`` (or ``self.api.<name>``) the servicers use is declared by the Protocol."""
    declared = set(protocol_methods()) | set(NodeApi.__annotations__)
    tree = ast.parse(Path(servicers.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "api") or (
                    isinstance(owner, ast.Attribute) and owner.attr in ("api", "_api")):
                used.add(node.attr)
    print("servicers use", sorted(used))
    assert used and used <= declared, used - declared
