"""One typed settings object for the CLI, the flows and the tests.

Read once at the edge (``Settings.load()``) and passed down. Sources, later
ones winning:

1. defaults below;
2. the local stack's ``stack.json`` in the state directory (written by
   ``vpp up``), so that a laptop needs no configuration at all;
3. an optional TOML file (``VPP_CONFIG`` or ``--config``), flat keys named as
   the fields below, plus an optional ``[partitions]`` table;
4. environment variables ``VPP_<FIELD>`` (upper case), which is what
   ``deploy/`` sets in Kubernetes; a secret field (``SECRET_FIELDS``) may
   instead name a file holding it, ``VPP_<FIELD>_FILE`` (a mounted Secret),
   so that a secret is never on a command line or in a pod spec.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vpp.kafka_security import check_kafka_settings

__all__ = ["Settings", "TOPICS", "DEFAULT_PARTITIONS", "SECRETS", "SECRET_FIELDS", "ConfigError"]

#: Every topic of the platform. Names are the contract of ../shared/spec.
TOPICS = (
    "telemetry.raw",
    "telemetry.canonical",
    "telemetry.dlq",
    "fleet.aggregates",
    "dispatch.commands",
    "device.commands",
    "dispatch.status",
    "market.prices",
    "market.bids",
    "market.awards",
    "autobidder.forecast.requests",
    "autobidder.forecast.results",
    "autobidder.optimize.requests",
    "autobidder.optimize.results",
    "fleet.alerts",
    "fleet.events",
    "device.command_acks",
)

DEFAULT_PARTITIONS: Mapping[str, int] = {
    "telemetry.raw": 4,
    "telemetry.canonical": 4,
    "telemetry.dlq": 1,
    "fleet.aggregates": 2,
    "dispatch.commands": 1,
    "device.commands": 2,
    "dispatch.status": 1,
    "market.prices": 1,
    "market.bids": 1,
    "market.awards": 1,
    "autobidder.forecast.requests": 1,
    "autobidder.forecast.results": 1,
    "autobidder.optimize.requests": 1,
    "autobidder.optimize.results": 1,
    "fleet.alerts": 1,
    "fleet.events": 1,
    "device.command_acks": 1,
}


#: Settings of earlier releases that were replaced, and what to set instead.
RENAMED_SETTINGS = {
    "autobidder_horizon": "set autobidder_horizon_s (VPP_AUTOBIDDER_HORIZON_S) in seconds, e.g. 86400 for a day "
                          "(the old setting counted 5-minute intervals)",
}

#: Settings that hold a credential: each may come from a file named by ``VPP_<FIELD>_FILE`` (a mounted
#: Secret) instead of ``VPP_<FIELD>``, and none is ever printed whole (``vpp.errors.redact_dsn``).
_SERVICE_SECRETS = ("postgres_dsn", "timeseries_token", "kafka_sasl_password")


class ConfigError(ValueError):
    """A setting is missing, has the wrong type or a value that makes no sense; the message says which."""


from vpp.setting_ranges import _RANGES, market_interval_problem  # noqa: E402  (what each numeric setting may be)

#: Settings that are credentials: never shown (``repr``), and each may also come from a mounted file
#: named by ``VPP_<FIELD>_FILE`` (Kubernetes secrets) or by the local stack's ``stack.json``.
SECRETS = ("schema_registry_password", "schema_registry_admin_password", "market_token")
#: Every credential setting (those the stack generates, and the services' own): each may come from a file.
SECRET_FIELDS = SECRETS + _SERVICE_SECRETS

#: The optimize worker's solvers (``models.optimize.SOLVERS``; not imported here: it loads PuLP).
OPTIMIZE_SOLVERS = ("cbc", "highs")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


@dataclass(frozen=True)
class Settings:
    # -- services --------------------------------------------------------
    broker: str = "127.0.0.1:9092"
    # Kafka TLS and SASL (vpp.kafka_security: one client configuration for every client)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (PLAIN only over TLS)
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)  # a secret: VPP_KAFKA_SASL_PASSWORD_FILE
    kafka_ssl_ca_file: str = ""  # the CA that signed the broker's certificate (PEM); empty: the system's CAs
    schema_registry_url: str = "http://127.0.0.1:8081"
    postgres_dsn: str = field(default="postgresql://postgres@127.0.0.1:5432/vpp", repr=False)  # a secret
    timeseries_url: str = "http://127.0.0.1:8428"
    timeseries_org: str = "vpp"
    timeseries_bucket: str = "vpp"
    timeseries_token: str = field(default="unused", repr=False)  # a secret
    # the time range the time-series store keeps: a point outside it is counted and logged as dropped, not sent
    # to a store that answers 204 and drops it (VictoriaMetrics: 2 days ahead, its retention behind)
    timeseries_max_future_s: float = 86_400.0
    # canonicalize judges a reading's time also by the Kafka timestamp at which the platform received it; off only
    # for a simulation that runs faster than real time through the gateway (whose clock is the real one)
    platform_clock_check: bool = True
    timeseries_max_age_s: float = 100 * 365 * 86_400.0  # set it to the store's retention
    state_dir: str = ".vpp"
    # -- topics ------------------------------------------------------------
    topic_prefix: str = ""
    partitions: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PARTITIONS))
    # -- telemetry ------------------------------------------------------------
    dedup_horizon_s: int = 600
    assets_refresh_s: float = 5.0
    # -- aggregation ----------------------------------------------------------
    window_s: int = 10
    lateness_s: int = 5
    staleness_s: int = 60
    # -- flows ----------------------------------------------------------------
    recovery_dir: str = ""
    snapshot_interval_s: int = 5
    service_name: str = "vpp"
    # -- autobidder (appended) -------------------------------------------------
    market_url: str = "http://127.0.0.1:8700"
    autobidder_nodes: str = ""  # comma-separated node paths that bid, e.g. "us/ca,us/tx"
    forecast_model_dir: str = ""  # a `vpp train` model directory; empty: persistence forecast
    autobidder_step_timeout_s: float = 30.0  # wall seconds a forecast/optimize result may take
    autobidder_state_wait_s: float = 120.0  # wall seconds an interval's workflow waits for the node's first aggregate
    #: plan to sell at the forecast's p10 and to buy at its p90 where the forecast carries them (the day-ahead
    #: model): bids less where the forecast is uncertain (`vpp plan --risk-quantiles` live); others: the point forecast
    autobidder_risk_quantiles: bool = False
    autobidder_horizon_s: int = 86_400  # how far ahead the autobidder forecasts and plans (a day: 288 5-minute intervals)
    optimize_solver: str = "cbc"  # the optimize worker's MILP solver: cbc or highs
    optimize_time_limit_s: float = 20.0  # bound on one optimize-worker solve; 0: none
    setpoint_resend_s: int = 60  # dispatch sends an unchanged set point again once it is this old (0: never)
    # -- alerts (flow `alerts`, spec/alerts.md; times are event time) ---------------
    alert_tick_s: int = 5  # how often (event time) time-based rules (offline, outage, DLQ spike) are evaluated
    alert_offline_after_s: int = 90  # device_offline: no reading for this long; also the wait after a (re)start
    alert_forget_after_s: int = 604_800  # a device silent this long leaves the alerts flow's state (alerts end)
    alert_offline_resolve_readings: int = 2  # device_offline resolves after this many readings in a row
    alert_low_soc_raise_pct: float = 10.0  # low_soc: SoC below this ...
    alert_low_soc_for_s: int = 300  # ... for this long
    alert_low_soc_clear_pct: float = 15.0  # resolves at SoC >= this
    alert_islanded_for_s: int = 30  # islanded: grid_connected false for this long
    alert_islanded_clear_for_s: int = 60  # resolves after grid_connected true for this long
    alert_outage_raise_ratio: float = 0.5  # grid_outage: share of a node's reporting devices islanded >= this ...
    alert_outage_for_s: int = 60  # ... for this long
    alert_outage_clear_ratio: float = 0.2  # resolves when the share is below this ...
    alert_outage_clear_for_s: int = 300  # ... for this long
    alert_dlq_window_s: int = 300  # dlq_spike: dead letters of a dialect over this window ...
    alert_dlq_baseline_s: int = 3600  # ... against their rate over the baseline before it
    alert_dlq_factor: float = 5.0  # ... fires above max(factor x baseline rate, alert_dlq_min)
    alert_dlq_min: float = 20.0
    alert_dlq_clear_for_s: int = 600  # resolves below half that threshold for this long
    alert_shortfall_pct: float = 5.0  # dispatch_shortfall: node power misses its allocation by > max(pct, min_w) ...
    alert_shortfall_min_w: float = 1000.0
    alert_shortfall_windows: int = 2  # ... for this many windows (and resolves within it for as many)
    alert_webhook_url: str = ""  # JSON POST on each alert that fires or resolves (store-alerts flow); empty: none
    # -- device edge (vpp pki, vpp gateway) ----------------------------------------
    pki_dir: str = ""  # CA and server certificate; empty: <state_dir>/pki
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0  # 0: any free port (the URL goes to <state_dir>/gateway.json)
    gateway_max_frame_bytes: int = 262144  # a bigger telemetry frame is refused with an error
    gateway_max_readings: int = 500  # readings per telemetry frame
    gateway_max_frames_per_s: float = 20.0  # frames per second per device (token bucket, burst of one second)
    gateway_window: int = 8  # unacknowledged telemetry frames per device before its socket is no longer read
    gateway_refresh_s: float = 1.0  # how often certificates and assets are re-read (revocation reaches live sessions)
    gateway_ping_s: float = 20.0  # keep-alive ping interval, and how long a pong may take
    config_file: str = ""  # the TOML file these settings were read from; flows read their own tables from it
    # -- credentials (appended; see SECRETS) ---------------------------------------
    schema_registry_user: str = "vpp-reader"  # read-only identity: flows, serde, `vpp schemas list`
    schema_registry_password: str = field(default="", repr=False)
    schema_registry_admin_user: str = "vpp-admin"  # read-write identity: `vpp schemas register`, `vpp up`
    schema_registry_admin_password: str = field(default="", repr=False)
    market_token: str = field(default="", repr=False)  # bearer token of the market API (server and autobidder)
    max_bid_w: float = 10_000_000.0  # the market refuses a bid step of more than this many watts either way
    market_interval_s: int = 300  # the market's interval (900: 15 min, 3600: hourly); prices of another are dead letters
    session_key_file: str = ""  # `vpp serve`'s session-cookie key (a mounted Secret); empty: <state_dir>/console-session.key

    def __post_init__(self) -> None:
        """Refuse values that make no sense (a window of 0 s, a negative lateness), naming the setting and value."""
        for name, (low, inclusive, rule) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"setting {name!r} = {value!r} is not a number")
            if not math.isfinite(value) or value < low or (value == low and not inclusive):
                raise ConfigError(f"setting {name!r} = {value!r} {rule}")
        if self.optimize_solver not in OPTIMIZE_SOLVERS:
            raise ConfigError(f"setting 'optimize_solver' = {self.optimize_solver!r} is not one of {', '.join(OPTIMIZE_SOLVERS)}")
        problem = market_interval_problem(self.market_interval_s, self.autobidder_horizon_s)
        if problem:
            raise ConfigError(problem)
        problem = check_kafka_settings(self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
                                       self.kafka_sasl_password, self.kafka_ssl_ca_file)
        if problem:
            raise ConfigError(problem)
        for topic, count in self.partitions.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"partitions of {topic!r} = {count!r} must be a whole number of at least 1")

    # ------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The broker-side name of a platform topic (prefix allows sharing a cluster)."""
        if name not in TOPICS:
            raise ConfigError(f"unknown topic {name!r}; known topics: {', '.join(TOPICS)}")
        return f"{self.topic_prefix}{name}"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sd = Path(state_dir or env.get("VPP_STATE_DIR") or cls.state_dir)
        values["state_dir"] = str(sd)
        stack_file = sd / "stack.json"
        if stack_file.exists():
            try:
                values.update(_from_stack(json.loads(stack_file.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"cannot read the local stack's {stack_file}: {exc} (vpp down, then vpp up, rewrites it)") from exc
        cfg = config_file or env.get("VPP_CONFIG")
        if cfg:
            values["config_file"] = str(cfg)
            try:
                values.update(_flatten_toml(tomllib.loads(Path(cfg).read_text(encoding="utf-8"))))
            except OSError as exc:
                raise ConfigError(f"cannot read config file {cfg}: {exc.strerror or exc}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"config file {cfg} is not UTF-8 text (byte {exc.start}): is it a TOML file?") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {cfg} is not valid TOML: {exc}") from exc
        for old, new in RENAMED_SETTINGS.items():  # refused, not ignored: the old value would silently stop counting
            if old in values or f"VPP_{old.upper()}" in env:
                raise ConfigError(f"setting {old!r} (VPP_{old.upper()}) was replaced: {new}")
        for f in dataclasses.fields(cls):
            key = f"VPP_{f.name.upper()}"
            if key in env and f.name not in ("state_dir", "partitions"):
                values[f.name] = env[key]
        values.update(_secrets_from_files(env))
        if "VPP_PARTITIONS" in env:  # e.g. "telemetry.raw=8,telemetry.canonical=8"
            values["partitions"] = _parse_partitions(env["VPP_PARTITIONS"])
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: Mapping[str, Any]) -> "Settings":
        kwargs: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(cls)}
        for name, raw in values.items():
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
            default = getattr(cls, name, None) if name != "partitions" else {}
            if name == "partitions":
                kwargs[name] = _merge_partitions(raw)
                continue
            try:
                if isinstance(default, bool):
                    kwargs[name] = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    kwargs[name] = _as_int(raw)
                elif isinstance(default, float):
                    if isinstance(raw, bool):
                        raise TypeError(raw)
                    kwargs[name] = float(raw)
                else:
                    kwargs[name] = str(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"setting {name!r} = {raw!r} is not {_TYPE_NAMES[type(default)]}") from exc
        return cls(**kwargs)


