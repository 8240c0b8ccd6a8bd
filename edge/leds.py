"""GPIO LEDs: one per detected class, plus a status LED that blinks while the device listens.

The pin factory is passed in (gpiozero's `pin_factory=`): on a Pi it is gpiozero's default
(lgpio), in tests gpiozero.pins.mock.MockFactory. Where no pin factory works (not a Pi, pins
busy, no permission) `open_led_bank` logs one warning and returns a NullLedBank, so the
device keeps classifying and logging without lights.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Callable, Mapping, Optional, Union

from edge.config import LedConfig

log = logging.getLogger(__name__)

FAULT_BLINK_SPEEDUP = 4
"""The status LED blinks this many times faster on a fault than while healthy."""

GPIO_HINT = "On a Pi: install python3-lgpio, add the user to the 'gpio' group and check no other program holds the pins."


def status_blink_seconds(mode: str, *, blink_seconds: float) -> tuple[float, float]:
    """(on, off) seconds of the status LED's blink in `mode` ("alive" or "fault"), given the alive
    blink's half period `blink_seconds`; the fault blink is FAULT_BLINK_SPEEDUP times faster."""
    if mode == "alive":
        half_period = blink_seconds
    elif mode == "fault":
        half_period = blink_seconds / FAULT_BLINK_SPEEDUP
    else:
        raise ValueError(f"the status LED blinks only when 'alive' or 'fault', not {mode!r}")
    return half_period, half_period


