"""The edge device's configuration: a TOML file (/etc/oido/oido.toml) plus command-line overrides.

Every setting of the appliance that is not a model parameter lives here: which microphone,
which GPIO pin lights for which class, thresholds that override the model's, where events
go. Model parameters (framing, patches) come from the model's manifest, never from here; only
the window decisions, which the models never see, may be changed (`window_params`).

A mistake in the file raises ConfigError naming the file, the line, the key and the fix::

    /etc/oido/oido.toml:14: [leds.pins] crying_baby = 3: pin 3 is used twice ...
"""

from __future__ import annotations

import getpass
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from edge.detect import unknown_audioset_class
from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS, Params

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10 on older Pi images
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/oido/oido.toml")
"""Where `oido-edge listen` looks for its configuration when --config is not given."""

BCM_PINS = range(2, 28)
"""GPIO pins an LED may use: BCM 2-27 (the 40-pin header's GPIOs)."""

EVENT_LOG_NAME = "events.jsonl"
"""File name of the JSON-lines event log inside the state directory."""

STDOUT = "-"
"""Event log path meaning "write JSON lines to standard output"."""

MAX_BLOCK_SECONDS = 1.0
"""Longest audio block: the microphone counts 2 s without a block as a vanished device."""

MAX_EVENT_AUDIO_SECONDS = 300.0
"""Longest pre_roll_seconds + max_clip_seconds: the saver holds that much audio in RAM (58 MB at 48 kHz)."""

DeviceSpec = Union[str, int, None]


@dataclass(frozen=True)
class AudioConfig:
    """Where audio comes from."""

    device: DeviceSpec = None
    """Input device: a substring of its name or its index (`oido-edge devices`); None = system default."""
    rate_hz: Optional[int] = None
    """Capture rate; None = the device's default rate. Resampled to the model's rate in stream."""
    block_seconds: float = 0.1
    """Audio delivered per callback; smaller = lower latency, more wake-ups."""
    channels: int = 1
    """Channels captured; more than one are averaged to mono by the pipeline."""


@dataclass(frozen=True)
class DetectionConfig:
    """Thresholds that override the model manifest's, and the window decisions' length and overlap."""

    threshold: Optional[float] = None
    """Score every label without its own threshold must reach; None = the manifest's."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Per-label thresholds, in (0, 1]."""
    veto: Mapping[str, float] = field(default_factory=dict)
    """YAMNet AudioSet class -> score, laid over the model's veto (a patch YAMNet scores that
    high holds no evidence); 0 turns that class's veto off."""
    window_seconds: Optional[float] = None
    """Audio one window decision averages (the tutorial's NUM_SECONDS); None = the manifest's (3 s)."""
    overlap: Optional[float] = None
    """Fraction of a window shared with the next, in [0, 1) (the tutorial's OVERLAP_FACTOR); None =
    the manifest's (0.5). A decision every window_seconds x (1 - overlap)."""


@dataclass(frozen=True)
class LedConfig:
    """GPIO LEDs: one per class plus an optional status LED (BCM numbering)."""

    pins: Mapping[str, int] = field(default_factory=dict)
    """Label -> BCM pin of the LED lit while that class is detected."""
    status_pin: Optional[int] = None
    """BCM pin of the status LED: slow blink while listening, fast blink on a fault."""
    blink_seconds: float = 0.5
    """Half period of the status LED's 'alive' blink; the fault blink is four times faster."""


@dataclass(frozen=True)
class EventConfig:
    """Where detected events are written, and audio saved."""

    log: Optional[str] = None
    """JSON-lines event log path, or "-" for stdout; None = <state_dir>/events.jsonl."""
    save_dir: Optional[Path] = None
    """Save each event's audio as a WAV here; None = do not save audio."""
    budget_mb: float = 200.0
    """Disk the saved audio may use; the oldest files are deleted beyond it."""
    keep: int = 500
    """Most saved clips kept; the oldest are deleted beyond it."""
    pre_roll_seconds: float = 1.0
    """Audio saved from before an event's start."""
    max_clip_seconds: float = 15.0
    """Longest audio saved per event (the end of longer events is kept)."""
    keep_days: float = 7.0
    """Saved clips older than this many days are deleted (privacy: audio of the home is not kept for long)."""


