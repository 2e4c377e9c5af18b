"""One TOML validation path: relay.toml and drill scenarios name FILE:LINE: key.path: reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import tomlcheck
from relay.config import ConfigError, load
from relay.drill.scenario import ScenarioError, parse

RELAY_TOML = """\
[node]
name = "vr07-post"
key = "keys/vr07-post.key"
regions = [
  "VR07",
]
max_messages = 500

[trust]
root = "keys/root.pub"
roster = "roster.cbor"

[[mesh.radio]]
tcp = "127.0.0.1:4403"

[[mesh.radio]]
name = "second"
tcp = "127.0.0.1:4404"
"""


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    return str(err.value).removeprefix(f"{tmp_path}/")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("max_messages = 500", 'max_messages = "many"',
         "relay.toml:7: node.max_messages: must be a number from 10 to 10000000, got 'many'"),
        ("max_messages = 500", "max_mesages = 500",
         "relay.toml:7: node.max_mesages: unknown key 'max_mesages' (known: clock_skew, key, "),
        ('name = "second"', 'name = "second"\nport = 1',
         "relay.toml:18: mesh.radio[1].port: unknown key 'port' (known: name, preset, serial, "),
        ('root = "keys/root.pub"\n', "",
         "relay.toml:9: trust.root: missing (required)"),
        ('tcp = "127.0.0.1:4404"', 'tcp = "127.0.0.1"',
         "relay.toml:18: mesh.radio[1].tcp: expected HOST:PORT, got '127.0.0.1'"),
        ("max_messages = 500", "max_messages = 500 x",
         "relay.toml:7: not valid TOML: "),
    ],
)  # fmt: skip
def test_relay_toml_errors_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """Test that an unknown key, a wrong type, a missing key, a bad value and a syntax error in
    relay.toml are refused with the file, the line and the key path."""
    assert old in RELAY_TOML
    assert _load(tmp_path, RELAY_TOML.replace(old, new, 1)).startswith(message)


def test_a_missing_section_has_no_line_but_the_file_still_loads_when_fixed(tmp_path: Path) -> None:
    """Test that a missing section keeps its message without a line, and the fixed file loads."""
    without_trust = RELAY_TOML.replace(
        '[trust]\nroot = "keys/root.pub"\nroster = "roster.cbor"', ""
    )
    assert _load(tmp_path, without_trust) == "[trust]: missing section"
    (tmp_path / "relay.toml").write_text(RELAY_TOML)
    assert load(tmp_path / "relay.toml", environ={}).radios[1].name == "second"


def test_scenario_and_relay_toml_word_a_problem_the_same_way(tmp_path: Path) -> None:
    """Test that the same wrong type reads the same in a scenario and in relay.toml (one path)."""
    scenario = '[drill]\ntitle = "t"\nsettle = true\n'
    with pytest.raises(ScenarioError) as err:
        parse(scenario, "s.toml")
    config = _load(tmp_path, RELAY_TOML.replace("max_messages = 500", "max_messages = true"))
    assert str(err.value) == "s.toml:3: drill.settle: must be a number from 0 to 3600, got True"
    assert (
        config == "relay.toml:7: node.max_messages: must be a number from 10 to 10000000, got True"
    )


@pytest.mark.parametrize("text", ["node", "mesh.radio[1].tcp", "expect[0]", "a_b-c[2][3].d"])
def test_key_paths_round_trip(text: str) -> None:
    """Test that a dotted key path parses back to the path it was made from."""
    path = tomlcheck.key_path(text)
    assert path is not None and tomlcheck.dotted(path) == text


@pytest.mark.parametrize("text", ["no links", "[trust]", "$STATE_DIRECTORY", "a..b", ""])
def test_messages_that_start_with_no_key_path_are_not_taken_for_one(text: str) -> None:
    """Test that words, a section header or a variable are not read as a key path."""
    assert tomlcheck.key_path(text) is None


def test_lines_skip_multi_line_values() -> None:
    """Test that keys after a multi-line array and string keep their own line numbers."""
    lines = tomlcheck.Lines('a = [\n  "x = 1",\n]\nb = """\nc = 2\n"""\nd = 3\n[[t]]\ne = 1\n')
    assert lines.find(("a",)) == 1 and lines.find(("b",)) == 4 and lines.find(("d",)) == 7
    assert lines.find(("c",)) is None and lines.find(("t", 0, "e")) == 9
    assert lines.find(("t", 0, "missing")) == 8