class LedBank:
    """One gpiozero LED per label, and an optional status LED.

    pin_map: label -> BCM pin. Labels without a pin (e.g. the background class) are ignored
    by on()/off(). blink_seconds: half period of the status LED's 'alive' blink (None = the
    LedConfig default).
    """

    def __init__(
        self,
        pin_map: Mapping[str, int],
        *,
        status_pin: Optional[int] = None,
        pin_factory: Any = None,
        blink_seconds: Optional[float] = None,
    ) -> None:
        from gpiozero import LED  # imported here: the core never needs gpiozero

        self._blink_seconds = LedConfig.blink_seconds if blink_seconds is None else blink_seconds
        if self._blink_seconds <= 0:
            raise ValueError(f"blink_seconds must be > 0, got {blink_seconds}")
        self._leds: dict[str, Any] = {}
        self._status: Any = None
        self._status_mode = "off"
        try:
            with warnings.catch_warnings():
                # gpiozero warns once per factory it falls back from; the caller logs one line instead.
                warnings.simplefilter("ignore")
                for label, pin in pin_map.items():
                    self._leds[label] = LED(pin, pin_factory=pin_factory)
                if status_pin is not None:
                    self._status = LED(status_pin, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise
        self._closed = False

    @property
    def labels(self) -> list[str]:
        """Labels that have an LED."""
        return list(self._leds)

    @property
    def is_null(self) -> bool:
        return False

    def on(self, label: str) -> None:
        """Light the LED of `label` (no-op for a label without a pin)."""
        led = self._leds.get(label)
        if led is not None and not self._closed:
            led.on()

    def off(self, label: str) -> None:
        """Turn off the LED of `label` (no-op for a label without a pin)."""
        led = self._leds.get(label)
        if led is not None and not self._closed:
            led.off()

    def is_lit(self, label: str) -> bool:
        led = self._leds.get(label)
        return bool(led is not None and not self._closed and led.is_lit)

    def all_off(self) -> None:
        """Turn every class LED off (the status LED keeps its mode)."""
        if self._closed:
            return
        for led in self._leds.values():
            led.off()

    def status_alive(self) -> None:
        """Status LED: slow blink, the device is listening."""
        self._set_status("alive")

    def status_fault(self) -> None:
        """Status LED: fast blink, the microphone failed and is being reopened."""
        self._set_status("fault")

    def status_off(self) -> None:
        if self._status is not None and not self._closed and self._status_mode != "off":
            self._status.off()
        self._status_mode = "off"

    @property
    def status_mode(self) -> str:
        """"off", "alive" or "fault"."""
        return self._status_mode

    def _set_status(self, mode: str) -> None:
        if self._closed or self._status_mode == mode:
            return
        self._status_mode = mode
        if self._status is not None:
            on_seconds, off_seconds = status_blink_seconds(mode, blink_seconds=self._blink_seconds)
            # Logged so a run (and a test) can see each change of blink without timing the pin.
            log.debug("status LED %s: %s, blinking %g s on, %g s off", self._status.pin, mode, on_seconds, off_seconds)
            self._status.blink(on_time=on_seconds, off_time=off_seconds, background=True)

    def close(self) -> None:
        """All LEDs off and their pins released; safe to call twice.

        A pin that fails (e.g. lgpio lost its chip handle) is logged and the others are still
        turned off and released; the first failure is raised once every LED has been tried.
        """
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._status_mode = "off"
        devices = [*self._leds.items(), *([("status", self._status)] if self._status is not None else [])]
        first_error: Optional[Exception] = None
        for name, led in devices:
            for step, call in (("off", led.off), ("close", led.close)):
                try:
                    call()
                except Exception as error:  # noqa: BLE001 - one bad pin must not leave the others lit
                    log.warning("LED %s: %s() failed: %s: %s", name, step, type(error).__name__, error)
                    first_error = first_error or error
        if first_error is not None:
            raise first_error

    def __enter__(self) -> "LedBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pins(self) -> dict[str, Any]:
        """Label (and "status") -> the gpiozero pin object, for tests and --mock-gpio."""
        pins = {label: led.pin for label, led in self._leds.items()}
        if self._status is not None:
            pins["status"] = self._status.pin
        return pins


class NullLedBank:
    """The LedBank interface without hardware: keeps track of what would be lit, lights nothing."""

    def __init__(self, pin_map: Optional[Mapping[str, int]] = None) -> None:
        self._labels = list(pin_map or {})
        self._lit: set[str] = set()
        self._status_mode = "off"

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def is_null(self) -> bool:
        return True

    def on(self, label: str) -> None:
        if label in self._labels:
            self._lit.add(label)

    def off(self, label: str) -> None:
        self._lit.discard(label)

    def is_lit(self, label: str) -> bool:
        return label in self._lit

    def all_off(self) -> None:
        self._lit.clear()

    def status_alive(self) -> None:
        self._status_mode = "alive"

    def status_fault(self) -> None:
        self._status_mode = "fault"

    def status_off(self) -> None:
        self._status_mode = "off"

    @property
    def status_mode(self) -> str:
        return self._status_mode

    def close(self) -> None:
        self.all_off()
        self._status_mode = "off"

    def __enter__(self) -> "NullLedBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pins(self) -> dict[str, Any]:
        return {}


AnyLedBank = Union[LedBank, NullLedBank]


def open_led_bank(
    pin_map: Mapping[str, int],
    *,
    status_pin: Optional[int] = None,
    pin_factory: Any = None,
    blink_seconds: Optional[float] = None,
) -> AnyLedBank:
    """A LedBank, or a NullLedBank (after ONE warning) when the pins cannot be driven here.

    An empty pin map without a status pin gives a NullLedBank silently.
    """
    if blink_seconds is not None and blink_seconds <= 0:
        raise ValueError(f"blink_seconds must be > 0, got {blink_seconds}; use e.g. 0.5")
    if not pin_map and status_pin is None:
        return NullLedBank()
    try:
        return LedBank(pin_map, status_pin=status_pin, pin_factory=pin_factory, blink_seconds=blink_seconds)
    except Exception as error:  # noqa: BLE001 - any GPIO failure (no Pi, busy pin, lgpio error) means "no LEDs"
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        log.warning("GPIO LEDs unavailable (%s); running without LEDs. %s", reason, GPIO_HINT)
        return NullLedBank(pin_map)


def light_each_in_turn(
    bank: LedBank,
    pin_map: Mapping[str, int],
    *,
    status_pin: Optional[int],
    seconds: float,
    rounds: int = 1,
    stop: Optional[threading.Event] = None,
    say: Callable[[str], None] = print,
) -> int:
    """The wiring check: each class LED alone for `seconds`, in the map's order, then the status LED
    blinking as it does while listening; `rounds` times, or until `stop` is set. Returns how many
    LEDs were lit."""
    stop = stop or threading.Event()
    lit = 0
    for _ in range(rounds):
        for label, pin in pin_map.items():
            if stop.is_set():
                return lit
            say(f"{label}: GPIO{pin} on for {seconds:g} s")
            bank.on(label)
            lit += 1
            stop.wait(seconds)
            bank.off(label)
        if status_pin is not None and not stop.is_set():
            say(f"status: GPIO{status_pin} blinking for {seconds:g} s")
            bank.status_alive()
            lit += 1
            stop.wait(seconds)
            bank.status_off()
    return lit


def pin_history(bank: AnyLedBank) -> dict[str, list[tuple[float, bool]]]:
    """For mock pins: name -> [(seconds since the pin was created, state), ...] of every change."""
    history: dict[str, list[tuple[float, bool]]] = {}
    for name, pin in bank.pins().items():
        states = getattr(pin, "states", None)
        if states is None:
            continue
        elapsed = 0.0
        changes = []
        for state in states:
            elapsed += state.timestamp
            changes.append((elapsed, bool(state.state)))
        history[name] = changes
    return history
