"""Where audio comes from: a microphone, a file, or a scripted fake for tests.

Every source yields float32 blocks [n, channels] at its own `rate_hz`; the pipeline resamples
to the model's rate. A source may also yield a `Gap` when audio was lost (the microphone failed
and is being reopened, or blocks were dropped because the consumer fell behind), so the consumer
knows the blocks either side are not contiguous. A microphone also says when each block was
captured (`block_capture_time`), so event times follow the wall clock even when it is stepped.

sounddevice is imported only when a microphone is opened or listed: importing it raises
OSError where PortAudio is missing, and files must still work there.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np
import numpy.typing as npt

from edge.config import DeviceSpec
from edge.errors import AudioError, OidoError
from edge.params import DEFAULT_PARAMS
from edge.resample import can_resample

log = logging.getLogger(__name__)

Block = npt.NDArray[np.float32]
"""float32 [n, channels] in [-1, 1] at the source's rate_hz."""

PROBE_RATES_HZ = (16000, 44100, 48000)
"""Capture rates `oido-edge devices` checks each input for."""

STALL_SECONDS = 2.0
"""No audio from an open stream for this long means the device is gone: reopen it."""

QUEUE_SECONDS = 5.0
"""Audio buffered between the capture callback and the consumer before blocks are dropped."""

QUEUE_RESUME_FRACTION = 0.5
"""Once a block is dropped, blocks are dropped until the queue is no fuller than this fraction: a consumer
that falls behind loses one stretch of audio (one Gap, one flush) instead of every other block."""

BACKOFF_INITIAL_SECONDS = 0.5
"""First wait before reopening a failed microphone; doubles on each attempt until audio flows again."""

BACKOFF_MAX_SECONDS = 30.0
"""Longest wait between attempts to reopen a failed microphone."""

OVERFLOW_LOG_SECONDS = 10.0
"""Input overflows are logged at most once per this interval (with running totals)."""

POLL_SECONDS = 0.1
"""How often a waiting consumer checks for stop() and stalls."""


class DeviceError(OidoError):
    """The requested audio input does not exist or cannot capture as asked; the message lists the inputs."""


class SourceError(RuntimeError):
    """A source failed in a way it cannot recover from."""


@dataclass(frozen=True)
class Gap:
    """Audio was lost between the blocks before and after this marker (e.g. the microphone was reopened)."""

    reason: str


SourceItem = Union[Block, Gap]


_Source = TypeVar("_Source", bound="StoppableSource")


class StoppableSource:
    """What every source shares: stop() (safe from a signal handler or another thread) makes
    blocks() return soon, and a `with` block closes the source."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def stop(self) -> None:
        """Make blocks() return soon."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self.stop()

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class InputDevice:
    """One audio input as PortAudio sees it."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_rate_hz: int
    supported_rates_hz: Mapping[int, bool]
    """Rate -> whether sd.check_input_settings accepts it (mono)."""


def import_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio into a SourceError with an install hint."""
    try:
        import sounddevice
    except OSError as error:  # sounddevice raises OSError when libportaudio is missing
        raise SourceError(
            f"cannot load PortAudio ({error}); install it with `sudo apt install libportaudio2`"
        ) from None
    except ImportError:
        raise SourceError("sounddevice is not installed; install the edge extra: pip install '.[edge]'") from None
    return sounddevice


def list_input_devices(
    *, sd: Optional[ModuleType] = None, probe_rates_hz: Sequence[int] = PROBE_RATES_HZ
) -> list[InputDevice]:
    """Every device with input channels, with the rates it accepts."""
    sd = sd or import_sounddevice()
    hostapis = sd.query_hostapis()
    devices = []
    for index, info in enumerate(sd.query_devices()):
        channels = int(info["max_input_channels"])
        if channels < 1:
            continue
        supported = {}
        for rate in probe_rates_hz:
            try:
                sd.check_input_settings(device=index, samplerate=rate, channels=1, dtype="float32")
                supported[rate] = True
            except Exception:  # noqa: BLE001 - PortAudio reports refusals as assorted errors
                supported[rate] = False
        hostapi = hostapis[info["hostapi"]]["name"] if info["hostapi"] < len(hostapis) else "?"
        devices.append(
            InputDevice(
                index=index,
                name=str(info["name"]),
                hostapi=str(hostapi),
                channels=channels,
                default_rate_hz=int(round(info["default_samplerate"])),
                supported_rates_hz=supported,
            )
        )
    return devices


