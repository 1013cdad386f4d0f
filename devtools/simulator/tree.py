"""A synthetic fleet: devices spread over a region tree, deterministic under a seed.

Region paths run ``country/state/utility/zip/site`` at depth 5 (the default),
e.g. ``us/ca/pge/94110/site-0042``. ``depth`` counts the path's segments
including the site: depth 2 is ``us/site-0001``, depth 7 adds two feeder
levels below the zip. ``fanout`` is the number of children of every inner
node between the country and the sites' parents; sites are then spread
over those parents. Most sites hold one device, about one in ten holds two.

Each device speaks one raw dialect (a mixed fleet) and gets hardware that
fits it (a 13.5 kWh gateway battery, a 10 kWh sonnen, a generic SunSpec
battery), a solar array (peak 3-8 kW) and a household load shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from vpp.assets import Asset

__all__ = ["DIALECTS", "Device", "Fleet", "build_fleet"]

DIALECTS = ("tesla-gateway/1", "sonnen/2", "sunspec/802")

#: (state, IANA timezone, utilities); states beyond this list get generated names.
_STATES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ca", "America/Los_Angeles", ("pge", "sce", "sdge", "smud")),
    ("tx", "America/Chicago", ("oncor", "centerpoint", "aep", "tnmp")),
    ("ny", "America/New_York", ("coned", "nationalgrid", "nyseg", "pseg")),
    ("az", "America/Phoenix", ("aps", "srp", "tep", "unisource")),
    ("co", "America/Denver", ("xcel", "blackhills", "coloradosprings", "holy-cross")),
    ("hi", "Pacific/Honolulu", ("heco", "meco", "helco", "kiuc")),
    ("fl", "America/New_York", ("fpl", "duke", "teco", "jea")),
    ("wa", "America/Los_Angeles", ("pse", "seattle-city-light", "avista", "snopud")),
    ("il", "America/Chicago", ("comed", "ameren", "midamerican", "mtcarmel")),
    ("ma", "America/New_York", ("eversource", "nationalgrid", "unitil", "mmwec")),
    ("ak", "America/Anchorage", ("chugach", "mea", "gvea", "hea")),
    ("ut", "America/Denver", ("rmp", "uamps", "murray", "provo")),
)
_ZIP_BASE = {"ca": 90000, "tx": 75000, "ny": 10000, "az": 85000, "co": 80000, "hi": 96700,
             "fl": 32000, "wa": 98000, "il": 60000, "ma": 1000, "ak": 99500, "ut": 84000}

#: Hardware per dialect: (id prefix, [(capacity_wh, max_charge_w, max_discharge_w), ...]).
_HARDWARE: Mapping[str, tuple[str, tuple[tuple[float, float, float], ...]]] = {
    "tesla-gateway/1": ("pw", ((13500.0, 5000.0, 5000.0), (13500.0, 5000.0, 5000.0), (13500.0, 5000.0, 11500.0))),
    "sonnen/2": ("sb", ((10000.0, 4800.0, 4800.0), (5000.0, 2500.0, 2500.0), (15000.0, 4800.0, 4800.0))),
    "sunspec/802": ("ss", ((9800.0, 5000.0, 5000.0), (16000.0, 7600.0, 7600.0), (6500.0, 3300.0, 3300.0))),
}
_DIALECT_WEIGHTS = (0.45, 0.3, 0.25)
_SHARED_SITE_P = 0.1
_ENROLLED_P = 0.8
_MAX_SITE_PARENTS = 200_000


@dataclass(frozen=True)
class Device:
    """A simulated device: its registry entry plus what only the simulator knows."""

    asset: Asset
    dialect: str
    index: int
    solar_peak_w: float
    load_base_w: float
    load_evening_w: float
    initial_soc_pct: float
    #: SunSpec only: scale factors of the battery power and meter registers, whether a meter (model 203) is fitted.
    w_sf: int = 0
    meter_sf: int = 0
    has_meter: bool = True

    @property
    def device_id(self) -> str:
        return self.asset.device_id

    @property
    def timezone(self) -> str:
        return self.asset.timezone


@dataclass(frozen=True)
class Fleet:
    """The devices of a simulation, in a stable order."""

    devices: tuple[Device, ...]
    seed: int
    depth: int
    fanout: int
    by_id: Mapping[str, Device] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {d.device_id: d for d in self.devices})

    def __len__(self) -> int:
        return len(self.devices)

    def assets(self) -> list[Asset]:
        return [d.asset for d in self.devices]


def _region_levels(rng: random.Random, depth: int, fanout: int) -> list[tuple[list[str], str]]:
    """Every parent of sites as (path segments, timezone), in a stable order."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2 (country/site), got {depth}")
    if fanout < 1:
        raise ValueError(f"fanout must be at least 1, got {fanout}")
    inner = depth - 1  # levels above the site, the first one being the country
    if fanout ** (inner - 1) > _MAX_SITE_PARENTS:
        raise ValueError(f"fanout {fanout} at depth {depth} makes {fanout ** (inner - 1)} region nodes; at most {_MAX_SITE_PARENTS}")
    parents: list[tuple[list[str], str]] = [(["us"], "America/Los_Angeles")]
    for level in range(1, inner):
        nxt: list[tuple[list[str], str]] = []
        for segs, tz in parents:
            for i in range(fanout):
                name, child_tz = _child_name(rng, level, segs, i, tz)
                nxt.append((segs + [name], child_tz))
        parents = nxt
    return parents


