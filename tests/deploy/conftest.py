"""Fixtures for the deployment tests: a node's files made by the real key and roster code."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec
from relay.sim.net import free_port


@pytest.fixture
def node_files(tmp_path: Path) -> Cluster:
    """One node ``n1`` (region VR07) with keys and a roster; its broker port has no listener."""
    c = Cluster(tmp_path / "c")
    c.create(
        [NodeSpec("n1", ("VR07",), (f"mqtt://127.0.0.1:{free_port()}",))],
        [IssuerSpec("vr07-rbt", ("region:VR07",))],
    )
    return c