@dataclass(frozen=True)
class EdgeConfig:
    """Everything `oido-edge listen` needs besides the model."""

    model_dir: Path = Path("model")
    """Directory holding manifest.json, yamnet.tflite and head.tflite."""
    state_dir: Optional[Path] = None
    """Writable directory for the event log; None = $STATE_DIRECTORY (systemd) or ~/.local/state/oido."""
    num_threads: int = 1
    """TF-Lite interpreter threads."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    leds: LedConfig = field(default_factory=LedConfig)
    events: EventConfig = field(default_factory=EventConfig)
    path: Optional[Path] = None
    """The TOML file this came from (for error messages); None = built-in defaults."""
    flags: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False)
    """(table, key) -> the command-line flag that set it, e.g. ("leds.pins", "kettle") -> "--pin kettle=5":
    a mistake in it is then blamed on the command line, not on the file."""

    def resolved_state_dir(self, environ: Optional[Mapping[str, str]] = None) -> Path:
        """The state directory: configured, else systemd's $STATE_DIRECTORY, else XDG state home."""
        env = os.environ if environ is None else environ
        if self.state_dir is not None:
            return self.state_dir
        if env.get("STATE_DIRECTORY"):
            # systemd may pass several colon-separated directories; the first is ours.
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        state_home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state_home) / "oido"

    def event_log_target(self, environ: Optional[Mapping[str, str]] = None) -> str:
        """The event log path, or "-" for stdout."""
        if self.events.log is not None:
            return self.events.log
        return str(self.resolved_state_dir(environ) / EVENT_LOG_NAME)

    def with_overrides(
        self,
        *,
        model_dir: Optional[Path] = None,
        device: DeviceSpec = None,
        rate_hz: Optional[int] = None,
        threshold: Optional[float] = None,
        thresholds: Optional[Mapping[str, float]] = None,
        status_pin: Optional[int] = None,
        pins: Optional[Mapping[str, int]] = None,
        event_log: Optional[str] = None,
        save_dir: Optional[Path] = None,
        num_threads: Optional[int] = None,
        window_seconds: Optional[float] = None,
        overlap: Optional[float] = None,
    ) -> "EdgeConfig":
        """A copy with command-line values (None = keep the file's) replacing the file's.

        Precedence is flag over file over the model's manifest: a flag's `threshold` (every label)
        drops the file's [detection.thresholds] as well as its [detection] threshold; the flag's own
        per-label `thresholds` then apply on top.
        Raises ConfigError if the result is invalid (e.g. a flag's pin clashes with the file's).
        """
        audio = replace(
            self.audio,
            device=self.audio.device if device is None else device,
            rate_hz=self.audio.rate_hz if rate_hz is None else rate_hz,
        )
        file_thresholds = self.detection.thresholds if threshold is None else {}
        detection = replace(
            self.detection,
            threshold=self.detection.threshold if threshold is None else threshold,
            thresholds={**file_thresholds, **(thresholds or {})},
            window_seconds=self.detection.window_seconds if window_seconds is None else window_seconds,
            overlap=self.detection.overlap if overlap is None else overlap,
        )
        flags = dict(self.flags)
        if device is not None:
            flags[("audio", "device")] = f"--device {device}"
        if rate_hz is not None:
            flags[("audio", "rate_hz")] = f"--rate {rate_hz}"
        if threshold is not None:
            flags[("detection", "threshold")] = f"--threshold {threshold:g}"
        for label, value in (thresholds or {}).items():
            flags[("detection.thresholds", label)] = f"--threshold {label}={value:g}"
        if window_seconds is not None:
            flags[("detection", "window_seconds")] = f"--window-seconds {window_seconds:g}"
        if overlap is not None:
            flags[("detection", "overlap")] = f"--overlap {overlap:g}"
        for label, pin in (pins or {}).items():
            flags[("leds.pins", label)] = f"--pin {label}={pin}"
        if event_log is not None:
            flags[("events", "log")] = f"--event-log {event_log}"
        if save_dir is not None:
            flags[("events", "save_dir")] = f"--save-events {save_dir}"
        leds = replace(
            self.leds,
            status_pin=self.leds.status_pin if status_pin is None else status_pin,
            pins={**self.leds.pins, **(pins or {})},
        )
        events = replace(
            self.events,
            log=self.events.log if event_log is None else event_log,
            save_dir=self.events.save_dir if save_dir is None else save_dir,
        )
        config = replace(
            self,
            model_dir=self.model_dir if model_dir is None else model_dir,
            num_threads=self.num_threads if num_threads is None else num_threads,
            audio=audio,
            detection=detection,
            leds=leds,
            events=events,
            flags=flags,
        )
        validate(config, where="command line")
        return config


