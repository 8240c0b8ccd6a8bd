"""`oido-edge`: listen to a microphone, replay files, record clips, list audio inputs.

Parsing and wiring only; the work is in edge.listen (listen/replay), edge.record and
edge.sources. Never imports TensorFlow: this runs on the Pi with a TF-Lite runtime.

    oido-edge listen [--config /etc/oido/oido.toml] [--device USB] [--duration 60]
    oido-edge replay clip.wav other.flac recordings/ [--realtime] [--leds --mock-gpio]
    oido-edge record --seconds 5 --dataset data/mine --label crying_baby
    oido-edge devices
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence

from edge.config import (
    DEFAULT_CONFIG_PATH,
    MAX_BLOCK_SECONDS,
    AudioConfig,
    EdgeConfig,
    check_labels,
    find_default_config,
    load_config,
    locator_for,
    parse_assignment,
    window_params,
)
from edge.detect import DetectorConfig
from edge.errors import AudioError, ConfigError, OidoError, listed
from edge.params import DEFAULT_PARAMS, MAX_WINDOW_SECONDS

log = logging.getLogger(__name__)

EXIT_OK = 0
MAX_EVENT_DAYS = 36500
"""`oido-edge events --days` beyond this (100 years) is a typo, and overflows dates."""
EXIT_FAILURE = 1
"""Something broke at run time (audio device, disk)."""
EXIT_USAGE = 2
"""The user asked for something impossible (bad flag, config, model dir); the message says how to fix it."""


# --- argument parsing ---


def threshold_arg(text: str) -> tuple[Optional[str], float]:
    """`0.6` (every label) or `crying_baby=0.7`."""
    if "=" in text:
        label, value = text.split("=", 1)
        label = label.strip()
    else:
        label, value = None, text
    try:
        return label, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a probability (e.g. 0.6) or LABEL=PROBABILITY (e.g. crying_baby=0.7)"
        ) from None


def _pin_arg(text: str) -> tuple[str, int]:
    try:
        label, value = parse_assignment(text, flag="--pin")
        return label, int(value)
    except (ConfigError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=BCM_PIN, e.g. crying_baby=17") from None


def _device_arg(text: str) -> Any:
    return int(text) if text.strip().isdigit() else text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):  # nan, inf: a traceback later, not an answer
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number > 0")
    return value


def _finite_float(text: str) -> float:
    """A number; its range is Params' to check (edge.config.window_params), naming the flag."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _days_arg(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_EVENT_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_EVENT_DAYS} days")
    return value


