"""Extra background audio: sounds the open-set head learns as "other" and nothing else uses.

The background class learns what NOT to report from real non-target audio, and ESC-10's nine
classes are little of the world: leaving one of them out of training (`oido-train loco`) showed
the head calling a sound it never heard a target (clock ticks -> water_drops, 13-16 false events
in 200 s). More varied non-target audio may help, so `oido-train prepare --extra-background
debian-sfx` adds the sound effects, ambiences, music and spoken words that Debian ships with
free games and programs (`DEBIAN_SFX_PACKAGES`), cut into 5 s clips; `--extra-background DIR`
adds a folder of your own recordings of any length (an hour of your living room) the same way.
It is not the default: measured over seeds (README, "Open set"), what it gains in false events
on unseen classes it costs in targets caught in time.

These clips are TRAINING-ONLY (`DatasetEntry.train_only`): they are never in the test fold nor
in the validation streams that choose the thresholds, so every figure is still measured on the
ESC-50 clips it was measured on before, and the thresholds still mean "false events per hour of
ESC-50 non-target sound".

Where the Debian audio comes from: `apt-get download` (no root needed; the package lists must be
current: `sudo apt-get update`), unpacked with `dpkg-deb` into the user cache
(`~/.cache/oido/debian-sfx/`), keeping only the audio files. Files whose name says a sound like a
target (a word of a target label, or of `TARGET_LIKE_WORDS` for the default task) are left out, so
"other" is never taught a target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import AUDIO_SUFFIXES
from edge.params import DEFAULT_PARAMS, Params
from train.datasets import DatasetError, write_json_atomic

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEBIAN_SFX = "debian-sfx"
"""``extra_background=`` value selecting the Debian sound packages."""
CACHE_SUBDIR = "debian-sfx"
"""Folder of the user cache holding the unpacked packages and the cut clips."""
FOLDERS_SUBDIR = "extra-background"
"""Folder of the user cache holding the clips cut from ``--extra-background DIR`` folders."""
PACKAGE_AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".flac"})
"""File types unpacked from the Debian packages: the pool README "Results" measured."""


@dataclass(frozen=True)
class SfxPackage:
    """A Debian package of sounds and how its files are grouped into sources."""

    name: str
    """Debian package name."""
    what: str
    """What it holds, for the README and the log."""
    group_by_folder: bool = False
    """True: the files of one folder are one source, played one after another (short spoken
    words of one language); False: every file is its own source."""


DEBIAN_SFX_PACKAGES: tuple[SfxPackage, ...] = (
    SfxPackage("minetest-data", "footsteps on wood, gravel, snow; doors, digging, tools, fire"),
    SfxPackage("lincity-ng-data", "city ambiences (traffic, trains, markets, schools, farms, industry) and music"),
    SfxPackage("ktuberling-data", "spoken words in 19 languages", group_by_folder=True),
    SfxPackage("freeciv-data", "game sound effects"),
    SfxPackage("frozen-bubble-data", "game sound effects and music"),
    SfxPackage("extremetuxracer-data", "music and game sound effects"),
    SfxPackage("tuxpaint-data", "drawing-tool sound effects"),
    SfxPackage("pingus-data", "game sound effects"),
    SfxPackage("asterisk-moh-opsound-wav", "music on hold"),
)
"""About 290 MB of downloads, 405 clips of 5 s from 225 sources. Chosen by measurement: a larger pool (+8 game
packages, 1,100 clips of battles, units, voices) taught "other" so many clicks and knocks that
the head gave up on water_drops (0/8 fold-5 targets)."""

TARGET_LIKE_WORDS: tuple[str, ...] = (
    "water", "drip", "drop", "rain", "lake", "splash", "bubble",  # water_drops
    "baby", "cry",  # crying_baby
    "alarm", "clock", "tick",  # clock_alarm
    "toilet", "flush",  # toilet_flush
)  # fmt: skip
"""Words that leave a file out of the background whatever the task's labels (the default
task's sounds and their look-alikes); a task's own label words are added to them."""

CLIP_SECONDS = 5.0
"""Length of one cut clip (ESC-50's)."""
GAP_SECONDS = 0.3
"""Silence between files played one after another."""
MIN_CLIP_SECONDS = 1.0
"""A shorter last piece of a source is dropped."""
MAX_CLIPS_PER_SOURCE = 6
"""Clips kept of one source (long music files would otherwise outweigh everything else)."""
MIN_RMS = 1e-4
"""A source quieter than this (RMS, full scale 1) is left out: it is silence."""
EPISODE_GAP_SECONDS = 600.0
"""Saved event clips (oido-<UTC time>-<label>.wav) closer than this to the one before are one
episode: a fridge that clicks all evening is one sound heard forty times, and its clips on both
sides of a fold split would flatter the thresholds chosen out of fold."""


class ExtraBackgroundError(DatasetError):
    """The extra background cannot be had; the message says why and what to do instead."""


@dataclass(frozen=True)
class ExtraClip:
    """A cut clip ready for prepare: 16 kHz mono 16-bit WAV."""

    path: Path
    source: str
    """The source it was cut from (``debian-sfx:<package>:<file or folder>``, ``extra:<file>``)."""
    fold: int
    """A training fold (never the test fold), fixed by the source."""


# --------------------------------------------------------------------------- pure core


def exclusion_pattern(labels: Sequence[str]) -> re.Pattern[str]:
    """Regex matching paths that name a target: TARGET_LIKE_WORDS and the words of `labels`."""
    words = set(TARGET_LIKE_WORDS)
    for label in labels:
        words.update(word for word in re.split(r"[^a-z0-9]+", label.lower()) if len(word) >= 3)
    return re.compile("|".join(sorted(map(re.escape, words))), re.IGNORECASE)


def training_fold(source: str, *, test_fold: int, num_folds: int = 5) -> int:
    """The fold of a source: a stable hash over the folds other than `test_fold`."""
    folds = [fold for fold in range(1, num_folds + 1) if fold != test_fold]
    return folds[int(hashlib.sha256(source.encode("utf-8")).hexdigest(), 16) % len(folds)]


def cut_source(
    waveforms: Sequence[npt.ArrayLike],
    *,
    params: Params = DEFAULT_PARAMS,
    clip_seconds: float = CLIP_SECONDS,
    gap_seconds: float = GAP_SECONDS,
    max_clips: int = MAX_CLIPS_PER_SOURCE,
) -> list[FloatArray]:
    """One source's clips: its waveforms played one after another (each followed by a gap),
    cut into clips of `clip_seconds`; the last piece is dropped when shorter than
    MIN_CLIP_SECONDS, and a silent source gives none. Peaks above full scale are scaled down.

    waveforms: float32 [n] at params.sample_rate_hz. Returns the first `max_clips` clips,
    float32.
    """
    rate = params.sample_rate_hz
    gap = np.zeros(round(gap_seconds * rate), np.float32)
    parts = [piece for waveform in waveforms for piece in (np.asarray(waveform, np.float32), gap)]
    if not parts:
        return []
    joined = np.concatenate(parts)
    if float(np.sqrt(np.mean(joined.astype(np.float64) ** 2))) < MIN_RMS:
        return []
    step = round(clip_seconds * rate)
    clips = [joined[i : i + step] for i in range(0, len(joined), step)]
    clips = [clip for clip in clips if len(clip) >= MIN_CLIP_SECONDS * rate][:max_clips]
    out = []
    for clip in clips:
        peak = float(np.max(np.abs(clip))) if len(clip) else 0.0
        out.append((clip / peak).astype(np.float32) if peak > 1.0 else clip.astype(np.float32))
    return out


def group_sources(
    folder: Path, *, name: str, group_by_folder: bool, exclude: re.Pattern[str]
) -> dict[str, list[Path]]:
    """Audio files under `folder` by source (``<name>:<relative file or folder>``), sorted; files
    whose name matches `exclude` are left out (the name, not the folders: the package
    frozen-bubble-data is not about bubbles)."""
    sources: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        relative = path.relative_to(folder)
        if exclude.search(path.name):
            continue
        key = str(relative.parent) if group_by_folder else str(relative.with_suffix(""))
        sources.setdefault(f"{name}:{key}", []).append(path)
    return sources


def episode_sources(
    sources: Mapping[str, Sequence[Path]], *, gap_seconds: float = EPISODE_GAP_SECONDS
) -> dict[str, str]:
    """{source: the source its clips are filed under}. Sources of one file named like a saved event
    clip (edge.events.clip_time), each less than `gap_seconds` after the one before, are one
    episode, filed under ``<prefix>:episode-<first clip's time>`` (one fold, one validation group);
    every other source is filed under itself."""
    from edge.events import clip_time

    filed = {source: source for source in sources}
    timed = []
    for source, paths in sources.items():
        when = clip_time(paths[0].name) if len(paths) == 1 else None
        if when is not None:
            timed.append((when, source))
    episode, previous = "", None
    for when, source in sorted(timed):
        if previous is None or when - previous >= gap_seconds:
            prefix = source.partition(":")[0]
            episode = f"{prefix}:episode-{sources[source][0].name.split('-')[1]}"
        filed[source] = episode
        previous = when
    return filed


# --------------------------------------------------------------------------- cutting into clips


def cut_clips(
    sources: Mapping[str, Sequence[Path]],
    out_dir: Path,
    *,
    test_fold: int,
    params: Params = DEFAULT_PARAMS,
    progress: bool = False,
    filed_under: Mapping[str, str] | None = None,
) -> list[ExtraClip]:
    """Read every source (edge.audio.read_audio: any rate and channel count) and write its clips
    as 16 kHz 16-bit WAV files into `out_dir` (cleared first). Unreadable files are skipped with
    a warning, like silent sources. `filed_under` ({source: group}, episode_sources) gives
    clips the source, and so the fold, of their group; each source is still cut on its own."""
    from edge.audio import read_audio, write_wav
    from edge.errors import AudioError

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    clips: list[ExtraClip] = []
    items = list(sources.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="extra background", unit="source", disable=None, leave=False)
    for number, (source, paths) in enumerate(items):
        waveforms = []
        for path in paths:
            try:
                waveforms.append(read_audio(path, target_rate_hz=params.sample_rate_hz))
            except (AudioError, OSError, RuntimeError, ValueError) as error:
                logger.warning("extra background: %s skipped (%s)", path, error)
        group = (filed_under or {}).get(source, source)
        fold = training_fold(group, test_fold=test_fold)
        for take, clip in enumerate(cut_source(waveforms, params=params)):
            path = write_wav(out_dir / f"{number:05d}-{take}.wav", clip, rate_hz=params.sample_rate_hz, subtype="PCM_16")
            clips.append(ExtraClip(path=path, source=group, fold=fold))
    return clips


def _index_key(
    sources: Mapping[str, Sequence[Path]], *, test_fold: int, params: Params, filed_under: Mapping[str, str] | None
) -> str:
    document = {
        "filed_under": dict(filed_under or {}),
        "format": "oido-extra-background/1",
        "test_fold": test_fold,
        "sample_rate_hz": params.sample_rate_hz,
        "cut": [CLIP_SECONDS, GAP_SECONDS, MIN_CLIP_SECONDS, MAX_CLIPS_PER_SOURCE, MIN_RMS],
        "sources": {
            source: [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths] for source, paths in sources.items()
        },
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def cached_clips(
    sources: Mapping[str, Sequence[Path]], cache_dir: Path, *, test_fold: int, params: Params = DEFAULT_PARAMS,
    progress: bool = False, filed_under: Mapping[str, str] | None = None,
) -> list[ExtraClip]:  # fmt: skip
    """cut_clips into ``cache_dir/clips``, reused while the sources and settings are unchanged."""
    index_path = cache_dir / "clips.json"
    key = _index_key(sources, test_fold=test_fold, params=params, filed_under=filed_under)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("key") == key:
            clips = [ExtraClip(Path(c["path"]), c["source"], int(c["fold"])) for c in index["clips"]]
            if all(clip.path.is_file() for clip in clips):
                return clips
    except (OSError, ValueError, KeyError, TypeError):
        pass
    clips = cut_clips(sources, cache_dir / "clips", test_fold=test_fold, params=params, progress=progress, filed_under=filed_under)
    write_json_atomic(index_path, {"key": key, "clips": [{"path": str(c.path), "source": c.source, "fold": c.fold} for c in clips]})
    return clips


# --------------------------------------------------------------------------- the Debian packages

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _run(command: Sequence[str], *, cwd: Path | None = None, runner: Runner = subprocess.run) -> str:
    """Run a command; ExtraBackgroundError naming it when it is missing or fails."""
    try:
        done = runner(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ExtraBackgroundError(
            f"the extra background '{DEBIAN_SFX}' needs {command[0]!r} (Debian or Ubuntu), which is not on this "
            "machine: pass --extra-background none, or --extra-background DIR with recordings of your own"
        ) from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ExtraBackgroundError(
            f"{' '.join(command)} failed ({detail[0]}): run 'sudo apt-get update' and try again, or pass "
            "--extra-background none"
        )
    return done.stdout


def _extract_audio(deb: Path, destination: Path) -> int:
    """Unpack the audio files of a .deb into `destination` (paths kept); returns how many."""
    with tempfile.TemporaryDirectory(prefix="oido-deb-") as scratch:
        tar_path = Path(scratch) / "data.tar"
        with open(tar_path, "wb") as out:
            try:
                done = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=out, stderr=subprocess.PIPE, check=False)
            except FileNotFoundError:
                raise ExtraBackgroundError(
                    f"unpacking {deb.name} needs 'dpkg-deb' (Debian or Ubuntu): pass --extra-background none"
                ) from None
        if done.returncode != 0:
            raise ExtraBackgroundError(f"dpkg-deb could not unpack {deb}: {done.stderr.decode(errors='replace').strip()}")
        count = 0
        with tarfile.open(tar_path) as archive:
            for member in archive:
                name = Path(member.name)
                if not member.isfile() or name.suffix.lower() not in PACKAGE_AUDIO_SUFFIXES or ".." in name.parts:
                    continue
                target = destination / Path(*[part for part in name.parts if part not in (".", "/")])
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    continue
                with source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                count += 1
    return count


def fetch_package(package: str, packages_dir: Path, *, runner: Runner = subprocess.run) -> Path:
    """``packages_dir/<package>``: the package's audio files, downloaded and unpacked once.

    Downloads with ``apt-get download`` (as any user) into a scratch folder, unpacks only the
    audio into a temporary folder and renames it into place, so an interrupted fetch leaves
    nothing half-done; the .deb is deleted.
    """
    folder = packages_dir / package
    if (folder / ".complete").is_file():
        return folder
    packages_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=packages_dir) as scratch:
        scratch_dir = Path(scratch)
        _run(["apt-get", "download", package], cwd=scratch_dir, runner=runner)
        debs = sorted(scratch_dir.glob(f"{package}_*.deb"))
        if not debs:
            raise ExtraBackgroundError(f"apt-get download {package} left no .deb file: run 'sudo apt-get update' and try again")
        unpacked = scratch_dir / "unpacked"
        count = _extract_audio(debs[0], unpacked)
        (unpacked / ".complete").write_text(json.dumps({"deb": debs[0].name, "audio_files": count}) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(unpacked, folder)
    logger.info("extra background: %s unpacked (%s)", package, (folder / ".complete").read_text(encoding="utf-8").strip())
    return folder


def debian_sfx_clips(
    labels: Sequence[str],
    *,
    cache_dir: Path,
    test_fold: int,
    packages: Sequence[SfxPackage] = DEBIAN_SFX_PACKAGES,
    params: Params = DEFAULT_PARAMS,
    progress: bool = False,
    runner: Runner = subprocess.run,
) -> list[ExtraClip]:
    """The Debian sound packages as training-only background clips for a task with `labels`."""
    exclude = exclusion_pattern(labels)
    sources: dict[str, list[Path]] = {}
    for package in packages:
        folder = fetch_package(package.name, cache_dir / "packages", runner=runner)
        sources.update(group_sources(folder, name=f"{DEBIAN_SFX}:{package.name}", group_by_folder=package.group_by_folder, exclude=exclude))
    clips = cached_clips(sources, cache_dir, test_fold=test_fold, params=params, progress=progress)
    logger.info("extra background '%s': %d clips of %d sources from %d packages (files naming %s left out)",
                DEBIAN_SFX, len(clips), len({c.source for c in clips}), len(packages), exclude.pattern)  # fmt: skip
    return clips


def folder_clips(
    folder: Path, labels: Sequence[str], *, cache_dir: Path, test_fold: int, params: Params = DEFAULT_PARAMS,
    progress: bool = False,
) -> list[ExtraClip]:  # fmt: skip
    """A folder of recordings (any length, rate, channels) as training-only background clips;
    every file is a source, but saved event clips of one episode are one (episode_sources).
    Files named like a target are NOT left out: the folder is yours."""
    if not folder.is_dir():
        raise ExtraBackgroundError(
            f"extra background folder {folder} does not exist: pass '{DEBIAN_SFX}', 'none' or a folder of recordings"
        )
    sources = group_sources(folder, name="extra", group_by_folder=False, exclude=re.compile(r"(?!)"))
    if not sources:
        raise ExtraBackgroundError(f"extra background folder {folder} holds no {'/'.join(sorted(AUDIO_SUFFIXES))} files")
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return cached_clips(sources, cache_dir / digest, test_fold=test_fold, params=params, progress=progress,
                        filed_under=episode_sources(sources))  # fmt: skip


def extra_background_clips(
    choice: str | os.PathLike[str] | None,
    labels: Sequence[str],
    *,
    test_fold: int,
    cache_dir: Path | None = None,
    params: Params = DEFAULT_PARAMS,
    progress: bool = False,
) -> list[ExtraClip]:
    """The clips of ``--extra-background``: DEBIAN_SFX, a folder, or None (no clips)."""
    if choice is None or str(choice) == "none":
        return []
    from train.assets import user_cache_dir

    cache = cache_dir or user_cache_dir()
    if str(choice) == DEBIAN_SFX:
        return debian_sfx_clips(labels, cache_dir=cache / CACHE_SUBDIR, test_fold=test_fold, params=params, progress=progress)
    return folder_clips(Path(choice), labels, cache_dir=cache / FOLDERS_SUBDIR, test_fold=test_fold, params=params, progress=progress)


LISTENING_SETS: dict[str, str] = {"debian-speech": "ktuberling-data", "debian-music": "asterisk-moh-opsound-wav"}
"""``evaluate-stream --others`` names for Debian packages of what a home hears all day: spoken
words in 19 languages, music on hold."""


def listening_clips(
    choice: str | os.PathLike[str], labels: Sequence[str], *, cache_dir: Path | None = None, params: Params = DEFAULT_PARAMS,
    progress: bool = False, runner: Runner = subprocess.run,
) -> list[ExtraClip]:  # fmt: skip
    """Clips of everyday sound to stream among the test targets (never trained on by the default
    model): a LISTENING_SETS name (downloaded like ``--extra-background debian-sfx``) or a folder of
    your own recordings (TV, radio, your kitchen), cut into 5 s clips."""
    from train.assets import user_cache_dir

    cache = cache_dir or user_cache_dir()
    name = str(choice)
    if name in LISTENING_SETS:
        package = LISTENING_SETS[name]
        folder = fetch_package(package, cache / CACHE_SUBDIR / "packages", runner=runner)
        spec = next(p for p in DEBIAN_SFX_PACKAGES if p.name == package)
        sources = group_sources(folder, name=f"{DEBIAN_SFX}:{package}", group_by_folder=spec.group_by_folder, exclude=exclusion_pattern(labels))
        return cached_clips(sources, cache / CACHE_SUBDIR / "listening" / name, test_fold=0, params=params, progress=progress)
    folder = Path(choice)
    if not folder.is_dir():
        raise ExtraBackgroundError(f"--others {name}: not {' or '.join(LISTENING_SETS)} and not a folder of recordings")
    return folder_clips(folder, labels, cache_dir=cache / FOLDERS_SUBDIR, test_fold=0, params=params, progress=progress)


def describe(clips: Sequence[ExtraClip]) -> dict[str, Any]:
    """Counts for logs and reports: clips, sources, and clips per package or folder."""
    per: dict[str, int] = {}
    for clip in clips:
        group = clip.source.split(":")[1] if clip.source.startswith(DEBIAN_SFX + ":") else clip.source.split(":")[0]
        per[group] = per.get(group, 0) + 1
    return {"clips": len(clips), "sources": len({c.source for c in clips}), "per_group": per}