def _as_int(raw: Any) -> int:
    """``raw`` as an int: an int, a string of one, or a whole float (TOML ``30.0``); never a bool or ``1.5``."""
    if isinstance(raw, bool):
        raise TypeError(raw)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError(raw)
        return int(raw)
    return int(raw)


def _merge_partitions(raw: Any) -> dict[str, int]:
    """The default partition counts updated by a ``[partitions]`` table (or ``VPP_PARTITIONS``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"partitions = {raw!r} must be a table of topic = COUNT, e.g. [partitions] \"telemetry.raw\" = 8")
    merged = dict(DEFAULT_PARTITIONS)
    for topic, count in raw.items():
        try:
            merged[str(topic)] = _as_int(count)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"partitions of {str(topic)!r} = {count!r} is not an integer") from exc
    return merged


def _secrets_from_files(env: Mapping[str, str]) -> dict[str, str]:
    """Each secret field named by ``VPP_<FIELD>_FILE``: the file's text without its final line break."""
    out: dict[str, str] = {}
    for name in SECRET_FIELDS:
        key = f"VPP_{name.upper()}"
        path = env.get(f"{key}_FILE")
        if not path:
            continue
        if key in env:
            raise ConfigError(f"both {key} and {key}_FILE are set: give the secret one way only")
        try:
            out[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read {key}_FILE={path}: {exc.strerror or exc} (is the Secret mounted there?)") from exc
    return out


def _from_stack(stack: Mapping[str, Any]) -> dict[str, Any]:
    """Map the local stack's addresses (``vpp status --json``) onto settings."""
    out: dict[str, Any] = {}
    if "broker" in stack:
        out["broker"] = stack["broker"]
    if "schema_registry" in stack:
        out["schema_registry_url"] = stack["schema_registry"]
    if "postgres" in stack:
        out["postgres_dsn"] = stack["postgres"]
    if "timeseries" in stack:
        out["timeseries_url"] = stack["timeseries"]
    for name, path in (stack.get("secret_files") or {}).items():
        if name in SECRETS:
            out[name] = _read_secret(path, f"the local stack's {name} file")
    return out


def _read_secret(path: str, what: str) -> str:
    """A credential from a file (a mounted secret): its text without the final line break."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _flatten_toml(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    if "partitions" in doc:
        out["partitions"] = doc["partitions"]
    return out


def _parse_partitions(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if not count.strip().isdigit():
            raise ConfigError(f"VPP_PARTITIONS entry {part!r} must look like topic=COUNT")
        out[name.strip()] = int(count)
    return out
