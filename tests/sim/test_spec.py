"""The mesh description file."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.sim.mesh import Mesh
from relay.sim.spec import SpecError, load_spec, spec_from_dict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def test_documented_example_loads(tmp_path: Path) -> None:
    """Test that the TOML example in docs/emulator.md loads and builds the links it describes."""
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "mesh.toml"
    path.write_text(example, encoding="utf-8")
    spec = load_spec(path)
    assert [r.name for r in spec.radios] == ["zwolle", "kampen", "deventer"]
    assert spec.radios[0].node_num == 0x5E1A0001
    mesh = Mesh(spec)
    assert mesh.links == {
        ("zwolle", "kampen"): 0.1,
        ("kampen", "zwolle"): 0.1,
        ("zwolle", "deventer"): 0.5,
    }


def test_bad_descriptions_are_rejected() -> None:
    """Test that unknown radios in links, bad loss and duplicate names are refused."""
    radios = [{"name": "a"}, {"name": "b"}]
    with pytest.raises(SpecError, match="no radio"):
        spec_from_dict({"radio": radios, "link": [{"a": "a", "b": "c"}]})
    with pytest.raises(SpecError, match="loss"):
        spec_from_dict({"radio": radios, "link": [{"a": "a", "b": "b", "loss": 2}]})
    with pytest.raises(SpecError, match="unique"):
        spec_from_dict({"radio": [{"name": "a"}, {"name": "a", "node_num": 9}]})
    with pytest.raises(SpecError, match="at least one"):
        spec_from_dict({})
