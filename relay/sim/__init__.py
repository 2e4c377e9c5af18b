"""Meshtastic device emulator and channel model.

``Mesh`` (sans-I/O, virtual time) joins emulated radios that speak the real device API; the
servers in ``relay.sim.server`` put it on TCP ports, ptys and a JSON-lines control port.
"""

from relay.sim.framing import FrameDecoder, encode_frame
from relay.sim.mesh import Mesh
from relay.sim.spec import LinkSpec, MeshSpec, RadioSpec, SpecError, load_spec, uniform_mesh

__all__ = [
    "FrameDecoder",
    "LinkSpec",
    "Mesh",
    "MeshSpec",
    "RadioSpec",
    "SpecError",
    "encode_frame",
    "load_spec",
    "uniform_mesh",
]