# --- the file's schema: table -> key -> (dataclass field, allowed types) ---

_TOP_KEYS = {"model_dir": (str,), "state_dir": (str,), "num_threads": (int,)}
_TABLES: dict[str, dict[str, tuple[type, ...]]] = {
    "audio": {"device": (str, int), "rate_hz": (int,), "block_seconds": (int, float), "channels": (int,)},
    "detection": {"threshold": (int, float), "thresholds": (dict,), "veto": (dict,), "window_seconds": (int, float),
                  "overlap": (int, float)},
    "leds": {"status": (int,), "blink_seconds": (int, float), "pins": (dict,)},
    "events": {
        "log": (str,),
        "save_dir": (str,),
        "budget_mb": (int, float),
        "keep": (int,),
        "pre_roll_seconds": (int, float),
        "max_clip_seconds": (int, float),
        "keep_days": (int, float),
    },
}
# Keys of the file whose dataclass field has another name.
_FIELD_NAMES = {("leds", "status"): "status_pin"}


def _user_name() -> str:
    """This process's user name, or its uid where the name cannot be found (a container's bare uid)."""
    try:
        return getpass.getuser()
    except Exception:  # KeyError or OSError, by Python version, for a uid without a name
        return f"uid {os.getuid()}"


def read_toml_text(path: Union[str, Path], *, what: str, example: str) -> str:
    """The text of the TOML file `path` (`what` it is, e.g. "configuration", and `example`, the
    repository file to copy, name it in messages). Raises ConfigError naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such {what} file; pass --config with an existing file (an example is {example})"
        ) from None
    except PermissionError:
        # The service reads /etc/oido/oido.toml as its own user: an editor that saved it owner-only hides it.
        raise ConfigError(
            f"{path}: the {what} file cannot be read by user {_user_name()} (permission denied); "
            f"make it readable: sudo chmod 644 {path}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the {what} file: {error}") from None


def parse_toml(text: str, *, where: str) -> dict[str, Any]:
    """TOML `text` (from `where`, for messages) as a dict. Raises ConfigError with the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where}: not valid TOML: {error}; fix the syntax at that line") from None


def load_config(path: Union[str, Path]) -> EdgeConfig:
    """Read and validate a TOML configuration file.

    Relative paths in the file are taken relative to the file's directory.
    Raises ConfigError naming the file (and the line, where it can be found) for any mistake.
    """
    path = Path(path)
    return parse_config(read_toml_text(path, what="configuration", example="scripts/oido.toml"), path=path)


