"""The actions of a drill's timeline: one frozen dataclass per ``do = "…"``, matched on class.

A new action is a class here (its ``action`` name, its fields, ``describe``), a case in
``scenario._Parser.step`` that validates its keys, and a case in ``runner.Drill.apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from relay.envelope import Precedence


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One timeline entry at ``at`` seconds; ``line`` is where the scenario file has it."""

    action: ClassVar[str] = ""
    at: float
    line: int | None = None

    @property
    def do(self) -> str:
        return self.action

    @property
    def restores(self) -> bool:
        """Whether this step undoes a fault (reported as "restore", not "fault")."""
        return False

    @property
    def peer(self) -> str | None:
        """The node or broker the step acts on, for the drill's event log."""
        return None

    def describe(self) -> str:
        return self.action


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase(Step):
    action: ClassVar[str] = "phase"
    name: str

    def describe(self) -> str:
        return f"phase {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inject(Step):
    """``issuer`` signs an exercise decision and hands it to node ``via``."""

    action: ClassVar[str] = "inject"
    issuer: str
    via: str
    to: str
    precedence: Precedence
    text: str

    @property
    def peer(self) -> str | None:
        return self.issuer

    def describe(self) -> str:
        return f"{self.issuer} signs {self.precedence.name} to {self.to} at {self.via}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerPath(Step):
    """The broker paths (fault proxies) of one node or of every node of a region, to one
    broker or to all of theirs; or the paths of broker ``bridge``'s bridge (to ``broker``
    only, or to every broker it bridges to)."""

    node: str | None = None
    region: str | None = None
    bridge: str | None = None
    broker: str | None = None

    @property
    def peer(self) -> str | None:
        return self.node or self.bridge or self.broker

    def describe(self) -> str:
        if self.bridge is not None:
            to = f" to broker {self.broker}" if self.broker is not None else ""
            return f"{self.action} the bridge of broker {self.bridge}{to}"
        where = f"node {self.node}" if self.node is not None else f"region {self.region}"
        broker = f" to broker {self.broker}" if self.broker is not None else ""
        return f"{self.action} broker path of {where}{broker}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Blackhole(BrokerPath):
    action: ClassVar[str] = "blackhole"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cut(BrokerPath):
    action: ClassVar[str] = "cut"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restore(BrokerPath):
    action: ClassVar[str] = "restore"

    @property
    def restores(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerStep(Step):
    broker: str

    @property
    def peer(self) -> str | None:
        return self.broker

    def describe(self) -> str:
        return f"{self.action.replace('_', ' ')} {self.broker}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopBroker(BrokerStep):
    action: ClassVar[str] = "stop_broker"


@dataclass(frozen=True, slots=True, kw_only=True)
class StartBroker(BrokerStep):
    action: ClassVar[str] = "start_broker"

    @property
    def restores(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStep(Step):
    node: str

    @property
    def peer(self) -> str | None:
        return self.node


@dataclass(frozen=True, slots=True, kw_only=True)
class Unplug(NodeStep):
    action: ClassVar[str] = "unplug"

    def describe(self) -> str:
        return f"unplug the radio of {self.node}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Replug(NodeStep):
    action: ClassVar[str] = "replug"

    @property
    def restores(self) -> bool:
        return True

    def describe(self) -> str:
        return f"replug the radio of {self.node}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Kill(NodeStep):
    action: ClassVar[str] = "kill"

    def describe(self) -> str:
        return f"kill -9 {self.node}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart(NodeStep):
    action: ClassVar[str] = "restart"

    @property
    def restores(self) -> bool:
        return True

    def describe(self) -> str:
        return f"restart {self.node}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Clock(NodeStep):
    """Restart ``node`` with its clock ``skew`` seconds off (0 puts it right again)."""

    action: ClassVar[str] = "clock"
    skew: float

    @property
    def restores(self) -> bool:
        return self.skew == 0

    def describe(self) -> str:
        return f"restart {self.node} with its clock off by {self.skew:+g} s"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLoss(Step):
    """Set the emulated mesh's loss between radios ``a`` and ``b``."""

    action: ClassVar[str] = "set_loss"
    a: str
    b: str
    loss: float

    @property
    def restores(self) -> bool:
        return self.loss == 0

    def describe(self) -> str:
        return f"set loss {self.a}-{self.b} to {self.loss:g}"


STEPS: tuple[type[Step], ...] = (
    Phase,
    Inject,
    Blackhole,
    Cut,
    Restore,
    StopBroker,
    StartBroker,
    Unplug,
    Replug,
    Kill,
    Restart,
    Clock,
    SetLoss,
)
ACTIONS: dict[str, type[Step]] = {s.action: s for s in STEPS}
