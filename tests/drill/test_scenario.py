"""Scenario files: the demo parses, and bad scenarios are refused naming line and problem."""

from pathlib import Path

import pytest

from relay.drill import steps as steps_module
from relay.drill.scenario import ScenarioError, builtin_names, load, parse, resolve
from relay.drill.steps import Blackhole, Clock, Cut, Inject, Restore
from relay.envelope import Precedence
from relay.trust import Role

GOOD = """\
[drill]
title = "Small"
duration = 10

[[broker]]
name = "national"

[[node]]
name = "hq"
mqtt = ["national"]

[[node]]
name = "vr07-a"
regions = ["VR07"]
mqtt = ["national"]
radio = true

[[node]]
name = "vr07-b"
regions = ["VR07"]
radio = true

[[issuer]]
name = "ncc"
role = "coordinator"

[mesh]
preset = "short_fast"

[[mesh.link]]
a = "vr07-a"
b = "vr07-b"
loss = 0.2

[[timeline]]
at = 1
do = "inject"
issuer = "ncc"
via = "hq"
to = "region:VR07"
precedence = "FLASH"
count = 3
every = 0.5

[[timeline]]
at = 2
do = "cut"
region = "VR07"

[[timeline]]
at = 4
do = "clock"
node = "vr07-b"
skew = -10800

[[expect]]
kind = "delivered"
within = 60
"""


def test_a_valid_scenario_is_parsed_into_its_parts() -> None:
    """Test that nodes, issuers, mesh, an expanded inject, faults and expectations are read."""
    sc = parse(GOOD, "small.toml")
    assert [n.name for n in sc.nodes] == ["hq", "vr07-a", "vr07-b"]
    assert sc.by_name["vr07-b"].radio and not sc.by_name["vr07-b"].mqtt
    assert sc.issuers[0].role is Role.COORDINATOR and sc.issuers[0].scope == ("all",)
    assert sc.mesh.preset == "SHORT_FAST" and sc.mesh.links[0].loss == 0.2
    injects = [s for s in sc.timeline if isinstance(s, Inject)]
    assert [s.at for s in injects] == [1.0, 1.5, 2.0]
    assert injects[0].precedence is Precedence.FLASH and injects[0].text.endswith("(1/3)")
    assert [type(s) for s in sc.timeline] == [Inject, Inject, Inject, Cut, Clock]
    assert sc.audience_of("region:VR07") == ["vr07-a", "vr07-b"]
    assert sc.expectations[0].within_s == 60 and sc.expectations[0].precedence is None
    assert sc.end_s() == 10


def test_the_demo_is_built_in_and_found_by_name() -> None:
    """Test that `demo` resolves to the packaged scenario: five nodes, two regions, two gateways."""
    assert "demo" in builtin_names()
    sc = resolve("demo")
    assert len(sc.nodes) == 5 and sc.regions() == {"VR05", "VR07"}
    gateways = [n.name for n in sc.nodes if n.radio and n.mqtt]
    assert gateways == ["vr07-utrecht", "vr05-enschede"]
    assert any(isinstance(s, Blackhole) for s in sc.timeline)
    assert any(isinstance(s, Restore) for s in sc.timeline)
    assert any(e.precedence is Precedence.FLASH for e in sc.expectations)


def test_unknown_names_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    """Test that a missing file or an unknown built-in name gives a clear error."""
    with pytest.raises(ScenarioError, match="no built-in scenario of that name"):
        resolve("nosuchdrill")
    with pytest.raises(ScenarioError, match="cannot read"):
        resolve(str(tmp_path / "missing.toml"))


def _last_line_of(text: str, needle: str) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][-1]


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ('do = "cut"', 'do = "explode"', 'do = "explode"', "timeline[1].do: unknown action"),
        (
            'mqtt = ["national"]\n\n[[node]]\nname = "vr07-a"',
            'mqtt = ["regional"]\n\n[[node]]\nname = "vr07-a"',
            'mqtt = ["regional"]',
            "node[0].mqtt: no [[broker]] named 'regional'",
        ),
        ('region = "VR07"', 'region = "VR99"', 'region = "VR99"', "no node serves region 'VR99'"),
        ("within = 60", "within = -5", "within = -5", "expect[0].within: must be a number"),
        (
            'precedence = "FLASH"',
            'precedence = "URGENT"',
            'precedence = "URGENT"',
            "'URGENT': one of FLASH",
        ),
        ('to = "region:VR07"', 'to = "regio:VR07"', 'to = "regio:VR07"', "timeline[0].to:"),
        ("skew = -10800", 'skew = "3h"', 'skew = "3h"', "timeline[2].skew: must be a number"),
        ('b = "vr07-b"', 'b = "hq"', 'b = "hq"', "'hq' is not a node with radio = true"),
        ("loss = 0.2", "loss = 1.5", "loss = 1.5", "mesh.link[0].loss"),
        ('preset = "short_fast"', 'preset = "turbo"', 'preset = "turbo"', "unknown preset"),
        ("every = 0.5", "evry = 0.5", "evry = 0.5", "timeline[0].evry: unknown key 'evry'"),
        ('role = "coordinator"', 'role = "root"', 'role = "root"', "'root': one of issuer"),
        ('name = "vr07-b"', 'name = "vr07-a"', 'name = "vr07-a"', "node 'vr07-a' is defined twice"),
    ],
)
def test_bad_scenarios_name_the_line_and_the_problem(
    old: str, new: str, where: str, message: str
) -> None:
    """Test that each kind of mistake is refused with the file, the key's line and the reason."""
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ScenarioError) as err:
        parse(text, "bad.toml")
    line = _last_line_of(text, where)
    assert str(err.value).startswith(f"bad.toml:{line}: "), (str(err.value), line)
    assert message in str(err.value)


