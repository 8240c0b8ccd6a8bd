#!/usr/bin/env python3
"""Fuzz the audio reading path (edge.audio.read_audio and replay's FileSource) with hypothesis.

    python scripts/fuzz_audio.py                          # the CI budget: 20 s
    python scripts/fuzz_audio.py --seconds 600 --seed 7   # a longer run
    python scripts/fuzz_audio.py --crashes-dir reports/fuzz-crashes

Inputs are mutated real files, made at start: WAV in every subtype the readers take (PCM_U8/16/24/32,
FLOAT, DOUBLE; mono, stereo, 6 channels; 8, 16, 44.1, 48 kHz), FLAC, and ESC-50 clips when found (as
oido-train finds them, without downloading: $OIDO_ESC50, $OIDO_ASSETS, ../shared/assets, ~/.cache/oido);
plus raw random bytes. Mutations: bit flips, byte overwrites, 16/32-bit
header fields (rate, channels, block align, bits, chunk sizes) set to boundary values, truncation,
appended junk, duplicated spans; names .wav/.flac/.mp3/.ogg or none, often not matching the content.

Every input must give float32 mono finite audio of at least one sample, or the project's own error
(edge.errors.OidoError) naming the file. Anything else is a crash: printed with its traceback, saved
to --crashes-dir, and the exit status is 1. A hard crash (segfault, out of memory) kills the process,
which CI sees as a negative exit status; --max-memory-mb turns a memory bomb into a MemoryError crash
report instead of an OOM kill.

Deterministic for a given --seed and --examples (hypothesis, no example database); --seconds stops
early, between rounds of ROUND_EXAMPLES examples.

Bad arguments (a non-positive --seconds or --examples, a --crashes-dir that is a file, $OIDO_ESC50 or
$OIDO_ASSETS naming a folder without ESC-50) are one line on stderr naming the fix, exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import resource
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.errors import OidoError  # noqa: E402

PROG = Path(__file__).name
EXIT_USAGE = 2

ROUND_EXAMPLES = 50
"""Examples per hypothesis run; --seconds is checked between runs."""

SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", "")

INTERESTING_16 = (0, 1, 2, 3, 6, 8, 16, 24, 32, 64, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
"""Boundary values for 16-bit header fields (format tag 1/3/0xFFFE, channels, bits, block align)."""

INTERESTING_32 = (
    0, 1, 2, 7, 8, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 7999, 8000, 16000, 44100, 44101, 48000,
    96001, 192000, 655350, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
)
"""Boundary values for 32-bit header fields (sample rate, byte rate, chunk sizes)."""

HEADER_BYTES = 96
"""Mutations of header fields land in the first this many bytes (RIFF/fmt/fact/data, FLAC STREAMINFO)."""


@dataclass
class Crash:
    """An input the reading path mishandled."""

    name: str
    data: bytes
    what: str
    """The exception's traceback, or what was wrong with the result."""


@dataclass
class FuzzReport:
    examples: int = 0
    project_errors: int = 0
    """Inputs refused with an OidoError naming the file (a fine outcome)."""
    decoded: int = 0
    """Inputs that gave valid audio."""
    crashes: list[Crash] = field(default_factory=list)
    seconds: float = 0.0


# --- seed files ---------------------------------------------------------------------------


def seed_files(*, esc50_dir: Optional[Path] = None) -> list[tuple[str, bytes]]:
    """(suffix, bytes) of valid files in every subtype, rate and channel count worth fuzzing, plus the first
    clip of `esc50_dir`'s audio/ and esc10-16k/ when given."""
    import io

    import soundfile

    rng = np.random.default_rng(0)
    seeds: list[tuple[str, bytes]] = []

    def encode(samples: np.ndarray, rate_hz: int, fmt: str, subtype: str) -> bytes:
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate_hz, format=fmt, subtype=subtype)
        return buffer.getvalue()

    tone = np.sin(2 * np.pi * 440 * np.arange(2000) / 16000).astype(np.float32) * 0.5
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        seeds.append((".wav", encode(tone, 16000, "WAV", subtype)))
    for rate_hz, channels in ((8000, 1), (44100, 2), (48000, 6)):
        noise = rng.uniform(-1, 1, (1500, channels)).astype(np.float32)
        seeds.append((".wav", encode(noise, rate_hz, "WAV", "PCM_16")))
    seeds.append((".wav", encode(np.zeros(3, np.float32), 16000, "WAV", "FLOAT")))  # tiny
    seeds.append((".wav", encode(tone[:400], 22050, "WAVEX", "PCM_24")))
    seeds.append((".flac", encode(tone, 16000, "FLAC", "PCM_16")))
    seeds.append((".flac", encode(rng.uniform(-1, 1, (1000, 2)).astype(np.float32), 44100, "FLAC", "PCM_24")))
    # Real files written by other tools: their headers differ from libsndfile's.
    for folder, pattern in (("audio", "*.wav"), ("esc10-16k", "*.flac")):
        found = sorted((esc50_dir / folder).glob(pattern))[:1] if esc50_dir is not None else []
        for path in found:
            data = path.read_bytes()
            seeds.append((path.suffix, data[: 64 * 1024] if path.suffix == ".wav" else data))
    return seeds


