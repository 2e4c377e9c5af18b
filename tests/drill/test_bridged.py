"""Bridged brokers in drills: the scenario format, the shared bridge stanza, a quick real run."""

from pathlib import Path

import pytest

from relay.drill import runner
from relay.drill.scenario import ScenarioError, parse, resolve
from relay.drill.steps import Cut
from relay.kit import write_kit
from relay.kit.mosquitto import bridge_topics, make_bridge, render_bridge

BRIDGED = """\
[drill]
title = "Two regions, two nationals"
duration = 8
settle = 30

[[broker]]
name = "national-1"

[[broker]]
name = "national-2"
bridge = ["national-1"]

[[broker]]
name = "vr05"
bridge = ["national-1", "national-2"]

[[broker]]
name = "vr07"
bridge = ["national-1", "national-2"]

[[node]]
name = "vr05-a"
regions = ["VR05"]
mqtt = ["vr05"]

[[node]]
name = "vr07-a"
regions = ["VR07"]
mqtt = ["vr07"]

[[node]]
name = "vr07-b"
regions = ["VR07"]
mqtt = ["vr07"]

[[issuer]]
name = "ncc"
role = "coordinator"

[[timeline]]
at = 0.5
do = "inject"
issuer = "ncc"
via = "vr05-a"
to = "all"
precedence = "PRIORITY"

[[timeline]]
at = 1.5
do = "stop_broker"
broker = "national-1"

[[timeline]]
at = 2
do = "inject"
issuer = "ncc"
via = "vr07-a"
to = "all"
precedence = "FLASH"

[[timeline]]
at = 6
do = "cut"
bridge = "vr07"

[[timeline]]
at = 6.5
do = "inject"
issuer = "ncc"
via = "vr07-a"
to = "region:VR07"
precedence = "IMMEDIATE"

[[timeline]]
at = 7
do = "restore"
bridge = "vr07"

[[expect]]
kind = "no_loss"

[[expect]]
kind = "no_duplicates"
"""


def _with(old: str, new: str) -> str:
    assert old in BRIDGED
    return BRIDGED.replace(old, new, 1)


def test_bridged_brokers_and_bridge_faults_are_read() -> None:
    """Test that bridge lists and bridge faults are read, in failover order."""
    sc = parse(BRIDGED, "b.toml")
    bridges = {b.name: b.bridge for b in sc.brokers}
    assert bridges == {"national-1": (), "national-2": ("national-1",),
                       "vr05": ("national-1", "national-2"),
                       "vr07": ("national-1", "national-2")}  # fmt: skip
    cut = next(s for s in sc.timeline if isinstance(s, Cut))
    assert (cut.bridge, cut.broker, cut.node, cut.region) == ("vr07", None, None, None)
    assert cut.peer == "vr07"
    assert cut.describe() == "cut the bridge of broker vr07"
    assert resolve("national").brokers[2].bridge == ("national-1", "national-2")


@pytest.mark.parametrize(
    ("old", "new", "at", "problem"),
    [
        ('bridge = ["national-1"]', 'bridge = ["national-3"]', '["national-3"]',
         "broker[1].bridge: no [[broker]] named 'national-3'"),
        ('bridge = ["national-1"]', 'bridge = ["national-2"]', '["national-2"]',
         "broker[1].bridge: broker 'national-2' cannot bridge to itself"),
        ('name = "national-1"\n', 'name = "national-1"\nbridge = ["vr05"]\n',
         'bridge = ["national-1", "national-2"]',
         "bridges form a loop: national-1 -> vr05 -> national-1"),
        ('bridge = "vr07"', 'bridge = "national-1"', 'bridge = "national-1"',
         "timeline[3].bridge: broker 'national-1' has no bridge"),
        ('bridge = "vr07"', 'bridge = "vr07"\nbroker = "vr05"', 'broker = "vr05"',
         "timeline[3].broker: broker 'vr07' does not bridge to 'vr05'"),
        ('bridge = "vr07"', 'bridge = "vr07"\nnode = "vr07-a"', 'do = "cut"',
         "timeline[3].do: cut: give exactly one of node, region or bridge"),
        ('bridge = ["national-1", "national-2"]', 'bridge = ["national-1", "national-1"]',
         '"national-1", "national-1"', "broker[2].bridge: lists a name twice"),
    ],
)  # fmt: skip
def test_bad_bridges_are_refused_naming_the_line(old: str, new: str, at: str,
                                                 problem: str) -> None:  # fmt: skip
    """Test that unknown, self-referencing, looping and misused bridges are refused by line."""
    text = _with(old, new)
    line = text[: text.index(at)].count("\n") + 1
    with pytest.raises(ScenarioError) as info:
        parse(text, "b.toml")
    assert str(info.value).startswith(f"b.toml:{line}: "), info.value
    assert problem in str(info.value)