def parse_config(text: str, *, path: Optional[Path] = None) -> EdgeConfig:
    """Parse configuration TOML `text` (from `path`, used in messages and for relative paths)."""
    where = str(path) if path is not None else "<config>"
    document = parse_toml(text, where=where)

    locate = TomlLocator(text, where)
    base = path.parent if path is not None else Path.cwd()
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{locate(None, key)}: '{key}' must be a table; write it as [{key}]")
            continue
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{locate(None, key)}: unknown key '{key}'; known top-level keys: "
                f"{sorted(_TOP_KEYS)} and tables {sorted('[' + t + ']' for t in _TABLES)}"
            )
        _check_type(locate, None, key, value, _TOP_KEYS[key])
        values[key] = value

    tables: dict[str, dict[str, Any]] = {}
    for table, schema in _TABLES.items():
        entries = document.get(table, {})
        tables[table] = {}
        for key, value in entries.items():
            if key not in schema:
                raise ConfigError(
                    f"{locate(table, key)}: unknown key '{key}' in [{table}]; known keys: {sorted(schema)}"
                )
            _check_type(locate, table, key, value, schema[key])
            tables[table][_FIELD_NAMES.get((table, key), key)] = value

    def to_path(value: Optional[str]) -> Optional[Path]:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else base / candidate

    detection = tables["detection"]
    leds = tables["leds"]
    events = tables["events"]
    for label, pin in leds.get("pins", {}).items():
        _check_type(locate, "leds.pins", label, pin, (int,))
    for label, threshold in detection.get("thresholds", {}).items():
        _check_type(locate, "detection.thresholds", label, threshold, (int, float))
    for name, score in detection.get("veto", {}).items():
        _check_type(locate, "detection.veto", name, score, (int, float))
    if "log" in events and events["log"] != STDOUT:
        events["log"] = str(to_path(events["log"]))
    if "save_dir" in events:
        events["save_dir"] = to_path(events["save_dir"])
    for table in ("thresholds", "veto"):
        if table in detection:
            detection[table] = {k: float(v) for k, v in detection[table].items()}
    for key in ("window_seconds", "overlap"):
        if key in detection:
            detection[key] = float(detection[key])

    config = EdgeConfig(
        model_dir=to_path(values.get("model_dir")) or EdgeConfig.model_dir,
        state_dir=to_path(values.get("state_dir")),
        num_threads=values.get("num_threads", EdgeConfig.num_threads),
        audio=AudioConfig(**tables["audio"]),
        detection=DetectionConfig(**detection),
        leds=LedConfig(**leds),
        events=EventConfig(**events),
        path=path,
    )
    validate(config, where=where, locate=locate)
    return config