def resolve_input_device(spec: DeviceSpec, *, sd: Optional[ModuleType] = None) -> InputDevice:
    """The input named by `spec`: an index, a digit string, a case-insensitive name substring, or None (default).

    An exact name beats a substring. Raises DeviceError listing the inputs when none or several match.
    """
    sd = sd or import_sounddevice()
    devices = list_input_devices(sd=sd, probe_rates_hz=())
    listing = _describe(devices)
    if not devices:
        raise DeviceError(
            "no audio input devices found; plug in a microphone (USB sound card) and check `arecord -l`"
        )
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        default_index = sd.default.device[0]
        if default_index is None or default_index < 0:
            return devices[0]
        for device in devices:
            if device.index == default_index:
                return device
        return devices[0]
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for device in devices:
            if device.index == index:
                return device
        raise DeviceError(f"no audio input with index {index}; choose one of:\n{listing}")
    wanted = spec.strip().lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in devices if wanted in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no audio input matches {spec!r}; choose one of (name part or index):\n{listing}")
    raise DeviceError(
        f"{len(matches)} audio inputs match {spec!r}; use a longer name part or the index:\n{_describe(matches)}"
    )


def _describe(devices: Sequence[InputDevice]) -> str:
    return "\n".join(
        f"  {d.index:3d}  {d.name}  ({d.channels} ch, {d.default_rate_hz} Hz)" for d in devices
    ) or "  (none)"


def check_capture_rate(
    device: InputDevice, rate_hz: int, *, resample_to_hz: int = DEFAULT_PARAMS.sample_rate_hz
) -> None:
    """Raise DeviceError, naming --rate / [audio] rate_hz and the standard rates, if capture at rate_hz (Hz)
    cannot be resampled to resample_to_hz (Hz, the model's rate). PortAudio may accept such a rate (ALSA's
    plughw takes any): 96001 Hz would need a 16-million-tap filter."""
    if can_resample(rate_hz, resample_to_hz):
        return
    default = " (its default rate)" if rate_hz == device.default_rate_hz else ""
    raise DeviceError(
        f"audio input {device.index} '{device.name}': {rate_hz} Hz{default} cannot be resampled to the model's "
        f"{resample_to_hz} Hz; capture at a standard rate: --rate or [audio] rate_hz = one of "
        f"{', '.join(str(rate) for rate in PROBE_RATES_HZ)} (see `oido-edge devices`)"
    )