def _block_seconds_arg(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_BLOCK_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_BLOCK_SECONDS:g} s (e.g. 0.1)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    # -v/-q are accepted before or after the command (`oido-edge listen -v`).
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="debug logging; listen shows the live window view even when not on a terminal")
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="warnings and errors only")
    parser = argparse.ArgumentParser(
        prog="oido-edge",
        description="Oído on the device: detect custom sounds with YAMNet + a small head and light an LED per class.",
        parents=[common],
    )
    parser.set_defaults(verbose=False, quiet=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path,
                         help="TOML configuration (default: /etc/oido/oido.toml if it exists)")
        sub.add_argument("--model-dir", type=Path,
                         help="exported model: manifest.json, yamnet.tflite, head.tflite (default: ./model)")
        sub.add_argument("--threshold", type=threshold_arg, action="append", default=[], metavar="[LABEL=]P",
                         help="onset threshold: P for every label, replacing the model's per-label thresholds "
                              "from its manifest.json and the config's [detection] threshold and "
                              "[detection.thresholds]; LABEL=P for one label (crying_baby=0.7), applied after P; "
                              "repeatable. Each label's threshold is the first of: this flag, the config file, the "
                              "manifest (labels without one there use its default_threshold, "
                              f"{DetectorConfig.default_threshold:g} if it has none)")
        sub.add_argument("--window-seconds", type=_finite_float, metavar="SECONDS",
                         help="audio one window decision averages, from one patch plus one hop "
                              f"({DEFAULT_PARAMS.patch_seconds + DEFAULT_PARAMS.hop_seconds:.3f} s) to "
                              f"{MAX_WINDOW_SECONDS:g} s; the tutorial's NUM_SECONDS (default: the "
                              f"manifest's, {DEFAULT_PARAMS.window_seconds:g}; overrides the config's [detection] "
                              "window_seconds). Windows only: the events and LEDs work per patch")
        sub.add_argument("--overlap", type=_finite_float, metavar="FRACTION",
                         help="fraction of a window shared with the next, in [0, 1): a decision every "
                              "window x (1 - overlap); the tutorial's OVERLAP_FACTOR (default: the manifest's, "
                              f"{DEFAULT_PARAMS.overlap:g}; overrides the config's [detection] overlap)")
        sub.add_argument("--threads", type=_positive_int, help="TF-Lite interpreter threads (default 1)")
        sub.add_argument("--block-seconds", type=_block_seconds_arg,
                         help=f"audio per block (default {AudioConfig.block_seconds})")
        sub.add_argument("--event-log", metavar="PATH",
                         help="append finished events as JSON lines to PATH ('-' = stdout)")
        sub.add_argument("--patches", action="store_true",
                         help="also print one line per patch: its end time, level, the top classes as "
                              "probability/threshold (* at or over it), and what YAMNet hears, or why the patch "
                              "holds no evidence (silent, vetoed): why a sound did or did not light its LED")

    def led_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--pin", type=_pin_arg, action="append", default=[], metavar="LABEL=BCM",
                         help="LED pin of a class, overriding the config (repeatable)")
        sub.add_argument("--status-pin", type=int, metavar="BCM", help="pin of the status LED")
        sub.add_argument("--mock-gpio", action="store_true",
                         help="drive gpiozero's MockFactory instead of real pins and print the pin history")

    def device_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", type=_device_arg,
                         help="input device: part of its name or its index (see `oido-edge devices`)")
        sub.add_argument("--rate", type=_positive_int, metavar="HZ",
                         help="capture rate (default: the device's default rate; resampled to 16 kHz in stream)")

    listen = commands.add_parser("listen", parents=[common], help="microphone -> detections -> LEDs and event log")
    model_options(listen)
    device_options(listen)
    led_options(listen)
    listen.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after this much audio")
    listen.add_argument("--save-events", type=Path, metavar="DIR",
                        help="save each event's audio as a WAV in DIR (disk budget and count from the config)")
    listen.add_argument("--no-leds", action="store_true", help="do not touch GPIO")
    listen.add_argument("--check", action="store_true",
                        help="check the config, the model (one patch through it), the pins against its labels, the "
                             "input device and the event log's folder, print what listen would use, and exit; opens "
                             "neither the microphone nor the pins, so it runs beside the service")
    listen.add_argument("--wait-for-input", action="store_true",
                        help="when the input device is missing, busy or refuses the settings at start, wait for it "
                             "(retrying with back-off, the status LED blinking fast) instead of exiting 2, so a USB "
                             "microphone plugged in after boot is picked up; the service runs with it. With --check, "
                             "a missing input is reported, not an error")
    listen.set_defaults(run=cmd_listen)

    replay = commands.add_parser("replay", parents=[common], help="the same pipeline on audio files; prints windows and events")
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="WAV/FLAC files, any rate; a folder replays every audio file under it, in name order")
    model_options(replay)
    led_options(replay)
    replay.add_argument("--realtime", action="store_true", help="feed audio at real-time pace (default: as fast as possible)")
    replay.add_argument("--leds", action="store_true", help="drive the configured LEDs too")
    replay.add_argument("--summary-only", action="store_true", help="print only one line per file")
    replay.set_defaults(run=cmd_replay)

    record = commands.add_parser("record", parents=[common], help="microphone -> 16 kHz mono WAV")
    record.add_argument("output", nargs="?", type=Path, help="WAV to write, named .wav; its folder is made if missing (or use --dataset and --label)")
    record.add_argument("--seconds", type=_positive_float, default=DEFAULT_PARAMS.clip_seconds,
                        help=f"how long to record (default {DEFAULT_PARAMS.clip_seconds:g})")
    record.add_argument("--dataset", type=Path, metavar="DIR",
                        help="write DIR/LABEL/<session>_NNNN.wav: one session per run, named by its start time, "
                             "numbered on from the folder's last take")
    record.add_argument("--label", help="class name for --dataset")
    record.add_argument("--count", type=_positive_int, default=1, metavar="N",
                        help="with --dataset: N takes of --seconds each, cut from one continuous capture "
                             "(default 1); prepare keeps a session's takes in one fold")
    record.add_argument("--pcm16", action="store_true", help="16-bit PCM instead of float32")
    record.add_argument("--config", type=Path, help="TOML configuration, for the [audio] settings")
    device_options(record)
    record.set_defaults(run=cmd_record)

    leds = commands.add_parser("leds", parents=[common],
                               help="light each configured LED in turn, named: check the wiring")
    leds.add_argument("--config", type=Path, help="TOML configuration (default: /etc/oido/oido.toml if it exists)")
    led_options(leds)
    leds.add_argument("--seconds", type=_positive_float, default=2.0, help="how long each LED stays on (default 2)")
    leds.add_argument("--rounds", type=_positive_int, default=1, help="how many times to go round (default 1)")
    leds.set_defaults(run=cmd_leds)

    events = commands.add_parser("events", parents=[common],
                                 help="what the device heard: events per day and the latest ones, from the event log")
    events.add_argument("--config", type=Path, help="TOML configuration (default: /etc/oido/oido.toml if it exists)")
    events.add_argument("--event-log", metavar="PATH",
                        help="the log to read, with its rotated files (default: the config's, e.g. "
                             "/var/lib/oido/events.jsonl)")
    events.add_argument("--days", type=_days_arg, default=7.0, help="how far back to count (default 7)")
    events.add_argument("--last", type=_positive_int, default=10, help="how many of the latest events to list (default 10)")
    events.add_argument("--utc", action="store_true", help="times in UTC (default: this machine's local time)")
    events.set_defaults(run=cmd_events)

    devices = commands.add_parser("devices", parents=[common], help="list audio inputs and the capture rates they support")
    devices.set_defaults(run=cmd_devices)
    return parser