def validate(config: EdgeConfig, *, where: str, locate: Optional["TomlLocator"] = None) -> None:
    """Check values that TOML types cannot: ranges, pins, thresholds. Raises ConfigError."""
    at = locate or TomlLocator("", where)
    audio, leds, events, detection = config.audio, config.leds, config.events, config.detection
    if config.num_threads < 1:
        raise ConfigError(f"{at(None, 'num_threads')}: num_threads = {config.num_threads}; use 1 or more")
    if isinstance(audio.device, int) and audio.device < 0:
        raise ConfigError(
            f"{at('audio', 'device')}: device = {audio.device}; use an index >= 0 or a name "
            f"(list them with `oido-edge devices`)"
        )
    if audio.rate_hz is not None and audio.rate_hz <= 0:
        raise ConfigError(f"{at('audio', 'rate_hz')}: rate_hz = {audio.rate_hz}; use e.g. 48000 or leave it out")
    if not 0 < audio.block_seconds <= MAX_BLOCK_SECONDS:  # also refuses nan
        raise ConfigError(
            f"{at('audio', 'block_seconds')}: block_seconds = {audio.block_seconds} must be > 0 and at most "
            f"{MAX_BLOCK_SECONDS:g}, e.g. 0.1"
        )
    if audio.channels < 1:
        raise ConfigError(f"{at('audio', 'channels')}: channels = {audio.channels}; use 1 or more")

    if detection.threshold is not None:
        _check_unit(at, "detection", "threshold", detection.threshold)
    for label, threshold in detection.thresholds.items():
        _check_unit(at, "detection.thresholds", label, threshold)
    for name, score in detection.veto.items():
        if not 0.0 <= score <= 1.0:  # also refuses nan
            raise ConfigError(
                f"{at('detection.veto', name)}: {name} = {score}; a veto is a YAMNet score in (0, 1], or 0 to turn it off"
            )
    window_params(DEFAULT_PARAMS, config, at=at)  # the model's params are checked again when it loads

    used: dict[int, str] = {}
    named = [("leds.pins", label, pin) for label, pin in leds.pins.items()]
    if leds.status_pin is not None:
        named.append(("leds", "status", leds.status_pin))
    for table, key, pin in named:
        if isinstance(pin, bool) or not isinstance(pin, int) or pin not in BCM_PINS:
            raise ConfigError(
                f"{at(table, key)}: [{table}] {key} = {pin!r} is not a usable GPIO pin; "
                f"use a BCM number from {BCM_PINS.start} to {BCM_PINS.stop - 1}"
            )
        if pin in used:
            raise ConfigError(
                f"{at(table, key)}: [{table}] {key} = {pin}: pin {pin} is used twice "
                f"(also by '{used[pin]}'); give each LED its own pin"
            )
        used[pin] = key
    if not (math.isfinite(leds.blink_seconds) and leds.blink_seconds > 0):
        raise ConfigError(f"{at('leds', 'blink_seconds')}: blink_seconds = {leds.blink_seconds} must be > 0, e.g. 0.5")

    if not (math.isfinite(events.budget_mb) and events.budget_mb > 0):
        raise ConfigError(f"{at('events', 'budget_mb')}: budget_mb = {events.budget_mb} must be > 0, e.g. 200")
    if events.keep < 1:
        raise ConfigError(f"{at('events', 'keep')}: keep must be >= 1, e.g. 500")
    if not (math.isfinite(events.keep_days) and events.keep_days > 0):
        raise ConfigError(f"{at('events', 'keep_days')}: keep_days = {events.keep_days} must be > 0, e.g. 7")
    if not events.pre_roll_seconds >= 0:  # also refuses nan
        raise ConfigError(f"{at('events', 'pre_roll_seconds')}: pre_roll_seconds must be >= 0")
    if not events.max_clip_seconds > 0:
        raise ConfigError(f"{at('events', 'max_clip_seconds')}: max_clip_seconds must be > 0, e.g. 15")
    if not events.pre_roll_seconds + events.max_clip_seconds <= MAX_EVENT_AUDIO_SECONDS:
        key = "max_clip_seconds" if events.max_clip_seconds >= events.pre_roll_seconds else "pre_roll_seconds"
        raise ConfigError(
            f"{at('events', key)}: pre_roll_seconds + max_clip_seconds must be at most "
            f"{MAX_EVENT_AUDIO_SECONDS:g} s (that much audio is kept in memory), e.g. 1 and 15"
        )


def window_params(params: Params, config: EdgeConfig, *, at: Optional["TomlLocator"] = None) -> Params:
    """`params` (the model's) with the config's window decisions laid over them: [detection]
    window_seconds and overlap, or --window-seconds and --overlap (flag over file over manifest).

    Only the windows change: the models see patches, never windows. Raises ConfigError naming the
    setting (the flag, or file:line) when Params refuses it: a window shorter than one patch, an
    overlap outside [0, 1).
    """
    at = at or locator_for(config)
    for key in ("overlap", "window_seconds"):  # overlap first: Params checks it without the window
        value = getattr(config.detection, key)
        if value is None:
            continue
        try:
            params = params.with_changes(**{key: value})
        except ValueError as error:
            flag = config.flags.get(("detection", key))
            where = f"command line: {flag}" if flag else f"{at('detection', key)}: [detection] {key} = {value}"
            raise ConfigError(f"{where}: {error}") from None
    return params