class MicrophoneSource(StoppableSource):
    """Blocks from a sounddevice InputStream, surviving overflows and a device that vanishes.

    The PortAudio callback only copies each block (with the wall time it ran) into a queue; the
    consumer iterates `blocks()`. Input overflows and underflows are counted and logged, never
    raised. Blocks dropped because the consumer fell QUEUE_SECONDS behind are reported by a Gap
    before the next block. If the stream errors or stops delivering audio, it is closed, a Gap is
    yielded at once (so the consumer can end open events during the outage), and then it is
    reopened with exponential back-off: on_fault is called once per outage, when it starts, and
    on_recover once audio flows again (the first block after a reopen), not when a reopened stream
    merely starts. The back-off keeps doubling, up to its maximum, until audio flows.

    device: name substring, index or None (default input). rate_hz: capture rate, None = the
    device's default rate. block_seconds: audio per callback. sd: the sounddevice module
    (passed in by tests; imported on open otherwise). resample_to_hz: the rate the capture is
    resampled to (the model's); open() refuses a capture rate the resampler cannot convert.
    wall_clock: POSIX time in seconds, read in the callback (passed in by tests).
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        rate_hz: Optional[int] = None,
        block_seconds: float = 0.1,
        channels: int = 1,
        *,
        sd: Optional[ModuleType] = None,
        on_fault: Optional[Callable[[str], None]] = None,
        on_recover: Optional[Callable[[], None]] = None,
        stall_seconds: float = STALL_SECONDS,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
        resample_to_hz: int = DEFAULT_PARAMS.sample_rate_hz,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self._device_spec = device
        self._requested_rate_hz = rate_hz
        self.block_seconds = block_seconds
        self.channels = channels
        self._sd = sd
        self._on_fault = on_fault
        self._on_recover = on_recover
        self._stall_seconds = stall_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._resample_to_hz = resample_to_hz
        self._wall_clock = wall_clock
        super().__init__()
        # (block, wall time the callback ran, dropped_blocks when it was queued)
        self._queue: "queue.Queue[tuple[Block, float, int]]" = queue.Queue()
        self._stream: Any = None
        self._stream_failed = threading.Event()
        self.device: Optional[InputDevice] = None
        self.rate_hz: Optional[int] = rate_hz
        self.overflows = 0
        """Callbacks that reported status.input_overflow (audio lost inside PortAudio)."""
        self.underflows = 0
        """Callbacks that reported status.input_underflow (PortAudio padded the block with silence)."""
        self.dropped_blocks = 0
        """Blocks dropped because the consumer fell QUEUE_SECONDS behind (each run of drops yields one Gap)."""
        self.reopens = 0
        """Times the stream was reopened after a fault."""
        self.block_capture_time: Optional[float] = None
        """POSIX time (s) the last sample of the block blocks() yielded last was captured: when the
        PortAudio callback delivering it ran. None before the first block."""
        self._backoff_seconds = backoff_initial_seconds
        self._outage: Optional[str] = None  # why audio stopped, until the first block after a reopen
        self._dropped_seen = 0
        self._resume_queue_size = 0
        self._shedding = False
        self._logged_overflows = 0
        self._last_overflow_log = -float("inf")

    # --- lifecycle ---

    def open(self) -> "MicrophoneSource":
        """Open the stream; raises DeviceError / SourceError if the device cannot capture as asked."""
        if self._sd is None:
            self._sd = import_sounddevice()
        self.device = resolve_input_device(self._device_spec, sd=self._sd)
        if self.rate_hz is None:
            self.rate_hz = self.device.default_rate_hz
        check_capture_rate(self.device, self.rate_hz, resample_to_hz=self._resample_to_hz)
        try:
            self._sd.check_input_settings(
                device=self.device.index, samplerate=self.rate_hz, channels=self.channels, dtype="float32"
            )
        except Exception as error:  # noqa: BLE001 - PortAudio's refusal types vary by version
            raise DeviceError(
                f"audio input {self.device.index} '{self.device.name}' cannot capture {self.channels} channel(s) "
                f"at {self.rate_hz} Hz ({error}); its default rate is {self.device.default_rate_hz} Hz "
                f"(see `oido-edge devices`), pass --rate (or [audio] rate_hz) with a supported one"
                + ("" if self.channels == 1 else ", or capture 1 channel ([audio] channels = 1)")
            ) from None
        try:
            self._start_stream()
        except Exception as error:  # noqa: BLE001 - sd.PortAudioError and friends
            raise SourceError(
                f"cannot open audio input {self.device.index} '{self.device.name}' ({error}); "
                f"is another program using it? (`fuser -v /dev/snd/*`; on an installed Pi, the service: "
                f"`sudo systemctl stop oido-edge`)"
            ) from None
        log.info(
            "listening on input %d '%s' at %d Hz, %d channel(s), %.3f s blocks",
            self.device.index, self.device.name, self.rate_hz, self.channels, self.block_seconds,
        )
        return self

    def open_when_available(self, *, on_waiting: Optional[Callable[[str], None]] = None) -> bool:
        """open(), waiting with back-off while the input is missing, busy or refuses the settings (a USB
        microphone plugged in after boot); True once open, False if stop() came first.

        on_waiting(why) is called once, when the first attempt fails. Each new reason is logged once
        at WARNING; the waits double from backoff_initial_seconds up to backoff_max_seconds. A
        missing PortAudio (SourceError from the import) is raised at once: no wait brings it back.
        """
        if self._sd is None:
            self._sd = import_sounddevice()
        delay = self._backoff_initial
        reasons: set[str] = set()
        while not self._stop.is_set():
            self.rate_hz = self._requested_rate_hz  # a device found on an earlier try set its own default
            try:
                self.open()
            except (DeviceError, SourceError) as error:
                why = str(error)
                if not reasons and on_waiting is not None:
                    on_waiting(why)
                if why not in reasons:
                    reasons.add(why)
                    log.warning("waiting for the audio input: %s; trying again, at least every %g s", why,
                                self._backoff_max)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, self._backoff_max)
                self._refresh_devices()  # PortAudio lists devices once per initialisation
                continue
            if reasons:
                log.warning("audio input found after waiting: %d '%s'", self.device.index, self.device.name)
            return True
        return False

    def _start_stream(self) -> None:
        assert self._sd is not None and self.device is not None and self.rate_hz is not None
        block_frames = max(1, round(self.block_seconds * self.rate_hz))
        self._queue = queue.Queue(maxsize=max(1, round(QUEUE_SECONDS / self.block_seconds)))
        self._resume_queue_size = int(self._queue.maxsize * QUEUE_RESUME_FRACTION)
        self._shedding = False
        self._stream_failed.clear()
        stream = self._sd.InputStream(
            device=self.device.index,
            samplerate=self.rate_hz,
            channels=self.channels,
            dtype="float32",
            blocksize=block_frames,
            callback=self._callback,
            finished_callback=self._stream_failed.set,
        )
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        self._stream = stream

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy, timestamp and count only; never log or raise here.
        captured_at = self._wall_clock()  # the block's last sample was captured about now
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        if status and getattr(status, "input_underflow", False):
            self.underflows += 1
        if self._shedding and self._queue.qsize() > self._resume_queue_size:
            self.dropped_blocks += 1
            return
        self._shedding = False
        try:
            self._queue.put_nowait((np.array(indata, dtype=np.float32, copy=True), captured_at, self.dropped_blocks))
        except queue.Full:
            self.dropped_blocks += 1
            self._shedding = True

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.stop()
        except Exception as error:  # noqa: BLE001 - a vanished device fails to stop; closing still frees it
            log.debug("stopping the input stream failed: %s", error)
        try:
            stream.close()
        except Exception as error:  # noqa: BLE001
            log.debug("closing the input stream failed: %s", error)

    def close(self) -> None:
        self.stop()
        self._close_stream()

    def __enter__(self) -> "MicrophoneSource":
        if self._stream is None:
            self.open()
        return self

    # --- consuming ---

    def blocks(self) -> Iterator[SourceItem]:
        """float32 [n, channels] blocks until stop(); a Gap as soon as audio is lost (a failed or silent
        stream, before it is reopened; dropped blocks, before the next block)."""
        if self._stream is None and not self._stop.is_set():
            self.open()
        last_audio = time.monotonic()
        while not self._stop.is_set():
            if self._stream is None:
                if not self._reopen():
                    break
                last_audio = time.monotonic()
                continue
            try:
                block, captured_at, dropped_before = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._stream_failed.is_set() or time.monotonic() - last_audio > self._stall_seconds:
                    failed = self._stream_failed.is_set()
                    gap = self._fail("the stream stopped" if failed else f"no audio for {self._stall_seconds:g} s")
                    if gap is not None:
                        yield gap
                continue
            last_audio = time.monotonic()
            if self._outage is not None:
                self._recovered()
            if dropped_before > self._dropped_seen:
                missing = dropped_before - self._dropped_seen
                self._dropped_seen = dropped_before
                yield Gap(reason=f"{missing} block(s) dropped: the consumer fell {QUEUE_SECONDS:g} s behind")
            self.block_capture_time = captured_at
            self._log_overflows()
            yield block
        self._log_overflows(force=True)

    def _fail(self, why: str) -> Optional[Gap]:
        """Close the failed stream; the Gap to yield when this starts an outage (None if one is going on)."""
        self._close_stream()
        self._dropped_seen = self.dropped_blocks  # drops before the failure are inside this Gap
        if self._outage is not None:
            log.warning("the reopened audio input failed too (%s) before delivering audio; next try in %g s",
                        why, self._backoff_seconds)
            return None
        self._outage = why
        log.warning("audio input failed (%s); reopening in %g s", why, self._backoff_seconds)
        if self._on_fault is not None:
            self._on_fault(why)
        return Gap(reason=why)

    def _reopen(self) -> bool:
        """Reopen the stream, waiting the back-off before each attempt, until it opens or stop(); False if stopped.

        The wait doubles after every attempt (up to backoff_max_seconds) and is reset only when audio
        flows again, so a device that opens but delivers nothing is retried ever more slowly.
        """
        while not self._stop.is_set():
            delay = self._backoff_seconds
            if self._stop.wait(delay):
                return False
            self._backoff_seconds = min(delay * 2, self._backoff_max)
            try:
                self._refresh_devices()
                self.device = resolve_input_device(self._device_spec, sd=self._sd)
                self._start_stream()
            except Exception as error:  # noqa: BLE001 - keep trying whatever PortAudio says
                log.warning("reopening the audio input failed (%s); next try in %g s", error, self._backoff_seconds)
                continue
            self.reopens += 1
            log.warning("audio input reopened: %d '%s'; waiting for audio", self.device.index, self.device.name)
            return True
        return False

    def _recovered(self) -> None:
        """The first block after a reopen: the outage is over."""
        log.warning("audio flows again after the outage (%s)", self._outage)
        self._outage = None
        self._backoff_seconds = self._backoff_initial
        if self._on_recover is not None:
            self._on_recover()

    def _refresh_devices(self) -> None:
        # PortAudio lists devices once per initialisation: re-initialise to see a re-plugged USB microphone.
        terminate = getattr(self._sd, "_terminate", None)
        initialize = getattr(self._sd, "_initialize", None)
        if terminate is None or initialize is None:
            return
        # sounddevice counts initialisations in `_initialized`: after a failed initialize() it is 0 and
        # terminate() would fail ("PortAudio not initialized") on every later attempt, so skip it then.
        if getattr(self._sd, "_initialized", 1) > 0:
            try:
                terminate()
            except Exception as error:  # noqa: BLE001 - initialize() below is what matters
                log.debug("terminating PortAudio failed: %s", error)
        initialize()

    def _log_overflows(self, *, force: bool = False) -> None:
        lost = self.overflows + self.underflows + self.dropped_blocks
        if lost == self._logged_overflows:
            return
        now = time.monotonic()
        if force or now - self._last_overflow_log >= OVERFLOW_LOG_SECONDS:
            log.warning(
                "audio input lost samples: %d overflow(s), %d underflow(s), %d dropped block(s) so far "
                "(the Pi is too busy or the device is failing: try larger --block-seconds or fewer threads)",
                self.overflows, self.underflows, self.dropped_blocks,
            )
            self._logged_overflows = lost
            self._last_overflow_log = now


class FileSource(StoppableSource):
    """Blocks of an audio file (WAV/FLAC/...) at its own rate, as fast as possible or paced in real time.

    Yields float32 [n, channels] blocks of block_seconds (the last may be shorter). A file whose
    header cannot be read raises AudioError here; one that breaks off mid-way (a FLAC cut short,
    corrupt data) or a WAV/AIFF copy cut short (its header promises more audio than it holds:
    `cut_short`) raises AudioError from blocks(), naming the file, so a caller playing several
    files can skip it and go on. realtime: each block is yielded once the clock has reached its
    end (the audio's own time since the first block); clock: seconds, monotonic; sleep(seconds)
    waits (None: on the stop event, so stop() cuts a wait short). Both are passed in by tests.
    """

    def __init__(
        self,
        path: Union[str, Path],
        *,
        block_seconds: float = 0.1,
        realtime: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Optional[Callable[[float], object]] = None,
    ) -> None:
        import soundfile  # a dependency of the edge extra; imported here so the core does not need it

        from edge.audio import cut_short_error

        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
        self.path = Path(path)
        if not self.path.is_file():
            why = "is a folder; give a WAV or FLAC file" if self.path.is_dir() else "audio file not found; check the path"
            raise AudioError(f"{self.path}: {why}", path=self.path)
        try:
            info = soundfile.info(str(self.path), verbose=True)
        except (RuntimeError, ValueError, TypeError, OSError) as error:  # LibsndfileError is a RuntimeError
            raise AudioError(
                f"{self.path}: cannot read audio ({error}); give a WAV or FLAC file", path=self.path
            ) from None
        if info.frames == 0:
            raise AudioError(f"{self.path}: the file holds no audio; give a non-empty recording", path=self.path)
        self.rate_hz: int = int(info.samplerate)
        self.channels: int = int(info.channels)
        self.duration_seconds = info.frames / info.samplerate
        self.block_seconds = block_seconds
        self.realtime = realtime
        self.cut_short: Optional[AudioError] = cut_short_error(self.path, str(info.extra_info))
        """Why the file is a copy cut short (blocks() raises it before any audio), or None."""
        self._clock = clock
        self._sleep = sleep
        super().__init__()

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds` (> 0); True if stop() came first or meanwhile."""
        if self._sleep is None:
            return self._stop.wait(seconds)
        self._sleep(seconds)
        return self._stop.is_set()

    def blocks(self) -> Iterator[SourceItem]:
        import soundfile

        if self.cut_short is not None:
            # libsndfile would read what is there without complaint: the take is incomplete, say so.
            raise self.cut_short
        block_frames = max(1, round(self.block_seconds * self.rate_hz))
        started = self._clock()
        emitted = 0
        try:
            audio = soundfile.SoundFile(str(self.path))
        except (RuntimeError, ValueError, TypeError, OSError) as error:  # changed or removed since __init__
            raise AudioError(f"{self.path}: cannot read audio ({error}); give a WAV or FLAC file",
                             path=self.path) from None
        with audio:
            while not self._stop.is_set():
                try:
                    block = audio.read(block_frames, dtype="float32", always_2d=True)
                except (RuntimeError, ValueError, TypeError, OSError, MemoryError) as error:
                    # A file corrupt past its header (truncated FLAC, ...): say which, after `emitted` samples.
                    raise AudioError(
                        f"{self.path}: unreadable after {emitted / self.rate_hz:.2f} s ({error}); the file is "
                        f"corrupt or truncated: re-export it", path=self.path,
                    ) from None
                if len(block) == 0:
                    return
                if self.realtime:
                    # Pace to the clock: a block is due when the audio up to its end has played.
                    due = started + (emitted + len(block)) / self.rate_hz
                    ahead = due - self._clock()
                    if (ahead > 0 and self._wait(ahead)) or self._stop.is_set():
                        return
                emitted += len(block)
                yield block


class FakeSource(StoppableSource):
    """Yields the given blocks, for tests; `faults` injects a Gap or raises an exception before block i.

    blocks: float32 [n] or [n, channels] arrays at rate_hz (1-D blocks are given a channel axis).
    """

    def __init__(
        self,
        blocks: Sequence[npt.ArrayLike],
        *,
        rate_hz: int,
        faults: Optional[Mapping[int, Union[Gap, BaseException]]] = None,
        on_block: Optional[Callable[[int], None]] = None,
    ) -> None:
        self._blocks = [np.asarray(b, dtype=np.float32) for b in blocks]
        self._blocks = [b[:, None] if b.ndim == 1 else b for b in self._blocks]
        channels = {b.shape[1] for b in self._blocks}
        if len(channels) > 1:
            raise ValueError(f"all blocks must have the same channel count, got {sorted(channels)}")
        self.rate_hz = rate_hz
        self.channels = channels.pop() if channels else 1
        self._faults = dict(faults or {})
        self._on_block = on_block
        super().__init__()
        self.yielded = 0

    def blocks(self) -> Iterator[SourceItem]:
        for index, block in enumerate(self._blocks):
            if self._stop.is_set():
                return
            fault = self._faults.get(index)
            if isinstance(fault, Gap):
                yield fault
            elif fault is not None:
                raise fault
            if self._on_block is not None:
                self._on_block(index)
            if self._stop.is_set():
                return
            self.yielded += 1
            yield block
