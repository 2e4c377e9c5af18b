"""The table of safety regions that turns CAP areas into relay audiences and back.

The table is TOML (the default is relay/data/cap/regions.toml, the 25 Dutch veiligheidsregio's);
``RegionTable.from_toml`` takes its bytes, so this module does no I/O. See docs/cap.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from relay.cap.model import Area, CapReason, CapRejection
from relay.envelope import Audience

REGIONS_RESOURCE = "cap/regions.toml"
_PREFIX = "veiligheidsregio "


class RegionTableError(ValueError):
    """A region table that cannot be used; the message names the key at fault."""


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # the relay's region code: region:CODE
    name: str
    codes: tuple[str, ...] = ()  # further geocode values for this region
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RegionTable:
    regions: tuple[Region, ...]
    geocode_names: frozenset[str]  # casefolded
    everyone: frozenset[str]  # normalised areaDesc values that mean audience "all"

    @classmethod
    def from_toml(cls, data: bytes, *, source: str = "regions") -> RegionTable:
        try:
            doc = tomllib.loads(data.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RegionTableError(f"{source}: {exc}") from exc
        unknown = set(doc) - {"geocode_names", "everyone", "regions"}
        if unknown:
            raise RegionTableError(f"{source}: unknown keys {sorted(unknown)}")
        names = _strings(doc.get("geocode_names", []), f"{source}: geocode_names")
        everyone = _strings(doc.get("everyone", []), f"{source}: everyone")
        table = doc.get("regions")
        if not isinstance(table, dict) or not table:
            raise RegionTableError(f"{source}: [regions.CODE] tables are missing")
        regions = []
        for code, entry in table.items():
            where = f"{source}: regions.{code}"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise RegionTableError(f'{where}: needs name = "…"')
            extra = set(entry) - {"name", "codes", "aliases"}
            if extra:
                raise RegionTableError(f"{where}: unknown keys {sorted(extra)}")
            try:
                Audience.parse(f"region:{code}")
            except ValueError as exc:
                raise RegionTableError(f"{where}: {exc}") from exc
            regions.append(
                Region(
                    code=code,
                    name=entry["name"],
                    codes=_strings(entry.get("codes", []), f"{where}.codes"),
                    aliases=_strings(entry.get("aliases", []), f"{where}.aliases"),
                )
            )
        table_ = cls(
            tuple(regions),
            frozenset(n.casefold() for n in names),
            frozenset(_norm(e) for e in everyone),
        )
        table_._check_unique(source)
        return table_

    def _check_unique(self, source: str) -> None:
        seen: dict[str, str] = {}
        for region in self.regions:
            for key in (*self._codes(region), *self._descs(region)):
                other = seen.setdefault(key, region.code)
                if other != region.code:
                    raise RegionTableError(
                        f"{source}: {key!r} names both {other} and {region.code}"
                    )

    @staticmethod
    def _codes(region: Region) -> list[str]:
        return ["code:" + c.casefold() for c in (region.code, *region.codes)]

    @staticmethod
    def _descs(region: Region) -> list[str]:
        names = [region.name, _PREFIX + region.name, *region.aliases]
        return ["desc:" + _norm(n) for n in names]

    def by_code(self, code: str) -> Region | None:
        return next((r for r in self.regions if r.code == code), None)

    def _lookup(self, key: str) -> Region | None:
        for region in self.regions:
            if key in self._codes(region) or key in self._descs(region):
                return region
        return None

    def area_audience(self, area: Area) -> Audience | CapRejection:
        """The audience one CAP area names: by geocode first, else by its description."""
        for name, value in area.geocodes:
            if name.casefold() in self.geocode_names:
                region = self._lookup("code:" + value.strip().casefold())
                if region is None:
                    return CapRejection(
                        CapReason.AREA,
                        f"geocode {name}={value!r} is not a safety region in the region table",
                    )
                return Audience(regions=frozenset({region.code}))
        if _norm(area.desc) in self.everyone:
            return Audience.all()
        region = self._lookup("desc:" + _norm(area.desc))
        if region is None:
            return CapRejection(
                CapReason.AREA,
                f"area {area.desc!r} is not a safety region in the region table "
                "(use a geocode veiligheidsregio=VRnn, or --to)",
            )
        return Audience(regions=frozenset({region.code}))


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegionTableError(f"{where} must be a list of non-empty strings")
    return tuple(value)
