"""The built-in `national` drill: regional brokers bridged to two nationals, with real processes."""

import pytest

from relay.drill import runner
from relay.drill.scenario import resolve
from relay.drill.steps import Inject

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.radio, pytest.mark.subprocess]


def test_national_scenario_loses_nothing_across_national_and_bridge_failures(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Test that the national drill passes: bridges fail over to national-2, VR07 keeps its own
    traffic and crosses by mesh while its bridge is blackholed, the rest is reconciled."""
    sc = resolve("national")
    work = tmp_path_factory.mktemp("nat")  # short: node API sockets live below it
    result = runner.run(sc, workdir=work / "w")
    assert result.ok, [(v.name, v.detail) for v in result.verdicts if not v.ok]
    steps = [s for s in sc.timeline if isinstance(s, Inject)]
    assert len(result.injections) == len(steps) == 12
    by_text = {s.text: inj for s, inj in zip(steps, result.injections, strict=True)}

    def shown(msg_id: str) -> dict[str, tuple[float, str | None]]:
        return {e.node: (e.t, e.link) for e in result.events
                if e.event == "delivered" and e.msg == msg_id}  # fmt: skip

    restored = next(e.t for e in result.events if e.event == "restore")
    # VR07's own decision during the blackhole: its MQTT-only team and gateway share a broker.
    own = shown(by_text["VR07: evacuatie wijk Oost"].id)
    assert own["vr07-gw"][0] < restored and own["vr07-gw"][1] == "mqtt"
    # A national FLASH from VR05 during the blackhole reached VR07 by mesh, before the restore.
    flash = shown(by_text["Landelijk: scholen morgen gesloten"].id)
    assert flash["vr07-gw"][1] == "mesh" and flash["vr07-rot"][0] < restored
    # With the VR05-VR07 radio link gone too, VR09's decision for VR07 came after the restore.
    late = shown(by_text["VR07: extra drinkwater uit VR09"].id)
    assert set(late) == {"vr07-gw", "vr07-post", "vr07-rot"}
    assert min(t for t, _ in late.values()) > restored
    # Every regional bridge failed over to national-2 when national-1 stopped.
    for region in ("vr05", "vr07", "vr09"):
        conf = (result.workdir / "brokers" / region / "mosquitto.conf").read_text()
        second = next(x for x in conf.splitlines() if x.startswith("addresses ")).split()[2]
        log = (result.workdir / "brokers" / region / "mosquitto.log").read_text()
        assert log.count(f"Connecting bridge (step 1) bridge-{region} ({second})") >= 2, region
