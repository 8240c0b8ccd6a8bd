"""Find the ESC-50 clips and the YAMNet weights file on this machine, or download ESC-50.

Search order (the same for both assets):

1. a location you give on the command line: ``--esc50 PATH`` / ``--yamnet-weights FILE``,
   then ``--assets DIR`` (the folder holding ``esc50/`` and ``yamnet/``);
2. the environment: ``$OIDO_ESC50`` / ``$OIDO_YAMNET_TFLITE``, then ``$OIDO_ASSETS``;
3. ``../shared/assets`` beside the repository root (found from this file), then beside the
   current directory;
4. the user cache, ``~/.cache/oido`` (``$XDG_CACHE_HOME/oido`` if set);
5. a download: ESC-50's upstream archive here, extracted into the cache (YAMNet's TF Hub
   fallback lives in ``train.yamnet``).

Only the first location given in 1-2 is looked at, and one that does not hold the asset is an
AssetError naming it, never skipped: a typo must not silently train on other data.

A clip named ``<stem>.wav`` in ``meta/esc50.csv`` is read from ``audio/<stem>.wav``
or, failing that, ``esc10-16k/<stem>.flac`` (the local copy's 16 kHz ESC-10 clips).
"""

from __future__ import annotations

import csv
import http.client
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib import request

logger = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
"""The upstream ESC-50 archive (about 600 MB); its top folder is ``ESC-50-master/``."""
ESC50_ENV = "OIDO_ESC50"
"""Environment variable naming the ESC-50 folder."""
ASSETS_ENV = "OIDO_ASSETS"
"""Environment variable naming the assets root (holding ``esc50/`` and ``yamnet/``)."""
YAMNET_ENV = "OIDO_YAMNET_TFLITE"
"""Environment variable naming the YAMNet weights file."""
YAMNET_WEIGHTS_FILE = "yamnet_public_int8w.tflite"
"""The TF-Lite copy of the public YAMNet weights, in ``yamnet/`` of the assets root."""
ESC50_CSV = Path("meta") / "esc50.csv"
ORIGINAL_AUDIO_DIR = "audio"
"""ESC-50's own folder of 44.1 kHz WAV clips."""
ESC10_16K_DIR = "esc10-16k"
"""The local copy's folder of 16 kHz FLAC ESC-10 clips (same stems as ``audio/``)."""
DOWNLOAD_TIMEOUT_SECONDS = 30.0
"""Socket timeout for the archive download."""
_DOWNLOAD_CHUNK_BYTES = 1 << 20
DOWNLOAD_SCRATCH_PREFIX = ".esc50-download-"
"""Name prefix of the scratch folder a download streams into, beside its target."""
STALE_SCRATCH_SECONDS = 24 * 3600.0
"""A scratch folder nothing has written to for this long is a killed download's, and is removed."""


class AssetError(RuntimeError):
    """An asset (ESC-50, YAMNet) is missing and cannot be fetched; the message says what to put where."""


# --- locating -----------------------------------------------------------------------------


def repo_root() -> Path:
    """The repository root: the folder holding ``train/`` (found from this file, not the cwd)."""
    return Path(__file__).resolve().parent.parent


