"""The pool options of ``toolkit serve`` and ``toolkit demo`` (nothing here starts a server)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, write_spec

from toolkit.cli.demo import _peer_servers
from toolkit.errors import ToolkitError
from toolkit.spec import spec_from_dict


@pytest.fixture
def pools_dict(tiny_spec_dict: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(tiny_spec_dict)
    data["pools"] = [{"name": "cpu"}, {"name": "big"}]
    data["tiers"][2]["pool"] = "big"
    return data


def router_json(repo: Path, spec: Any, addresses: list[str]) -> None:
    folder = repo / spec.entry_pool / spec.router_model / "1"
    folder.mkdir(parents=True)
    remote = {"xl": {"pool": "big", "addresses": addresses, "timeout_ms": 200.0, "retry_after_ms": 1000.0}}
    (folder / "router.json").write_text(json.dumps({"remote_tiers": remote}), encoding="utf-8")


def test_demo_starts_the_other_pool_on_the_port_the_router_calls(
    pools_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec = spec_from_dict(pools_dict, source="pools.yaml")
    router_json(tmp_path, spec, ["127.0.0.1:8101"])
    (tmp_path / "big").mkdir()

    servers = _peer_servers(spec, tmp_path, None, None)

    assert [pool for pool, _ in servers] == ["big"]
    options = servers[0][1].options
    assert options.grpc_port == 8101 and options.host == "127.0.0.1"
    assert Path(options.repository) == tmp_path / "big"
    assert not servers[0][1].running


def test_demo_refuses_a_pool_the_router_calls_on_another_machine(
    pools_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec = spec_from_dict(pools_dict, source="pools.yaml")
    router_json(tmp_path, spec, ["ads-ranking-big-pods.ads.svc.cluster.local:8001"])

    with pytest.raises(ToolkitError) as info:
        _peer_servers(spec, tmp_path, None, None)

    message = str(info.value)
    assert "router.json" in message and "not on this machine" in message
    assert "--pool-address big=127.0.0.1:PORT" in message


def test_demo_names_the_router_config_when_the_pools_were_not_deployed(
    pools_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec = spec_from_dict(pools_dict, source="pools.yaml")

    with pytest.raises(ToolkitError, match="router.json: cannot read the router's pools"):
        _peer_servers(spec, tmp_path, None, None)


def test_serve_refuses_a_pool_the_spec_does_not_have(pools_dict: dict[str, Any], tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "pools.yaml", pools_dict)

    result = run_cli("serve", "--spec", str(spec_path), "--pool", "huge", check=False)

    assert result.returncode != 0
    assert "--pool" in result.stderr and "'huge' is not a pool of" in result.stderr
    assert "cpu, big" in result.stderr