# --- shared wiring ---


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def load_edge_config(args: argparse.Namespace) -> EdgeConfig:
    """The config file (given, or the default if present), with the flags laid over it."""
    path = getattr(args, "config", None) or find_default_config()
    config = load_config(path) if path is not None else EdgeConfig()
    if path is not None:
        log.info("configuration: %s", path)
    default_threshold = None
    thresholds: dict[str, float] = {}
    for label, value in getattr(args, "threshold", []) or []:
        if label is None:
            default_threshold = value
        else:
            thresholds[label] = value
    return config.with_overrides(
        model_dir=getattr(args, "model_dir", None),
        device=getattr(args, "device", None),
        rate_hz=getattr(args, "rate", None),
        threshold=default_threshold,
        thresholds=thresholds,
        status_pin=getattr(args, "status_pin", None),
        pins=dict(getattr(args, "pin", []) or []),
        event_log=getattr(args, "event_log", None),
        save_dir=getattr(args, "save_events", None),
        num_threads=getattr(args, "threads", None),
        window_seconds=getattr(args, "window_seconds", None),
        overlap=getattr(args, "overlap", None),
    )


def _block_seconds(args: argparse.Namespace, config: EdgeConfig) -> float:
    return getattr(args, "block_seconds", None) or config.audio.block_seconds


def _load_base_pipeline(config: EdgeConfig) -> Any:
    """The model's pipeline (at the model's rate), with the config's thresholds and window decisions;
    checks the config's labels."""
    from edge.detect import threshold_text, thresholds_text
    from edge.listen import detector_config_for, pipeline_for_rate
    from edge.pipeline import load_pipeline

    pipeline = load_pipeline(config.model_dir, num_threads=config.num_threads)
    check_labels(config, pipeline.labels, model_dir=config.model_dir,
                 audioset_classes=pipeline.detector.audioset_classes)
    detector_config = detector_config_for(pipeline.detector.config, config)
    params = window_params(pipeline.params, config)
    log.info("model %s: labels %s, thresholds %s (default %s), veto %s; a %g s window every %g s", config.model_dir,
             list(pipeline.labels), thresholds_text(detector_config.thresholds) or "none",
             threshold_text(detector_config.default_threshold), dict(detector_config.veto) or "none",
             params.window_seconds, params.decision_hop_seconds)  # fmt: skip
    return pipeline_for_rate(pipeline, pipeline.input_rate_hz, detector_config=detector_config, params=params)


def _open_leds(config: EdgeConfig, *, mock: bool) -> Any:
    from edge.leds import open_led_bank

    factory = None
    if mock:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    return open_led_bank(config.leds.pins, status_pin=config.leds.status_pin, pin_factory=factory,
                         blink_seconds=config.leds.blink_seconds)