def _child_name(rng: random.Random, level: int, segs: Sequence[str], i: int, tz: str) -> tuple[str, str]:
    if level == 1:  # state
        if i < len(_STATES):
            return _STATES[i][0], _STATES[i][1]
        base = _STATES[i % len(_STATES)]
        return f"{base[0]}{i // len(_STATES)}", base[1]
    if level == 2:  # utility
        state = segs[1]
        known = next((s for s in _STATES if s[0] == state), None)
        if known and i < len(known[2]):
            return known[2][i], tz
        return f"util-{i:02d}", tz
    if level == 3:  # zip
        base = _ZIP_BASE.get(segs[1][:2], 40000)
        utility_index = abs(_hash_str(segs[2])) % 40
        return f"{(base + utility_index * 97 + i * 7 + rng.randrange(5)) % 100000:05d}", tz
    return f"f{level - 3}-{i:02d}", tz  # feeders below the zip


def _hash_str(text: str) -> int:
    """A stable (not per-process-salted) small hash for names."""
    h = 0
    for ch in text.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF
    return h


def build_fleet(n_devices: int = 1000, depth: int = 5, fanout: int = 4, seed: int = 0) -> Fleet:
    """A deterministic fleet of ``n_devices`` over a region tree of ``depth`` and ``fanout``."""
    if n_devices < 0:
        raise ValueError(f"n_devices must not be negative, got {n_devices}")
    rng = random.Random(f"vpp-fleet:{seed}")
    parents = _region_levels(rng, depth, fanout)
    width = max(4, len(str(n_devices)))
    devices: list[Device] = []
    site_n = 0
    site_path = ""
    site_tz = ""
    site_devices = 0
    for index in range(n_devices):
        if site_devices == 1 and rng.random() < _SHARED_SITE_P:
            site_devices = 2  # a second battery at the same home
        else:
            segs, site_tz = parents[rng.randrange(len(parents))]
            site_n += 1
            site_path = "/".join(segs + [f"site-{site_n:0{width}d}"])
            site_devices = 1
        dialect = rng.choices(DIALECTS, weights=_DIALECT_WEIGHTS)[0]
        prefix, hardware = _HARDWARE[dialect]
        capacity_wh, max_charge_w, max_discharge_w = hardware[rng.randrange(len(hardware))]
        asset = Asset(
            device_id=f"{prefix}-{index:06d}",
            site_id=site_path.rsplit("/", 1)[1],
            region_path=site_path,
            timezone=site_tz,
            capacity_wh=capacity_wh,
            max_charge_w=max_charge_w,
            max_discharge_w=max_discharge_w,
            reserve_pct=float(rng.randint(10, 20)),
            enrolled_peak_shaving=rng.random() < _ENROLLED_P,
        )
        devices.append(
            Device(
                asset=asset,
                dialect=dialect,
                index=index,
                solar_peak_w=float(rng.randrange(3000, 8001, 100)),
                load_base_w=float(rng.randrange(250, 701, 10)),
                load_evening_w=float(rng.randrange(1200, 3501, 50)),
                initial_soc_pct=round(rng.uniform(30.0, 90.0), 2),
                w_sf=rng.choice((0, 0, 1)),
                meter_sf=rng.choice((0, 1)),
                has_meter=rng.random() < 0.7,
            )
        )
    return Fleet(devices=tuple(devices), seed=seed, depth=depth, fanout=fanout)