# --- mutations ----------------------------------------------------------------------------


def mutate(data: bytes, draw: Callable, st) -> bytes:  # noqa: ANN001 - hypothesis' draw and strategies
    """Apply 1-4 random mutations to data."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "byte", "u16", "u32", "truncate", "append", "duplicate")))
        if not buffer:
            buffer.extend(draw(st.binary(min_size=1, max_size=64)))
            continue
        header_end = min(len(buffer), HEADER_BYTES)
        if kind == "flip":
            position = draw(st.integers(0, len(buffer) - 1))
            buffer[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            position = draw(st.integers(0, header_end - 1))
            buffer[position] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFE, 0xFF)))
        elif kind == "u16" and header_end >= 2:
            position = draw(st.integers(0, header_end - 2))
            buffer[position : position + 2] = struct.pack("<H", draw(st.sampled_from(INTERESTING_16)))
        elif kind == "u32" and header_end >= 4:
            position = draw(st.integers(0, header_end - 4))
            value = draw(st.sampled_from(INTERESTING_32))
            big_endian = draw(st.booleans())  # FLAC's fields are big-endian
            buffer[position : position + 4] = struct.pack(">I" if big_endian else "<I", value)
        elif kind == "truncate":
            del buffer[draw(st.integers(0, len(buffer) - 1)) :]
        elif kind == "append":
            buffer.extend(draw(st.binary(min_size=1, max_size=256)))
        elif kind == "duplicate":
            start = draw(st.integers(0, len(buffer) - 1))
            length = draw(st.integers(1, min(256, len(buffer) - start)))
            position = draw(st.integers(0, len(buffer)))
            buffer[position:position] = buffer[start : start + length]
    return bytes(buffer)


# --- the target -----------------------------------------------------------------------------


def check_file(path: Path) -> str:
    """Run the reading path on one file. Returns "decoded" or "refused"; raises AssertionError on a bad result.

    Exceptions other than OidoError propagate: the caller counts them as crashes.
    """
    from edge.audio import read_audio
    from edge.sources import FileSource

    try:
        waveform = read_audio(path)
    except OidoError as error:
        if str(path) not in str(error):
            raise AssertionError(f"the error does not name the file: {error}") from None
        outcome = "refused"
    else:
        if not isinstance(waveform, np.ndarray) or waveform.dtype != np.float32 or waveform.ndim != 1:
            raise AssertionError(f"read_audio returned {type(waveform).__name__} {getattr(waveform, 'shape', '')}")
        if len(waveform) == 0 or not np.all(np.isfinite(waveform)):
            raise AssertionError(f"read_audio returned {len(waveform)} samples, finite: {np.isfinite(waveform).all()}")
        outcome = "decoded"
    try:  # replay's path: the same file in blocks
        source = FileSource(path, block_seconds=0.05)
        for block in source.blocks():
            if block.dtype != np.float32 or block.ndim != 2 or block.shape[1] != source.channels:
                raise AssertionError(f"FileSource gave a block {block.dtype} {block.shape}")
    except OidoError as error:
        if str(path) not in str(error):
            raise AssertionError(f"FileSource's error does not name the file: {error}") from None
    return outcome


def fuzz(
    *,
    examples: int,
    seed: int,
    seconds: Optional[float] = None,
    target: Callable[[Path], str] = check_file,
    workdir: Optional[Path] = None,
    log_every: int = 0,
    esc50_dir: Optional[Path] = None,
) -> FuzzReport:
    """Run `examples` fuzz inputs through `target` (stopping early after `seconds`).

    ESC-50 seed clips come from `esc50_dir`, else from where train.assets.find_local_esc50 finds them (AssetError when
    $OIDO_ESC50 / $OIDO_ASSETS name a folder without ESC-50).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from train.assets import find_local_esc50

    seeds = seed_files(esc50_dir=esc50_dir if esc50_dir is not None else find_local_esc50())
    report = FuzzReport()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="oido-fuzz-", dir=workdir))

    def one(data) -> None:  # noqa: ANN001 - hypothesis' data object
        if data.draw(st.integers(0, 9)) == 0:
            suffix, content = data.draw(st.sampled_from(SUFFIXES)), data.draw(st.binary(max_size=2048))
        else:
            seed_suffix, seed_bytes = seeds[data.draw(st.integers(0, len(seeds) - 1))]
            content = mutate(seed_bytes, data.draw, st)
            suffix = seed_suffix if data.draw(st.integers(0, 3)) else data.draw(st.sampled_from(SUFFIXES))
        report.examples += 1
        path = folder / f"case-{report.examples:06d}{suffix}"
        path.write_bytes(content)
        try:
            outcome = target(path)
            if outcome not in ("decoded", "refused"):
                raise AssertionError(f"the target returned {outcome!r}")
        except OidoError as error:
            if str(path) in str(error):
                report.project_errors += 1
            else:
                report.crashes.append(Crash(path.name, content, f"the error does not name the file: {error}"))
        except BaseException as error:  # noqa: BLE001 - everything but the project's errors is a crash
            if isinstance(error, KeyboardInterrupt):
                raise
            report.crashes.append(Crash(path.name, content, "".join(traceback.format_exception(error))))
        else:
            if outcome == "decoded":
                report.decoded += 1
            else:
                report.project_errors += 1
        finally:
            path.unlink(missing_ok=True)
        if log_every and report.examples % log_every == 0:
            print(f"{report.examples} examples, {len(report.crashes)} crash(es), "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr)

    round_index = 0
    while report.examples < examples:
        if seconds is not None and time.monotonic() - started > seconds:
            break
        count = min(ROUND_EXAMPLES, examples - report.examples)
        runner = settings(
            max_examples=count, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(hypothesis_seed(seed * 100_003 + round_index)(given(st.data())(one)))
        runner()
        round_index += 1
    report.seconds = time.monotonic() - started
    try:
        folder.rmdir()
    except OSError:
        pass
    return report


def limit_memory(megabytes: int) -> None:
    """Cap the address space, so a memory bomb raises MemoryError (a reported crash) instead of an OOM kill."""
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from train.cli import non_negative_int_arg, positive_float_arg, positive_int_arg

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=positive_int_arg,
                        default=100_000, help="most inputs to try (default: until --seconds)")
    parser.add_argument("--seconds", type=positive_float_arg,
                        default=20.0, help="time budget (default 20, the CI budget)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--max-memory-mb", type=non_negative_int_arg, default=3072,
                        help="address-space limit, 0 = none (default 3072: the odd-rate resampler needs < 100 MB)")
    parser.add_argument("--crashes-dir", type=Path,
                        help="save each crashing input here, with its traceback (e.g. reports/fuzz-crashes)")
    args = parser.parse_args(argv)
    if args.crashes_dir is not None and args.crashes_dir.exists() and not args.crashes_dir.is_dir():
        parser.error(f"argument --crashes-dir: {args.crashes_dir} is a file: give a folder (made if missing)")
    logging.basicConfig(level=logging.ERROR)  # read_audio's warnings about odd files are expected here
    from train.assets import AssetError, find_local_esc50

    try:
        esc50_dir = find_local_esc50()
    except AssetError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    if args.max_memory_mb:
        limit_memory(args.max_memory_mb)
    report = fuzz(examples=args.examples, seed=args.seed, seconds=args.seconds, log_every=500, esc50_dir=esc50_dir)
    print(f"fuzz_audio: {report.examples} inputs in {report.seconds:.1f} s: {report.decoded} decoded, "
          f"{report.project_errors} refused with a project error, {len(report.crashes)} crash(es)")
    for crash in report.crashes[:10]:
        print(f"--- {crash.name} ({len(crash.data)} bytes)\n{crash.what}", file=sys.stderr)
    if args.crashes_dir is not None and report.crashes:
        args.crashes_dir.mkdir(parents=True, exist_ok=True)
        for crash in report.crashes:
            digest = hashlib.sha256(crash.data).hexdigest()[:16]
            (args.crashes_dir / f"{digest}-{crash.name}").write_bytes(crash.data)
            (args.crashes_dir / f"{digest}-{crash.name}.txt").write_text(crash.what, encoding="utf-8")
        print(f"saved {len(report.crashes)} crashing input(s) to {args.crashes_dir}", file=sys.stderr)
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
