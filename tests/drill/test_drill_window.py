"""The drill window: `[drill] window` in relay.toml, and exercise traffic refused outside it."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.api import ApiError
from relay.config import ConfigError, parse
from relay.engine.core import Engine, EngineConfig, LinkInfo
from relay.engine.ops import Rejected
from relay.envelope import Reason
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec
from relay.trust import Role
from tests.engine.harness import MemStore, Node
from tests.world import NOW, World, standard_world

BASE = {
    "node": {"name": "vr07-utrecht", "key": "k.key"},
    "trust": {"root": "root.pub", "roster": "roster.cbor"},
    "mqtt": {"broker": [{"url": "mqtt://127.0.0.1:1883"}]},
}
START = NOW - 3600.0
END = NOW + 3600.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _node(w: World, window: tuple[float, float] | None) -> Node:
    """vr07-utrecht with one MQTT link up and the given drill window."""
    config = EngineConfig(node="vr07-utrecht", regions=frozenset({"VR07"}), drill_window=window)
    store = MemStore()
    engine = Engine(config, w.trust(), w.keys["vr07-utrecht"], [LinkInfo("mqtt", "mqtt")],
                    store.snapshot("vr07-utrecht"))  # fmt: skip
    node = Node("vr07-utrecht", engine, store)
    node.run(engine.link_state("mqtt", "up", NOW), NOW)
    return node


def _config(drill: object) -> object:
    return parse({**BASE, "drill": drill}, Path("relay.toml")).drill_window


def test_drill_window_parses_offsets_and_datetimes() -> None:
    """Test that a window of ISO 8601 strings or TOML datetimes becomes two unix times."""
    window = _config({"window": ["2026-12-01T09:00:00+01:00", "2026-12-01T17:00:00+01:00"]})
    assert window == (
        datetime(2026, 12, 1, 8, tzinfo=UTC).timestamp(),
        datetime(2026, 12, 1, 16, tzinfo=UTC).timestamp(),
    )
    bare = [datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)]
    assert _config({"window": bare}) == (bare[0].timestamp(), bare[1].timestamp())
    assert _config({}) is None
    assert parse(BASE, Path("relay.toml")).drill_window is None


@pytest.mark.parametrize(
    ("drill", "message"),
    [
        ({"window": "2026-12-01T09:00:00+01:00"}, "drill.window: must be a list of two times"),
        ({"window": ["2026-12-01T09:00:00+01:00"]}, "drill.window: must be a list of two"),
        ({"window": ["tomorrow", "2026-12-01T17:00:00+01:00"]}, "drill.window[0]: 'tomorrow'"),
        ({"window": ["2026-12-01T09:00:00", "2026-12-01T17:00:00+01:00"]}, "no UTC offset"),
        ({"window": ["2026-12-01T17:00:00Z", "2026-12-01T09:00:00Z"]}, "start must be before"),
        ({"window": ["2026-12-01T09:00:00Z", 17]}, "drill.window[1]: must be a time string"),
        ({"windows": []}, "drill.windows: unknown key 'windows' (known: window)"),
    ],
)
def test_bad_drill_window_is_rejected_with_the_key(drill: object, message: str) -> None:
    """Test that a malformed drill window is refused with a message naming the key."""
    with pytest.raises(ConfigError) as err:
        _config(drill)
    assert message in str(err.value)


def test_exercise_traffic_inside_the_window_is_delivered() -> None:
    """Test that an exercise decision arriving inside the drill window is accepted and shown."""
    w = standard_world()
    node = _node(w, (START, END))
    raw = w.sign("coordinator", exercise=True)
    node.run(node.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    assert len(node.delivered) == 1 and node.delivered[0].exercise


@pytest.mark.parametrize("at", [START - 1, END + 1])
def test_exercise_traffic_outside_the_window_is_refused_with_a_reason(at: float) -> None:
    """Test that exercise traffic before or after the window is rejected as outside-drill-window."""
    w = standard_world()
    node = _node(w, (START, END))
    raw = w.sign("coordinator", exercise=True, now=int(at))
    node.run(node.engine.received("mqtt", raw, at, channel="msg"), at)
    assert node.delivered == [] and node.store.messages == {}
    rejected = [a for a in node.other if isinstance(a, Rejected)]
    assert [r.reason for r in rejected] == [Reason.DRILL_WINDOW]
    assert _iso(START) in rejected[0].detail and _iso(END) in rejected[0].detail
    assert node.engine.rejections["outside-drill-window"] == 1


def test_real_traffic_is_not_limited_by_the_window() -> None:
    """Test that a real (non-exercise) decision outside the drill window is still delivered."""
    w = standard_world()
    node = _node(w, (START, END))
    at = END + 10
    node.run(node.engine.received("mqtt", w.sign("national", now=int(at)), at, channel="msg"), at)
    assert len(node.delivered) == 1 and not node.delivered[0].exercise


def test_without_a_window_exercise_traffic_is_always_accepted() -> None:
    """Test that a node with no drill window accepts exercise traffic at any time."""
    w = standard_world()
    node = _node(w, None)
    at = END + 10
    raw = w.sign("coordinator", exercise=True, now=int(at))
    node.run(node.engine.received("mqtt", raw, at, channel="msg"), at)
    assert len(node.delivered) == 1


@pytest.mark.broker
@pytest.mark.subprocess
def test_running_node_refuses_exercise_traffic_outside_its_window(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto
) -> None:
    """Test that `relay run` with a past drill window refuses exercise, accepts real traffic."""
    c = Cluster(tmp_path_factory.mktemp("win"))
    c.create([NodeSpec("vr07-utrecht", ("VR07",), (mosquitto.url,))],
             [IssuerSpec("ncc", ("all",), Role.COORDINATOR), IssuerSpec("national")])  # fmt: skip
    config = c.config_path("vr07-utrecht")
    window = '["2026-01-01T09:00:00+01:00", "2026-01-01T17:00:00+01:00"]'
    config.write_text(config.read_text() + f"\n[drill]\nwindow = {window}\n")
    c.start("vr07-utrecht")
    try:
        c.wait_ready("vr07-utrecht")
        drill = c.sign("ncc", "OEFENING: evacuatie", exercise=True)
        with pytest.raises(ApiError, match="outside-drill-window: exercise traffic outside"):
            c.submit("vr07-utrecht", drill)
        real = c.submit("vr07-utrecht", c.sign("national", "Besluit: evacuatie"))
        assert [m["id"] for m in c.inbox("vr07-utrecht")] == [real]
        assert c.status("vr07-utrecht")["rejections"] == {"outside-drill-window": 1}
    finally:
        c.stop_all()