def user_cache_dir(*, env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/oido`` or ``~/.cache/oido`` (an empty or relative ``$XDG_CACHE_HOME`` is
    ignored, as the XDG spec says): where downloads go (ESC-50, TF Hub's YAMNet)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME")
    return (Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache") / "oido"


def is_esc50_dir(path: Path) -> bool:
    """True if ``path`` holds ``meta/esc50.csv`` and at least one of ``audio/``, ``esc10-16k/``."""
    return (path / ESC50_CSV).is_file() and (
        (path / ORIGINAL_AUDIO_DIR).is_dir() or (path / ESC10_16K_DIR).is_dir()
    )


def _shared_assets_candidates(*, root: Path, cwd: Path) -> list[Path]:
    candidates: list[Path] = []
    for base in (root, cwd):
        path = (base.parent / "shared" / "assets").resolve()
        if path not in candidates:
            candidates.append(path)
    return candidates


def find_assets_dir(
    *,
    assets_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
) -> Path | None:
    """The assets root (holding ``esc50/`` and/or ``yamnet/``), or None if none is found.

    Order: ``assets_dir``, ``$OIDO_ASSETS``, ``../shared/assets`` beside the repository
    root, then beside ``cwd``. An explicit root that does not exist raises AssetError.
    """
    env = os.environ if env is None else env
    if assets_dir is not None:
        origin, explicit = "--assets", assets_dir
    else:
        origin, explicit = ASSETS_ENV, env.get(ASSETS_ENV) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise AssetError(
                f"assets folder {path} (from {origin}) does not exist: "
                f"point {origin} at the folder holding esc50/ and yamnet/"
            )
        return path
    for path in _shared_assets_candidates(root=root or repo_root(), cwd=cwd or Path.cwd()):
        if path.is_dir():
            return path
    return None


def find_yamnet_dir(
    *,
    assets_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
) -> Path:
    """The ``yamnet/`` folder of the assets root (see find_assets_dir); AssetError if absent."""
    assets = find_assets_dir(assets_dir=assets_dir, env=env, root=root, cwd=cwd)
    if assets is None or not (assets / "yamnet").is_dir():
        where = assets if assets is not None else "../shared/assets"
        raise AssetError(
            f"YAMNet assets not found: put the yamnet/ folder in {where} "
            f"or pass --assets PATH / set {ASSETS_ENV} to the folder holding it"
        )
    return assets / "yamnet"


def esc50_in_assets(assets_dir: Path) -> Path:
    """The ESC-50 folder of an assets root: ``assets_dir/esc50``, or ``assets_dir`` itself
    when it is an ESC-50 folder (a user pointing ``--assets`` / ``$OIDO_ASSETS`` at esc50/)."""
    return assets_dir if is_esc50_dir(assets_dir) else assets_dir / "esc50"


def _first_given(
    flags: Sequence[tuple[str, str | os.PathLike[str] | None]],
    variables: Sequence[str],
    env: Mapping[str, str],
) -> tuple[str, Path] | None:
    """(origin, path) of the first location given: the flags in order, then the environment variables."""
    for origin, value in flags:
        if value is not None:
            return origin, Path(value).expanduser()
    for name in variables:
        if env.get(name):
            return name, Path(env[name]).expanduser()
    return None


def _implicit_places(
    subdir: str, *, env: Mapping[str, str], root: Path | None, cwd: Path | None, cache_dir: Path | None
) -> list[tuple[str, Path]]:
    places = [
        ("shared assets", path / subdir)
        for path in _shared_assets_candidates(root=root or repo_root(), cwd=cwd or Path.cwd())
    ]
    places.append(("user cache", (cache_dir or user_cache_dir(env=env)) / subdir))
    return places


def esc50_candidates(
    *,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(explicit, implicit) ESC-50 locations in search order, each as (where it came from, path).

    explicit: at most one, the first given of ``--esc50``, ``--assets``, ``$OIDO_ESC50``,
    ``$OIDO_ASSETS`` (flags before variables); implicit: the shared assets, the user cache.
    """
    env = os.environ if env is None else env
    given = _first_given([("--esc50", esc50_dir), ("--assets", assets_dir)], [ESC50_ENV, ASSETS_ENV], env)
    explicit: list[tuple[str, Path]] = []
    if given is not None:
        origin, path = given
        explicit.append((origin, path if origin in ("--esc50", ESC50_ENV) else esc50_in_assets(path)))
    return explicit, _implicit_places("esc50", env=env, root=root, cwd=cwd, cache_dir=cache_dir)


def yamnet_in_assets(assets_dir: Path) -> Path:
    """The weights file of an assets root: ``assets_dir/yamnet/yamnet_public_int8w.tflite``, or
    ``assets_dir/yamnet_public_int8w.tflite`` when ``assets_dir`` is the yamnet/ folder itself, or
    ``yamnet/`` beside it when ``assets_dir`` is an ESC-50 folder (which ``--assets`` also accepts)."""
    inside = assets_dir / YAMNET_WEIGHTS_FILE
    if inside.is_file():
        return inside
    root = assets_dir.parent if is_esc50_dir(assets_dir) else assets_dir
    return root / "yamnet" / YAMNET_WEIGHTS_FILE


def yamnet_candidates(
    *,
    weights_path: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(explicit, implicit) places of the YAMNet weights file in search order, as (origin, file).

    explicit: at most one, the first given of ``--yamnet-weights``, ``--assets``,
    ``$OIDO_YAMNET_TFLITE``, ``$OIDO_ASSETS``; implicit: the shared assets, the user cache.
    """
    env = os.environ if env is None else env
    given = _first_given(
        [("--yamnet-weights", weights_path), ("--assets", assets_dir)], [YAMNET_ENV, ASSETS_ENV], env
    )
    explicit: list[tuple[str, Path]] = []
    if given is not None:
        origin, path = given
        explicit.append((origin, path if origin in ("--yamnet-weights", YAMNET_ENV) else yamnet_in_assets(path)))
    implicit = [
        (origin, folder / YAMNET_WEIGHTS_FILE)
        for origin, folder in _implicit_places("yamnet", env=env, root=root, cwd=cwd, cache_dir=cache_dir)
    ]
    return explicit, implicit


def find_yamnet_weights(
    *,
    weights_path: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> Path | None:
    """The YAMNet weights file (yamnet_public_int8w.tflite) in the order of yamnet_candidates;
    None when no location was given and none of the implicit ones holds it (then: TF Hub).

    Raises:
        AssetError: the location given (flag or environment variable) does not hold the file.
    """
    explicit, implicit = yamnet_candidates(
        weights_path=weights_path, assets_dir=assets_dir, env=env, root=root, cwd=cwd, cache_dir=cache_dir
    )
    for origin, path in explicit:
        if path.is_file():
            logger.info("YAMNet weights from %s: %s", origin, path)
            return path
        if origin in ("--yamnet-weights", YAMNET_ENV):
            drop = "leave it out" if origin.startswith("--") else "unset it"
            raise AssetError(
                f"YAMNet weights file {path} (from {origin}) does not exist: point {origin} at "
                f"{YAMNET_WEIGHTS_FILE} (in yamnet/ of the shared assets), or {drop} to search for it"
            )
        folder = path.parent.parent
        if not folder.is_dir():
            raise AssetError(
                f"assets folder {folder} (from {origin}) does not exist: "
                f"point {origin} at the folder holding esc50/ and yamnet/"
            )
        raise AssetError(
            f"YAMNet weights not found at {path} (from {origin}): point {origin} at the folder holding "
            f"yamnet/{YAMNET_WEIGHTS_FILE}, or pass --yamnet-weights FILE"
        )
    for origin, path in implicit:
        if path.is_file():
            logger.info("YAMNet weights from %s: %s", origin, path)
            return path
        logger.debug("no YAMNet weights at %s (%s)", path, origin)
    return None


def find_esc50(
    *,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    url: str = ESC50_URL,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The ESC-50 folder: a flag, an environment variable, the shared assets, the user cache,
    else a download (the module docstring gives the order).

    Args:
        esc50_dir: the ESC-50 folder itself (``--esc50``); overrides everything else.
        assets_dir: an assets root holding ``esc50/``, or an ESC-50 folder itself (``--assets``);
            overrides ``$OIDO_ESC50`` and ``$OIDO_ASSETS``.
        download: try the upstream archive when no local copy is found.
        progress: show a download progress bar (on a terminal only).
        env, root, cwd, cache_dir: where to look instead of ``os.environ``, the repository
            root, the current directory and the user cache (for tests).

    Raises:
        AssetError: an explicit location lacks ESC-50, or nothing was found and the
            download failed (one sentence saying what to put where).
    """
    cache = cache_dir or user_cache_dir(env=env)
    explicit, implicit = esc50_candidates(
        esc50_dir=esc50_dir, assets_dir=assets_dir, env=env, root=root, cwd=cwd, cache_dir=cache
    )
    for origin, path in explicit:
        if is_esc50_dir(path):
            logger.info("ESC-50 from %s: %s", origin, path)
            return path
        # --assets / OIDO_ASSETS name the folder holding esc50/ (ESC-50 itself is accepted too).
        point_at = (
            "the ESC-50 folder" if origin in ("--esc50", ESC50_ENV)
            else "the folder holding esc50/ (or at the ESC-50 folder itself)"
        )  # fmt: skip
        raise AssetError(
            f"ESC-50 not found at {path} (from {origin}): that folder must hold "
            f"{ESC50_CSV.as_posix()} and {ORIGINAL_AUDIO_DIR}/ or {ESC10_16K_DIR}/; "
            f"point {origin} at {point_at}"
        )
    for origin, path in implicit:
        if is_esc50_dir(path):
            logger.info("ESC-50 from %s: %s", origin, path)
            return path
        logger.debug("no ESC-50 at %s (%s)", path, origin)
    target = cache / "esc50"
    if not download:
        reason = "downloading is disabled"
    else:
        try:
            return download_esc50(target, url=url, progress=progress)
        except (OSError, zipfile.BadZipFile, AssetError) as error:
            reason = str(error) or type(error).__name__
    shared = _shared_assets_candidates(root=root or repo_root(), cwd=cwd or Path.cwd())[0] / "esc50"
    raise AssetError(
        f"ESC-50 not found: put the ESC-50 folder (audio/ + {ESC50_CSV.as_posix()}) at {shared} or {target}, "
        f"or pass --esc50 PATH or --assets DIR (the folder holding esc50/); download failed: {reason}"
    )


def find_local_esc50(
    *,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> Path | None:
    """The ESC-50 folder as find_esc50 finds it, never downloading; None when no location is given
    and none of the implicit ones holds it (the soak and fuzz scripts then use synthetic audio).

    Raises:
        AssetError: a location is given ($OIDO_ESC50, $OIDO_ASSETS) that does not hold ESC-50: a
            typo must not silently swap the real clips for synthetic ones.
    """
    where = {"env": env, "root": root, "cwd": cwd, "cache_dir": cache_dir}
    explicit, _ = esc50_candidates(**where)
    try:
        return find_esc50(download=False, progress=False, **where)
    except AssetError:
        if explicit:
            raise
        return None


# --- downloading --------------------------------------------------------------------------


def remove_stale_downloads(folder: Path, *, max_idle_seconds: float = STALE_SCRATCH_SECONDS) -> list[Path]:
    """Remove the scratch folders (``.esc50-download-*``) in ``folder`` that nothing has written to
    for ``max_idle_seconds``: what a killed download leaves (up to 600 MB each). Returns them.

    Idle time, not a lock or a process id: a live download writes every second, and the test
    holds for a cache shared between machines, where another host's process ids mean nothing.
    """
    removed: list[Path] = []
    now = time.time()
    for scratch in sorted(folder.glob(f"{DOWNLOAD_SCRATCH_PREFIX}*")):
        try:
            idle = now - max(_modification_times(scratch))
        except OSError:  # gone meanwhile: another download cleaned up
            continue
        if scratch.is_dir() and idle >= max_idle_seconds:
            logger.info("removing %s, left by an interrupted download (untouched for %.0f h)", scratch, idle / 3600)
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
    return removed


def _modification_times(folder: Path) -> Iterator[float]:
    yield folder.stat().st_mtime
    for parent, _, files in os.walk(folder):
        yield os.stat(parent).st_mtime
        for name in files:
            yield os.stat(os.path.join(parent, name)).st_mtime


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f}"


def download_esc50(
    target: Path,
    *,
    url: str = ESC50_URL,
    progress: bool = True,
    timeout_seconds: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Download the ESC-50 archive and extract its audio/ and meta/ into ``target``.

    The archive is streamed to a scratch folder beside ``target`` and extracted there; the
    result is renamed into place only when complete, so an interrupted download leaves nothing
    that looks like ESC-50. Scratch folders of earlier, killed downloads are removed first
    (remove_stale_downloads).

    Raises:
        OSError: the download or the extraction failed (offline, disk full, or the server sent
            fewer bytes than its Content-Length: "interrupted after X of Y MB").
        AssetError: the archive does not hold ESC-50.
    """
    from tqdm import tqdm  # noqa: PLC0415 - only a download needs it

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_downloads(target.parent)
    logger.info("downloading ESC-50 from %s into %s", url, target)
    with tempfile.TemporaryDirectory(prefix=DOWNLOAD_SCRATCH_PREFIX, dir=target.parent) as scratch:
        archive = Path(scratch) / "esc50.zip"
        received = 0
        with request.urlopen(url, timeout=timeout_seconds) as response, archive.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="ESC-50", disable=None if progress else True
            ) as bar:
                cut_short = False
                try:
                    while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except http.client.IncompleteRead:  # a chunked body cut short
                    cut_short = True
        # http.client ends a body shorter than its Content-Length quietly; unchecked, that
        # surfaced as "File is not a zip file".
        if cut_short or (total is not None and received != total):
            of_total = f" of {_megabytes(total)}" if total is not None else ""
            raise OSError(
                f"the download of {url} was interrupted after {_megabytes(received)}{of_total} MB; run again to retry"
            )
        extracted = Path(scratch) / "extracted"
        with zipfile.ZipFile(archive) as zipped:
            members = [
                name
                for name in zipped.namelist()
                if len(Path(name).parts) > 1 and Path(name).parts[1] in (ORIGINAL_AUDIO_DIR, "meta")
            ]
            zipped.extractall(extracted, members=members)
        tops = [path for path in extracted.iterdir() if is_esc50_dir(path)] if extracted.is_dir() else []
        if not tops:
            raise AssetError(f"the archive from {url} holds no {ESC50_CSV.as_posix()}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tops[0], target)
    logger.info("ESC-50 extracted into %s", target)
    return target


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Esc50Clip:
    """One row of ``meta/esc50.csv``."""

    filename: str
    """Upstream file name, ``<fold>-<src_file>-<take>-<target>.wav``."""
    fold: int
    """Cross-validation fold 1..5; clips cut from one recording share a fold."""
    target: int
    """ESC-50 class index 0..49."""
    category: str
    """ESC-50 class name, e.g. ``"dog"``."""
    esc10: bool
    """Whether the clip belongs to the ESC-10 subset."""
    src_file: str
    """Freesound id of the recording the clip was cut from."""
    take: str
    """Which cut of that recording (``A``, ``B``, ...)."""

    @property
    def stem(self) -> str:
        return Path(self.filename).stem


class Esc50Catalog:
    """The clips of an ESC-50 folder: metadata for all 2000, and which are present locally."""

    def __init__(self, esc50_dir: str | os.PathLike[str]) -> None:
        self.root = Path(esc50_dir)
        csv_path = self.root / ESC50_CSV
        if not self.root.is_dir():
            raise AssetError(
                f"ESC-50 folder {self.root} does not exist: pass --esc50 PATH / set {ESC50_ENV} "
                f"to a folder holding audio/ and {ESC50_CSV.as_posix()}"
            )
        if not csv_path.is_file():
            raise AssetError(
                f"{csv_path} not found: {self.root} is not an ESC-50 folder "
                f"(it needs audio/ and {ESC50_CSV.as_posix()})"
            )
        self.clips: tuple[Esc50Clip, ...] = tuple(_read_csv(csv_path))
        self._original = _listing(self.root / ORIGINAL_AUDIO_DIR)
        self._esc10_16k = _listing(self.root / ESC10_16K_DIR)

    @property
    def categories(self) -> list[str]:
        """All class names, in ESC-50 target order."""
        by_target = {clip.target: clip.category for clip in self.clips}
        return [by_target[target] for target in sorted(by_target)]

    @property
    def esc10_categories(self) -> list[str]:
        """The ten ESC-10 class names, in ESC-50 target order."""
        by_target = {clip.target: clip.category for clip in self.clips if clip.esc10}
        return [by_target[target] for target in sorted(by_target)]

    def clips_of(self, category: str) -> list[Esc50Clip]:
        """The clips of one class, sorted by file name; ValueError listing valid names if unknown."""
        self.check_categories([category])
        return sorted((clip for clip in self.clips if clip.category == category), key=lambda c: c.filename)

    def check_categories(self, categories: Iterable[str]) -> None:
        """Raise ValueError naming every unknown class and listing the valid ones."""
        known = set(self.categories)
        unknown = [name for name in categories if name not in known]
        if unknown:
            raise ValueError(
                f"unknown ESC-50 class(es) {unknown} (from {self.root / ESC50_CSV}); "
                f"valid names: {', '.join(sorted(known))}"
            )

    def clip_path(self, clip: Esc50Clip) -> Path | None:
        """Where the clip is on disk: ``audio/<filename>``, else ``esc10-16k/<stem>.flac``, else None."""
        if clip.filename in self._original:
            return self.root / ORIGINAL_AUDIO_DIR / clip.filename
        flac = f"{clip.stem}.flac"
        if flac in self._esc10_16k:
            return self.root / ESC10_16K_DIR / flac
        return None

    def present_clips(self, categories: Sequence[str]) -> list[tuple[Esc50Clip, Path]]:
        """Every clip of ``categories`` with its path; AssetError naming each class with missing clips."""
        self.check_categories(categories)
        found: list[tuple[Esc50Clip, Path]] = []
        problems: list[str] = []
        for category in categories:
            clips = self.clips_of(category)
            missing = [clip for clip in clips if self.clip_path(clip) is None]
            if missing:
                problems.append(
                    f"'{category}' ({len(missing)} of {len(clips)} clips missing, e.g. {missing[0].filename})"
                )
                continue
            found.extend((clip, path) for clip in clips if (path := self.clip_path(clip)) is not None)
        if problems:
            raise AssetError(
                f"ESC-50 clips missing in {self.root / ORIGINAL_AUDIO_DIR} and {self.root / ESC10_16K_DIR} "
                f"for class {'; '.join(problems)}: this copy holds only some classes, so point --esc50 / "
                f"{ESC50_ENV} at a full ESC-50 folder (all 2000 clips, from {ESC50_URL})"
            )
        return found


def _listing(folder: Path) -> frozenset[str]:
    return frozenset(os.listdir(folder)) if folder.is_dir() else frozenset()


def _read_csv(csv_path: Path) -> list[Esc50Clip]:
    required = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in required if name not in (reader.fieldnames or [])]
            if missing:
                raise AssetError(f"{csv_path} lacks column(s) {missing}: replace it with ESC-50's meta/esc50.csv")
            return [
                Esc50Clip(
                    filename=row["filename"],
                    fold=int(row["fold"]),
                    target=int(row["target"]),
                    category=row["category"],
                    esc10=row["esc10"].strip().lower() == "true",
                    src_file=row["src_file"],
                    take=row["take"],
                )
                for row in reader
            ]
    except (ValueError, KeyError) as error:
        raise AssetError(
            f"{csv_path} is not a valid ESC-50 metadata file ({error}): replace it with ESC-50's meta/esc50.csv"
        ) from error