def test_kit_and_drill_write_the_same_bridge_stanza(tmp_path: Path) -> None:
    """Test that the kit's bridge is make_bridge's: failover addresses, in/out or both ways."""
    region = write_kit(tmp_path / "vr07", ca_name="CA", nodes=["vr07-a"],
                       bridge_to=[("127.0.0.1", 1883), ("127.0.0.1", 1884)])  # fmt: skip
    conf = (region.directory / "mosquitto.conf").read_text()
    same = make_bridge("bridge-ca", [("127.0.0.1", 1883), ("127.0.0.1", 1884)],
                       nodes=["vr07-a"], ca=region.ca, cert=region.directory / "bridge-ca.crt",
                       key=region.directory / "bridge-ca.key")  # fmt: skip
    assert "\n".join(render_bridge(same)) in conf
    for line in ("addresses 127.0.0.1:1883 127.0.0.1:1884", "round_robin false",
                 "keepalive_interval 15", "topic crisis/+/sync in 1",
                 "topic crisis/vr07-a/sync out 1"):  # fmt: skip
        assert line + "\n" in conf, line
    # A national that takes regions' bridges carries their traffic to the other national.
    nat2 = write_kit(tmp_path / "nat2", ca_name="CA2", nodes=[], bridge_from=["bridge-vr07"],
                     bridge_to=[("127.0.0.1", 1883)])  # fmt: skip
    conf2 = (nat2.directory / "mosquitto.conf").read_text()
    assert "topic crisis/+/msg both 1\n" in conf2 and " out 1" not in conf2
    assert bridge_topics([], relay_all=True) == tuple(
        f"crisis/+/{c} both 1" for c in ("msg", "rcpt", "sync", "status")
    )


@pytest.mark.broker
@pytest.mark.subprocess
def test_a_bridged_drill_fails_over_between_nationals_and_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Test that regional brokers bridged to two nationals carry every decision across a
    national's stop, and a region's own broker while its bridge is cut, exactly once."""
    work = tmp_path_factory.mktemp("br")
    result = runner.run(parse(BRIDGED, "bridged.toml"), workdir=work / "w")
    assert result.ok, [(v.name, v.detail) for v in result.verdicts if not v.ok]
    assert len(result.injections) == 3
    vr07 = result.workdir / "brokers" / "vr07"
    log = (vr07 / "mosquitto.log").read_text()
    nat2_port = _upstream_of(result, "national-2")
    # After national-1 stopped, VR07's bridge connected to its second address.
    assert f"Connecting bridge (step 1) bridge-vr07 (127.0.0.1:{nat2_port})" in log
    nat1 = (result.workdir / "brokers" / "national-1" / "mosquitto.log").read_text()
    assert "as bridge-vr07" in nat1 and "as bridge-national-2" in nat1
    # The bridge's session on national-2 was made before the drill (primed), so national-2
    # queued for it from the start instead of from its first failover.
    nat2 = (result.workdir / "brokers" / "national-2" / "mosquitto.log").read_text()
    primed = nat2.index("bridge-vr07 0 crisis/+/status")
    assert primed < nat2.index("as bridge-vr07", primed)


def _upstream_of(result: runner.RunResult, target: str) -> int:
    """The port of the fault proxy in front of ``target`` on vr07's bridge (from its conf)."""
    conf = (result.workdir / "brokers" / "vr07" / "mosquitto.conf").read_text()
    addresses = next(line for line in conf.splitlines() if line.startswith("addresses "))
    index = ["national-1", "national-2"].index(target)
    return int(addresses.split()[1 + index].rpartition(":")[2])