def check_labels(
    config: EdgeConfig,
    labels: Iterable[str],
    *,
    model_dir: Optional[Path] = None,
    audioset_classes: Optional[Sequence[str]] = None,
) -> None:
    """Check that every label named in the pin map and thresholds is one the model outputs, and
    every [detection.veto] name one of YAMNet's `audioset_classes` (the manifest's; None = not checked).

    Raises ConfigError naming the config file and the line (or the flag, for a name given on the
    command line) and the model's labels or the closest AudioSet class names.
    """
    known = list(labels)
    at = locator_for(config)
    model = f" of the model in {model_dir}" if model_dir is not None else " of the model"
    for table, names in (("leds.pins", config.leds.pins), ("detection.thresholds", config.detection.thresholds)):
        for label in names:
            if label not in known:
                flag = config.flags.get((table, label))
                where = f"command line: {flag}:" if flag else f"{at(table, label)}: [{table}]"
                raise ConfigError(
                    f"{where} names class '{label}', which is not one of the labels"
                    f"{model}: {known}; fix the spelling or remove that entry"
                )
    if audioset_classes is None:
        return
    for name, score in config.detection.veto.items():
        # A misspelt name is refused even with 0 (off): the veto it meant to turn off would stay on.
        if not audioset_classes:
            if score > 0:
                raise ConfigError(
                    f"{at('detection.veto', name)}: [detection.veto] names AudioSet class '{name}' but the model's "
                    f"manifest lacks YAMNet's class names: re-export the model with oido-convert, or drop the entry"
                )
            continue
        why = unknown_audioset_class(name, audioset_classes)
        if why is not None:
            raise ConfigError(f"{at('detection.veto', name)}: [detection.veto] {why}")


def locator_for(config: EdgeConfig) -> "TomlLocator":
    """Points messages about `config` at `file:line` of its file ("command line" without a file)."""
    if config.path is None:
        return TomlLocator("", "command line")
    try:
        text = config.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # moved or made unreadable since it was loaded: the name alone
        text = ""
    return TomlLocator(text, str(config.path))


def find_default_config() -> Optional[Path]:
    """The default configuration file if it exists, else None."""
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def parse_assignment(text: str, *, flag: str) -> tuple[str, str]:
    """Split a `NAME=VALUE` command-line argument; raises ConfigError naming the flag."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ConfigError(f"{flag} {text!r}: expected NAME=VALUE, e.g. {flag} crying_baby=17")
    return name.strip(), value.strip()


def known_keys() -> dict[str, list[str]]:
    """The keys the file may hold, per table ("" = top level); used by docs and tests."""
    return {"": sorted(_TOP_KEYS), **{table: sorted(keys) for table, keys in _TABLES.items()}}


# --- helpers ---


def _check_type(
    locate: "TomlLocator", table: Optional[str], key: str, value: Any, types: tuple[type, ...]
) -> None:
    # TOML booleans are Python ints; a pin or a rate is never true/false.
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        prefix = f"[{table}] " if table else ""
        raise ConfigError(f"{locate(table, key)}: {prefix}{key} = {value!r} must be {wanted}")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "a table"}


def _check_unit(at: "TomlLocator", table: str, key: str, value: float) -> None:
    # 0 would fire on every patch: the detector takes thresholds in (0, 1].
    if not 0.0 < float(value) <= 1.0:
        raise ConfigError(
            f"{at(table, key)}: [{table}] {key} = {value} is outside (0, 1]; "
            f"thresholds are probabilities, e.g. 0.5"
        )


class TomlLocator:
    """Finds `key` inside `[table]` in the TOML text, to point messages at `file:line`."""

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str, where: str) -> None:
        self._lines = text.splitlines()
        self._where = where

    def __call__(self, table: Optional[str], key: str) -> str:
        line = self.line_of(table, key)
        return f"{self._where}:{line}" if line is not None else self._where

    def line_of(self, table: Optional[str], key: str) -> Optional[int]:
        """1-based line of `key = ...` inside `[table]` (None = top level), or None if not found."""
        current: Optional[str] = None
        key_pattern = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
        for number, line in enumerate(self._lines, start=1):
            header = self._HEADER.match(line)
            if header:
                current = header.group(1).replace(" ", "")
                if table is None and current == key:
                    return number
                continue
            if current == table and key_pattern.match(line):
                return number
            # Dotted keys at a parent level: `pins.crying_baby = 17` under [leds].
            if table is not None and current is not None and table.startswith(current + "."):
                dotted = table[len(current) + 1 :] + "." + key
                if re.match(rf"^\s*{re.escape(dotted)}\s*=", line):
                    return number
        return None