def _print_pin_history(leds: Any, config: EdgeConfig, *, clock_note: str = "") -> None:
    from edge.leds import pin_history

    pins = {**config.leds.pins, **({"status": config.leds.status_pin} if config.leds.status_pin is not None else {})}
    if clock_note:
        print(f"gpio pin changes, {clock_note}")
    for name, changes in pin_history(leds).items():
        states = " ".join(f"{'on' if state else 'off'}@{seconds:.2f}" for seconds, state in changes)
        print(f"gpio {name} pin {pins.get(name)}: {states}")


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `stop` (the loop then ends cleanly) instead of killing the process."""

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- commands ---


def cmd_listen(args: argparse.Namespace) -> int:
    from edge.leds import NullLedBank
    from edge.listen import ConsoleView, listen_to
    from edge.sources import MicrophoneSource

    config = load_edge_config(args)
    if args.check:
        return _check_listen(config, wait_for_input=args.wait_for_input)
    leds: Any = NullLedBank(config.leds.pins)
    mic = MicrophoneSource(
        config.audio.device,
        config.audio.rate_hz,
        _block_seconds(args, config),
        config.audio.channels,
        on_fault=lambda why: leds.status_fault(),
        on_recover=lambda: leds.status_alive(),
    )
    # Signals are handled from the start: a SIGTERM while the model loads still exits cleanly.
    with _stop_on_signals(mic.stop), contextlib.ExitStack() as stack:
        stack.callback(mic.close)
        base = _load_base_pipeline(config)
        if mic.stopped:
            return EXIT_OK
        if not args.no_leds:
            leds = _open_leds(config, mock=args.mock_gpio)
        stack.callback(leds.close)
        if not args.wait_for_input:
            mic.open()
        elif not mic.open_when_available(on_waiting=lambda why: leds.status_fault()):
            return EXIT_OK  # stopped while waiting
        assert mic.rate_hz is not None and mic.device is not None
        console = ConsoleView(enabled=sys.stdout.isatty() or args.verbose or args.patches, patches=args.patches,
                              events_always=True)  # a service's journal: its events, not every window
        leds.status_alive()
        report = listen_to(mic, base, config, leds=leds, console=console, duration_seconds=args.duration,
                           source_name=f"mic:{mic.device.name}")
        log.info(
            "listened %.1f s: %d patches, %d windows, %d event(s) (%d not logged), %d overflow(s), "
            "%d underflow(s), %d dropped block(s), %d reopen(s); processing took %.0f%% of real time",
            report.input_seconds, report.patches, report.window_count, report.event_count, report.events_lost,
            mic.overflows, mic.underflows, mic.dropped_blocks, mic.reopens,
            100.0 * report.processing_seconds / max(report.input_seconds, 1e-9),
        )
        leds.all_off()
        leds.status_off()
        if args.mock_gpio:
            _print_pin_history(leds, config)
    return EXIT_OK


def _check_listen(config: EdgeConfig, *, wait_for_input: bool = False) -> int:
    """`listen --check`: everything listen checks at start, without the microphone or the pins.

    wait_for_input: a missing input device (listen --wait-for-input would wait for it) is reported,
    not an error; the capture rate is then checked against the resampler only.
    """
    import numpy as np

    from edge.detect import thresholds_text
    from edge.sources import DeviceError, import_sounddevice, resolve_input_device

    base = _load_base_pipeline(config)  # the config's labels, thresholds and veto against the model
    noise = np.random.default_rng(0).uniform(-0.01, 0.01, base.params.patch_samples).astype(np.float32)
    started = time.perf_counter()
    ran = len(base.push(noise).patches) + len(base.flush().patches)
    print(f"model: {config.model_dir}: labels {', '.join(base.labels)}; thresholds "
          f"{thresholds_text(base.detector.config.thresholds) or 'none'}; {ran} patch(es) of test noise "
          f"ran in {1000 * (time.perf_counter() - started):.0f} ms; a {base.params.window_seconds:g} s window "
          f"every {base.params.decision_hop_seconds:g} s")
    sd = import_sounddevice()
    try:
        device = resolve_input_device(config.audio.device, sd=sd)
    except DeviceError as error:
        if not wait_for_input:
            raise
        if config.audio.rate_hz is not None:
            _check_resampling(base, config.audio.rate_hz, config)
        print(f"input: none now ({str(error).splitlines()[0]}); listen --wait-for-input waits for it")
    else:
        rate_hz = config.audio.rate_hz or device.default_rate_hz
        _check_capture(sd, device, rate_hz, config)
        _check_resampling(base, rate_hz, config)
        resampled = "" if rate_hz == base.params.sample_rate_hz else f", resampled to {base.params.sample_rate_hz} Hz"
        print(f"input: {device.index} '{device.name}' ({device.hostapi}) at {rate_hz} Hz{resampled}")
    pins = ", ".join(f"{label} GPIO{pin}" for label, pin in config.leds.pins.items()) or "none"
    status = f"GPIO{config.leds.status_pin}" if config.leds.status_pin is not None else "none"
    print(f"LEDs: {pins}; status {status} (`oido-edge leds` lights them in turn)")
    target = config.event_log_target()
    if target != "-":
        problem = _as_service_user(config, f"the event log {target}", lambda: _unwritable(Path(target), folder=False))
        if problem:
            raise ConfigError(f"the event log {target} cannot be written: {problem}")
    save_dir = config.events.save_dir
    if save_dir is not None:
        setting = _setting(config, "events", "save_dir", save_dir)
        problem = _as_service_user(config, f"{setting}: the folder", lambda: _unwritable(save_dir, folder=True))
        if problem:
            raise ConfigError(f"{setting}: event audio cannot be saved there: {problem}; give a folder this user "
                              f"can write")
    saving = (f"{save_dir} (at most {config.events.budget_mb:g} MB, {config.events.keep} clips, "
              f"{config.events.keep_days:g} days)") if save_dir is not None else "off"
    print(f"event log: {target}; event audio: {saving}")
    print("check passed" + (f": `systemctl restart oido-edge` applies {config.path}" if config.path else ""))
    return EXIT_OK


SERVICE_USER = "oido"
"""The user the service runs as (scripts/oido-edge.service, scripts/install_pi.sh)."""

SERVICE_COMMAND = "/opt/oido/venv/bin/oido-edge"
"""Where scripts/install_pi.sh installs oido-edge (sudo's PATH lacks the venv)."""


def _setting(config: EdgeConfig, table: str, key: str, value: Any) -> str:
    """Where a setting came from, to start a message: "command line: --rate 96001" for a flag, else
    "/etc/oido/oido.toml:18: [audio] rate_hz = 48000" (the file and line, where known)."""
    flag = config.flags.get((table, key))
    if flag:
        return f"command line: {flag}"
    shown = f'"{value}"' if isinstance(value, (str, Path)) else value
    return f"{locator_for(config)(table, key)}: [{table}] {key} = {shown}"


def _check_capture(sd: Any, device: Any, rate_hz: int, config: EdgeConfig) -> None:
    """What listen's MicrophoneSource.open asks PortAudio: can `device` capture [audio] channels at
    `rate_hz` (Hz), float32? Raises ConfigError naming [audio] rate_hz (or channels) and the rates it takes."""
    channels = config.audio.channels

    def refusal(rate: int, channel_count: int) -> Optional[str]:
        try:
            sd.check_input_settings(device=device.index, samplerate=rate, channels=channel_count, dtype="float32")
        except Exception as error:  # noqa: BLE001 - PortAudio's refusal types vary by version
            return str(error) or type(error).__name__
        return None

    why = refusal(rate_hz, channels)
    if why is None:
        return
    name = f"audio input {device.index} '{device.name}'"
    if channels != 1 and refusal(rate_hz, 1) is None:
        raise ConfigError(
            f"{_setting(config, 'audio', 'channels', channels)}: {name} cannot capture {channels} channels at "
            f"{rate_hz} Hz ({why}); set channels = 1 (the model hears mono: more channels are only averaged)"
        )
    from edge.sources import PROBE_RATES_HZ

    tried = sorted({*PROBE_RATES_HZ, device.default_rate_hz})
    supported = [rate for rate in tried if refusal(rate, channels) is None]
    offer = (f"it takes {', '.join(map(str, supported))} Hz" if supported else
             f"it takes none of {', '.join(map(str, tried))} Hz (see `oido-edge devices`)")
    pick = "that rate" if len(supported) == 1 else "one of them"
    if config.audio.rate_hz is None:
        where = f"{config.path}: [audio] rate_hz is not set" if config.path else "no --rate given"
        raise ConfigError(f"{where}, and {name} refuses its own default rate {rate_hz} Hz ({why}); {offer}: "
                          f"set [audio] rate_hz (or --rate) to {pick}")
    raise ConfigError(
        f"{_setting(config, 'audio', 'rate_hz', rate_hz)}: {name} cannot capture {channels} channel(s) at "
        f"{rate_hz} Hz ({why}); {offer}: use {pick}, or leave the rate out for the device's default "
        f"({device.default_rate_hz} Hz)"
    )


def _check_resampling(base: Any, rate_hz: int, config: EdgeConfig) -> None:
    """ConfigError naming [audio] rate_hz when audio at `rate_hz` (Hz) cannot be resampled to the model's
    rate (e.g. 96001 Hz needs too long a filter): at start listen would stop with a traceback."""
    from edge.resample import can_resample

    if not can_resample(rate_hz, base.params.sample_rate_hz):
        raise ConfigError(
            f"{_setting(config, 'audio', 'rate_hz', rate_hz)}: audio at {rate_hz} Hz cannot be resampled to "
            f"the model's {base.params.sample_rate_hz} Hz; capture at a standard rate such as 48000 or 44100 Hz"
        )


def _unwritable(path: Path, *, folder: bool) -> Optional[str]:
    """Why listen could not write `path` (the event log, or with `folder` the event audio folder), or None.

    A missing folder is made at start (by listen, or by the unit's StateDirectory=), so only what
    exists is checked: the path itself, else its parent, else that the nearest existing ancestor is
    a folder (nothing can be made under a file). PermissionError when a folder cannot be looked into.
    """
    if path.exists():
        if path.is_dir() != folder:
            return f"{path} is {'not a folder' if folder else 'a folder'}"
        target = path
    else:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"{ancestor} is a file, not a folder"
        if ancestor != path.parent:
            return None
        target = ancestor
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        return f"{target} is not writable by this user"
    return None


def _as_service_user(config: EdgeConfig, what: str, check: Callable[[], Optional[str]]) -> Optional[str]:
    """`check()`, with a folder this user may not even look into (/var/lib/oido is the service user's,
    mode 0750) turned into a ConfigError saying to run the check as the service user."""
    try:
        return check()
    except PermissionError as error:
        command = sys.argv[0] if Path(sys.argv[0]).name == "oido-edge" and Path(sys.argv[0]).is_absolute() else (
            SERVICE_COMMAND)
        config_flag = f" --config {config.path}" if config.path and config.path != DEFAULT_CONFIG_PATH else ""
        raise ConfigError(
            f"{what} cannot be checked: permission denied on {error.filename or 'a folder on its way'} (the "
            f"service's folders are its own); run the check as the service user: "
            f"sudo -u {SERVICE_USER} {command} listen --check{config_flag}"
        ) from None


def cmd_replay(args: argparse.Namespace) -> int:
    from edge.audio import audio_files_in
    from edge.events import EventLog
    from edge.leds import NullLedBank
    from edge.listen import ConsoleView, format_summary, replay_source
    from edge.sources import FileSource

    config = load_edge_config(args)
    # Every file's header is checked before the model loads: a typo fails at once, naming every bad file.
    files = [found for path in args.files for found in (audio_files_in(path) if path.is_dir() else [path])]
    sources: list[FileSource] = []
    unreadable: list[AudioError] = []
    for path in files:
        try:
            sources.append(FileSource(path, block_seconds=_block_seconds(args, config), realtime=args.realtime))
        except AudioError as error:
            unreadable.append(error)
    if len(unreadable) == 1:
        raise unreadable[0]
    if unreadable:
        raise AudioError(listed(f"{len(unreadable)} of {len(files)} files cannot be read", unreadable))
    base = _load_base_pipeline(config)
    use_leds = args.leds or args.mock_gpio
    leds = _open_leds(config, mock=args.mock_gpio) if use_leds else NullLedBank(config.leds.pins)
    summaries = []
    broken: list[Path] = []
    stopping = threading.Event()

    def stop() -> None:
        stopping.set()
        for source in sources:
            source.stop()

    with contextlib.ExitStack() as stack:
        stack.callback(leds.close)
        event_log = stack.enter_context(EventLog(args.event_log)) if args.event_log else None
        console = ConsoleView(enabled=not args.summary_only, patches=args.patches)
        leds.status_alive()
        with _stop_on_signals(stop):
            for source in sources:
                if stopping.is_set():
                    break
                console.line(f"== {source.path} ({source.duration_seconds:.2f} s at {source.rate_hz} Hz)")
                try:
                    summaries.append(replay_source(source, base, leds=leds, event_log=event_log, console=console,
                                                   name=str(source.path)))
                except AudioError as error:  # corrupt past its header: the other files still play
                    log.error("%s; skipped, the other files go on", error)
                    broken.append(source.path)
        leds.status_off()
        print(format_summary(summaries))
        if broken:
            print(f"{len(broken)} file(s) could not be read to the end and are not counted above: "
                  + ", ".join(map(str, broken)))
        if args.mock_gpio:
            # The pins change in wall-clock time: audio time only when the files play in real time.
            _print_pin_history(leds, config, clock_note="in seconds since start" if args.realtime else
                               "in wall-clock seconds: the files played faster than real time, so these are not "
                               "audio times (--realtime makes them so; the events above are in audio time)")  # fmt: skip
    return EXIT_FAILURE if broken else EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    from edge.record import (SUBTYPES, check_output_folder, check_output_path, label_folder, missing_folders, record,
                             record_session, remove_empty_folders)
    from edge.sources import MicrophoneSource

    if (args.dataset is None) == (args.output is None):
        raise ConfigError("give either an output WAV or --dataset DIR --label NAME (not both)")
    if args.dataset is not None and not args.label:
        raise ConfigError("--dataset needs --label NAME (the class folder to number the recording in)")
    if args.output is not None and args.count != 1:
        raise ConfigError(f"--count {args.count} needs --dataset DIR --label NAME (one output WAV holds one take)")
    # Everything that can refuse the take is checked before the microphone opens: a bad label, a
    # folder or a .flac name for the WAV, a folder that cannot be made (made here when it can).
    folder = label_folder(args.dataset, args.label) if args.dataset is not None else None
    config = load_edge_config(args)
    # Folders made for the takes are removed again when none is written (the microphone is busy,
    # Ctrl-C before the first take): an empty class folder would stop `oido-train prepare`.
    made = missing_folders(folder if folder is not None else Path(args.output).parent)
    if folder is not None:
        check_output_folder(folder)
    else:
        check_output_path(args.output)
    subtype = SUBTYPES["pcm16" if args.pcm16 else "float32"]
    mic = MicrophoneSource(config.audio.device, config.audio.rate_hz, config.audio.block_seconds,
                           config.audio.channels)
    results: list = []
    try:
        with contextlib.closing(mic):
            mic.open()
            with _stop_on_signals(mic.stop):
                if args.output is not None:
                    log.info("recording %.1f s to %s", args.seconds, args.output)
                    results = [record(mic, args.output, seconds=args.seconds, subtype=subtype)]
                else:
                    results = record_session(mic, args.dataset, args.label, seconds=args.seconds,
                                             takes=args.count, subtype=subtype)
    finally:
        if not any(result.path is not None for result in results):
            remove_empty_folders(made)
    written = [result for result in results if result.path is not None]
    for result in written:
        print(f"{result.path}: {result.seconds:.2f} s at {DEFAULT_PARAMS.sample_rate_hz} Hz, peak {result.peak_dbfs:.1f} dBFS"
              + (" (interrupted)" if result.interrupted else ""))
        problem = result.level_problem()
        if problem:
            log.warning("%s", problem)
    if not written:
        return EXIT_FAILURE
    return EXIT_FAILURE if any(result.error is not None for result in results) else EXIT_OK


def cmd_leds(args: argparse.Namespace) -> int:
    from edge.leds import GPIO_HINT, LedBank, light_each_in_turn

    config = load_edge_config(args)
    pins, status_pin = dict(config.leds.pins), config.leds.status_pin
    if not pins and status_pin is None:
        raise ConfigError("no LED pins to check: name them under [leds.pins] (and [leds] status) in the config, "
                          "or give --pin LABEL=BCM")
    factory = None
    if args.mock_gpio:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    try:
        bank = LedBank(pins, status_pin=status_pin, pin_factory=factory, blink_seconds=config.leds.blink_seconds)
    except Exception as error:  # noqa: BLE001 - the same failures open_led_bank turns into "no LEDs"
        log.error("cannot drive the GPIO pins (%s: %s). %s", type(error).__name__, error, GPIO_HINT)
        return EXIT_FAILURE
    stop = threading.Event()
    with bank, _stop_on_signals(stop.set):
        lit = light_each_in_turn(bank, pins, status_pin=status_pin, seconds=args.seconds, rounds=args.rounds,
                                 stop=stop, say=lambda line: print(line, flush=True))
        if args.mock_gpio:
            _print_pin_history(bank, config)
    log.info("%d LED(s) lit in turn%s; all off", lit, " (stopped)" if stop.is_set() else "")
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    import datetime as dt

    from edge.events import history_text, read_event_logs

    config = load_edge_config(args)
    target = config.event_log_target()
    if target == "-":
        raise ConfigError("the config logs events to stdout ('-'): give --event-log PATH to read a log file")
    path = Path(target)
    try:
        records, bad, files = read_event_logs(path)
    except PermissionError as error:
        # The service's log belongs to its user (/var/lib/oido is oido's, mode 0750). sudo's PATH
        # lacks the venv, so name this very command (/opt/oido/venv/bin/oido-edge on a Pi).
        command = sys.argv[0] if Path(sys.argv[0]).name == "oido-edge" else "oido-edge"
        raise ConfigError(
            f"{error.filename or path}: permission denied: the event log is the service user's; "
            f"read it as root: sudo {command} events"
        ) from None
    if not files:
        print(f"no events logged yet: {path} does not exist (another log: --event-log PATH)")
        return EXIT_OK
    rotated = len(files) - (1 if path in files else 0)
    print(f"{path}" + (f" and {rotated} rotated file(s)" if rotated else "") + f": {len(records)} event(s) in all")
    if bad:
        log.warning("%d line(s) that are not event records were skipped", bad)
    print(history_text(records, days=args.days, last=args.last, now=dt.datetime.now(dt.timezone.utc),
                       tz=dt.timezone.utc if args.utc else None))
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from edge.sources import PROBE_RATES_HZ, import_sounddevice, list_input_devices

    sd = import_sounddevice()
    devices = list_input_devices(sd=sd)
    if not devices:
        print("no audio input devices found (plug in a microphone; check `arecord -l`)")
        return EXIT_OK
    default_index = sd.default.device[0]
    rates = "".join(f"{rate:>7d}" for rate in PROBE_RATES_HZ)
    print(f"  index  {'name':<40s} {'hostapi':<10s} ch  default{rates}")
    for device in devices:
        mark = "*" if device.index == default_index else " "
        supported = "".join(f"{'yes' if device.supported_rates_hz[r] else 'no':>7s}" for r in PROBE_RATES_HZ)
        print(f"{mark} {device.index:5d}  {device.name:<40.40s} {device.hostapi:<10.10s} {device.channels:2d}  "
              f"{device.default_rate_hz:7d}{supported}")
    print("* = default input; pass --device with part of a name or an index")
    return EXIT_OK


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Until a command installs its own handlers, SIGTERM behaves like Ctrl-C (exit 0, cleanups run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `oido-edge` console script; returns the exit status."""
    with _sigterm_interrupts():
        status = _main(argv)
    if argv is None and _interrupted_early:
        exit_now(status)
    return status


_interrupted_early = False
"""Set when a signal interrupted start-up (imports, model load) before the commands' own handlers."""


def exit_now(status: int) -> NoReturn:
    """Exit with `status` after an interrupt at start-up, even if the interrupt passed through C code.

    A KeyboardInterrupt raised inside code a C extension runs through PyRun_* marks the interpreter
    as "interrupted" for good, and CPython then ends the process BY SIGINT (exit -2 / 130) however
    the exception was handled. systemd would log that as a failure. Flush what we wrote, run the
    exit handlers, and leave with our own status instead.
    """
    import atexit

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    atexit._run_exitfuncs()
    os._exit(status)


def _main(argv: Optional[Sequence[str]]) -> int:
    global _interrupted_early
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        _interrupted_early = True
        return EXIT_OK
    _configure_logging(args)
    from edge.sources import SourceError

    try:
        return int(args.run(args))
    except OidoError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except SourceError as error:
        log.error("%s", error)
        return EXIT_FAILURE
    except OSError as error:
        log.error("%s", error)
        return EXIT_FAILURE
    except Exception as error:
        # sounddevice.PortAudioError is no OSError; matched by name so the CLI need not import sounddevice.
        if type(error).__name__ != "PortAudioError":
            raise
        log.error("the audio system failed: %s; check the sound card (`arecord -l`) and PortAudio "
                  "(`python -m sounddevice` lists what it sees)", error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # Only before the signal handlers are installed (e.g. while the model loads).
        _interrupted_early = True
        log.warning("interrupted")
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