def test_scope_and_links_are_checked_against_the_rest_of_the_scenario() -> None:
    """Test that an issuer addressing outside its scope and a node without links are refused."""
    scoped = GOOD.replace('role = "coordinator"', 'scope = ["region:VR05"]')
    with pytest.raises(ScenarioError, match=r"bad.toml:\d+: timeline\[0\].to: .*outside the scope"):
        parse(scoped, "bad.toml")
    linkless = GOOD.replace('regions = ["VR07"]\nradio = true', 'regions = ["VR07"]', 2)
    with pytest.raises(ScenarioError, match="has no link"):
        parse(linkless, "bad.toml")
    with pytest.raises(ScenarioError, match=r"bad.toml:2: not valid TOML"):
        parse("[drill]\ntitle = \n", "bad.toml")


def test_a_scenario_file_is_loaded_with_its_name_in_errors(tmp_path: Path) -> None:
    """Test that load() reads a file and its errors carry the file name and line."""
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.replace("duration = 10", "duration = -1"))
    with pytest.raises(ScenarioError, match=r"^mine.toml:3: drill.duration: must be a number"):
        load(path)
    path.write_text(GOOD)
    assert load(path).title == "Small"


def test_every_built_in_scenario_is_valid() -> None:
    """Test that each scenario shipped in relay/drill/scenarios parses and has expectations."""
    assert {"demo", "faults"} <= set(builtin_names())
    for name in builtin_names():
        sc = resolve(name)
        assert sc.expectations and any(isinstance(s, Inject) for s in sc.timeline), name


def test_lines_are_found_past_multi_line_strings_and_arrays() -> None:
    """Test that text inside multi-line strings and arrays is not mistaken for keys or tables."""
    text = GOOD.replace(
        'title = "Small"',
        'title = "Small"\ndescription = """\n[[node]]\nname = "ghost"\n"""\nsettle = [\n  1,\n]',
    )
    with pytest.raises(ScenarioError) as err:
        parse(text, "multi.toml")
    assert str(err.value).startswith("multi.toml:7: drill.settle: must be a number"), err.value
    ok = GOOD.replace('regions = ["VR07"]\nmqtt', 'regions = [\n  "VR07",\n]\nmqtt', 1)
    bad = ok.replace('do = "cut"', 'do = "cutt"')
    with pytest.raises(ScenarioError) as err:
        parse(bad, "multi.toml")
    assert str(err.value).startswith(f"multi.toml:{_last_line_of(bad, 'cutt')}:"), err.value


EVERY_ACTION = [
    ('do = "phase"\nname = "cut off"', "phase cut off", False),
    ('do = "blackhole"\nnode = "vr07-a"', "blackhole broker path of node vr07-a", False),
    ('do = "cut"\nregion = "VR07"\nbroker = "national"',
     "cut broker path of region VR07 to broker national", False),
    ('do = "restore"\nnode = "hq"', "restore broker path of node hq", True),
    ('do = "stop_broker"\nbroker = "national"', "stop broker national", False),
    ('do = "start_broker"\nbroker = "national"', "start broker national", True),
    ('do = "unplug"\nnode = "vr07-b"', "unplug the radio of vr07-b", False),
    ('do = "replug"\nnode = "vr07-b"', "replug the radio of vr07-b", True),
    ('do = "kill"\nnode = "hq"', "kill -9 hq", False),
    ('do = "restart"\nnode = "hq"', "restart hq", True),
    ('do = "clock"\nnode = "hq"\nskew = 0', "restart hq with its clock off by +0 s", True),
    ('do = "set_loss"\na = "vr07-a"\nb = "vr07-b"\nloss = 0.5', "set loss vr07-a-vr07-b to 0.5",
     False),
]  # fmt: skip


def test_every_action_becomes_its_own_step_class() -> None:
    """Test that each timeline action is parsed into the step class of its name, with its own
    description and whether it undoes a fault."""
    extra = "".join(f"\n[[timeline]]\nat = 5\n{body}\n" for body, _, _ in EVERY_ACTION)
    sc = parse(GOOD + extra, "all.toml")
    steps = [s for s in sc.timeline if s.at == 5]
    assert [s.action for s in steps] == [body.split('"')[1] for body, _, _ in EVERY_ACTION]
    assert [type(s) for s in steps] == [steps_module.ACTIONS[s.action] for s in steps]
    assert [(s.describe(), s.restores) for s in steps] == [(d, r) for _, d, r in EVERY_ACTION]
    assert {s.action for s in steps} | {"inject"} == set(steps_module.ACTIONS)
