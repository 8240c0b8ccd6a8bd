"""The prepared data set on disk (``data/``), and how a user's own clips get labels and folds.

``data/trainData.json`` and ``data/testData.json`` are lists of entries in the tutorial's
schema plus the recording a clip came from::

    {"fileName": "1-187207-A-20.wav", "className": "crying_baby", "classNumber": 0,
     "fold": 1, "source": "esc50:187207"}

``data/classes.json`` is ``{"labels": [...], "background_label": "other" | null, "task": str}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.audio import AUDIO_SUFFIXES

logger = logging.getLogger(__name__)

NUM_FOLDS = 5
"""Cross-validation folds, as in ESC-50; clips of one source recording share a fold."""
DEFAULT_TEST_FOLD = 5
"""The fold held out for testing; folds 1-4 train."""
TRAIN_JSON = "trainData.json"
TEST_JSON = "testData.json"
CLASSES_JSON = "classes.json"
AUDIO_DIR = "audio"
"""Sub-folder of the data folder holding the 16 kHz mono float32 WAV clips."""
SOURCE_SEPARATOR = "__"
"""``<source>__<anything>.wav``: the part before it names the recording a clip was cut from."""
FOLDER_SCOPE = "/"
"""``<folder>/<stem>``: the group of a clip whose name names no group (no label or file name holds a ``/``)."""

_ESC50_NAME = re.compile(r"(?P<fold>[1-9])-(?P<source>[^-]+)-(?P<take>[A-Za-z]+)-(?P<target>\d+)")
_NUMBERED = re.compile(r"(?P<source>.+?)[_-]\d+")
_IGNORED_SHOWN = 5  # files a folder's "ignoring" warning names; the rest are counted
_ENTRY_KEYS = {"fileName": str, "className": str, "classNumber": int, "fold": int, "source": str}
TRAIN_ONLY_KEY = "trainOnly"
"""Optional entry key marking extra background clips (see DatasetEntry.train_only)."""
FALSE_ALARM_KEY = "falseAlarm"
"""Optional entry key marking the device's saved false alarms (see DatasetEntry.false_alarm)."""
FALSE_ALARM_TAG = "false-alarm"
"""Names the saved false alarms: their file-name tag and source prefix, and their category in streams."""


class DatasetError(ValueError):
    """Bad input for, or a bad result of, ``prepare``; the message names the file and the fix."""


@dataclass(frozen=True)
class DatasetEntry:
    """One prepared clip: ``data/audio/<file_name>``, 16 kHz mono float32."""

    file_name: str
    """File name inside ``data/audio/`` (``.wav``)."""
    class_name: str
    """Label, e.g. ``"crying_baby"`` or ``"other"``."""
    class_number: int
    """Index of the label in ``classes.json`` labels (the head's output order)."""
    fold: int
    """Fold 1..5; the test fold is held out."""
    source: str
    """Id of the recording the clip was cut from; clips of one source share a fold."""
    train_only: bool = False
    """Extra background (train.extra_background): trained on, never in a validation or test stream.
    Written as ``"trainOnly": true``; absent for every other clip."""
    false_alarm: bool = False
    """A false alarm the device saved (``prepare --false-alarms DIR``): extra background
    (``train_only`` too) that ALSO joins the validation streams that choose the thresholds, so
    calibration hears the sounds that fooled the device. Never in a test stream. Written as
    ``"falseAlarm": true``."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "fileName": self.file_name,
            "className": self.class_name,
            "classNumber": self.class_number,
            "fold": self.fold,
            "source": self.source,
        }
        if self.train_only:
            document[TRAIN_ONLY_KEY] = True
        if self.false_alarm:
            document[FALSE_ALARM_KEY] = True
        return document

    @classmethod
    def from_json(cls, item: Any, *, where: Path) -> "DatasetEntry":
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: entry {item!r} is not an object; run `oido-train prepare` again")
        for key, kind in _ENTRY_KEYS.items():
            value = item.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DatasetError(
                    f"{where}: entry {item!r} needs {key!r} as {kind.__name__}; run `oido-train prepare` again"
                )
        flags = {}
        for key in (TRAIN_ONLY_KEY, FALSE_ALARM_KEY):
            flags[key] = item.get(key, False)
            if not isinstance(flags[key], bool):
                raise DatasetError(f"{where}: entry {item!r} needs {key!r} as true or false; run `oido-train prepare` again")
        if flags[FALSE_ALARM_KEY] and not flags[TRAIN_ONLY_KEY]:
            raise DatasetError(
                f"{where}: entry {item!r} is a false alarm without {TRAIN_ONLY_KEY!r}: run `oido-train prepare` again"
            )
        return cls(
            file_name=item["fileName"],
            class_name=item["className"],
            class_number=item["classNumber"],
            fold=item["fold"],
            source=item["source"],
            train_only=flags[TRAIN_ONLY_KEY],
            false_alarm=flags[FALSE_ALARM_KEY],
        )


@dataclass(frozen=True)
class PrepareReport:
    """What one ``prepare`` run did."""

    written: int = 0
    """Clips decoded, resampled and written."""
    skipped: int = 0
    """Clips whose output already existed from the same source bytes."""
    padded: tuple[str, ...] = ()
    """Output files zero-padded to one patch because their source was shorter."""
    duplicates: tuple[tuple[str, str], ...] = ()
    """(dropped source, kept source) pairs of byte-identical files."""
    removed: int = 0
    """Stale outputs of an earlier run deleted."""
    seconds: float = 0.0
    """Wall-clock time of the run."""


@dataclass(frozen=True)
class PreparedDataset:
    """The prepared data set: labels, and train/test entries whose audio is in ``data_dir/audio``."""

    data_dir: Path
    labels: tuple[str, ...]
    """Class names in head output order; the background label, if any, is last."""
    background_label: str | None
    task: str
    train: tuple[DatasetEntry, ...]
    test: tuple[DatasetEntry, ...]
    test_fold: int = DEFAULT_TEST_FOLD
    report: PrepareReport | None = field(default=None, compare=False)
    """Set by ``prepare_dataset``; None when loaded from disk."""

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / AUDIO_DIR

    @property
    def entries(self) -> tuple[DatasetEntry, ...]:
        return self.train + self.test

    def audio_path(self, entry: DatasetEntry) -> Path:
        """Path of an entry's 16 kHz mono float32 WAV."""
        return self.audio_dir / entry.file_name

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips per label, ``{"train": {label: n}, "test": {label: n}}``, in label order."""
        return {
            split: {label: sum(e.class_name == label for e in entries) for label in self.labels}
            for split, entries in (("train", self.train), ("test", self.test))
        }


# --- reading and writing data/ ---------------------------------------------------------------


def dataset_json(dataset: PreparedDataset) -> dict[str, Any]:
    """The three JSON documents of a data set, keyed by file name."""
    return {
        TRAIN_JSON: [entry.to_json() for entry in dataset.train],
        TEST_JSON: [entry.to_json() for entry in dataset.test],
        CLASSES_JSON: {
            "labels": list(dataset.labels),
            "background_label": dataset.background_label,
            "task": dataset.task,
        },
    }


def load_dataset(data_dir: str | os.PathLike[str] = Path("data"), *, check_audio: bool = True) -> PreparedDataset:
    """Read ``trainData.json``, ``testData.json`` and ``classes.json`` written by ``prepare``.

    Args:
        data_dir: the data folder (``data/``).
        check_audio: also check that every entry's WAV exists.

    Raises:
        DatasetError: a file is missing or malformed, or entries disagree with the labels;
            the message names the file and says to run ``oido-train prepare``.
    """
    root = Path(data_dir)
    documents: dict[str, Any] = {}
    for name in (CLASSES_JSON, TRAIN_JSON, TEST_JSON):
        path = root / name
        try:
            documents[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(
                f"{path} not found: run `oido-train prepare` first (or pass the data folder it wrote)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DatasetError(f"{path} is unreadable ({error}): run `oido-train prepare` again") from error
    classes_path = root / CLASSES_JSON
    classes = documents[CLASSES_JSON]
    labels = classes.get("labels") if isinstance(classes, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise DatasetError(f"{classes_path} needs a non-empty 'labels' list of names; run `oido-train prepare` again")
    background = classes.get("background_label")
    if background is not None and background not in labels:
        raise DatasetError(f"{classes_path}: background_label {background!r} is not one of the labels {labels}")
    task = classes.get("task")
    if not isinstance(task, str):
        raise DatasetError(f"{classes_path} needs a 'task' string; run `oido-train prepare` again")

    splits: dict[str, tuple[DatasetEntry, ...]] = {}
    for name in (TRAIN_JSON, TEST_JSON):
        path = root / name
        items = documents[name]
        if not isinstance(items, list):
            raise DatasetError(f"{path} must hold a list of entries; run `oido-train prepare` again")
        entries = tuple(DatasetEntry.from_json(item, where=path) for item in items)
        for entry in entries:
            if not 0 <= entry.class_number < len(labels) or labels[entry.class_number] != entry.class_name:
                raise DatasetError(
                    f"{path}: {entry.file_name} has class {entry.class_name!r} number {entry.class_number}, "
                    f"which disagrees with {classes_path} labels {labels}; run `oido-train prepare` again"
                )
            if check_audio and not (root / AUDIO_DIR / entry.file_name).is_file():
                raise DatasetError(
                    f"{path}: audio {root / AUDIO_DIR / entry.file_name} is missing; run `oido-train prepare` again"
                )
        splits[name] = entries
    test_folds = {entry.fold for entry in splits[TEST_JSON]}
    if len(test_folds) != 1:
        raise DatasetError(
            f"{root / TEST_JSON} must hold exactly one fold, found {sorted(test_folds)}; run `oido-train prepare` again"
        )
    (test_fold,) = test_folds
    if any(entry.fold == test_fold for entry in splits[TRAIN_JSON]):
        raise DatasetError(
            f"{root / TRAIN_JSON} holds clips of the test fold {test_fold}; run `oido-train prepare` again"
        )
    if any(entry.train_only for entry in splits[TEST_JSON]):
        raise DatasetError(f"{root / TEST_JSON} holds training-only clips; run `oido-train prepare` again")
    return PreparedDataset(
        data_dir=root,
        labels=tuple(labels),
        background_label=background,
        task=task,
        train=splits[TRAIN_JSON],
        test=splits[TEST_JSON],
        test_fold=test_fold,
    )


# --- labels, sources, folds ------------------------------------------------------------------


def validate_label(name: str, *, where: object = "class list") -> str:
    """Return ``name`` if it can be a label and a folder name; else DatasetError naming it.

    Rejected: empty or blank names, ``.``/``..``, path separators, control characters,
    and leading/trailing whitespace. Any other unicode is fine.
    """
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is a relative path"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        problem = "contains a path separator"
    elif any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        problem = "contains a control character"
    elif name != name.strip():
        problem = "starts or ends with whitespace"
    if problem is not None:
        raise DatasetError(f"label {name!r} from {where} {problem}: rename it to a plain name such as 'door_knock'")
    return name


def source_and_fold(stem: str) -> tuple[str, int | None]:
    """The source recording a clip came from, and its fold if the name fixes one.

    - ESC-50 names ``<fold>-<src>-<take>-<target>``: source ``<src>``, fold ``<fold>``
      (if it is 1..5);
    - ``<source>__<anything>``: source ``<source>``;
    - else the stem minus a trailing ``_NN`` / ``-NN`` numbering (``kitchen_03`` ->
      ``kitchen``); a stem without numbering is its own source.
    """
    esc50 = _ESC50_NAME.fullmatch(stem)
    if esc50:
        fold = int(esc50["fold"])
        return esc50["source"], fold if 1 <= fold <= NUM_FOLDS else None
    head, separator, _ = stem.partition(SOURCE_SEPARATOR)
    if separator and head:
        return head, None
    numbered = _NUMBERED.fullmatch(stem)
    if numbered:
        return numbered["source"], None
    return stem, None


def clip_group(stem: str, *, folder: str) -> tuple[str, int | None]:
    """:func:`source_and_fold` for a clip of the label (or background) folder ``folder``.

    A group the name spells out (ESC-50 source, ``<source>__``, ``<source>_NN``) is shared across
    folders: a session cut into several labels stays in one fold. A stem that names no group
    (``office``, or the bare ``0000`` of older ``oido-edge record`` releases) is a group of one
    clip, ``<folder>/<stem>``, so ``kettle/0000.wav`` and ``door/0000.wav`` are two groups, not one.
    """
    source, fold = source_and_fold(stem)
    if source == stem:
        return f"{folder}{FOLDER_SCOPE}{stem}", fold
    return source, fold


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def assign_folds(
    clips: Sequence[tuple[str, str]],
    *,
    fixed: Mapping[str, int] | None = None,
    num_folds: int = NUM_FOLDS,
) -> dict[str, int]:
    """Give each source group a fold 1..num_folds, balancing clips per class.

    Args:
        clips: (class name, source) of every clip.
        fixed: sources whose fold is already known (ESC-50 file names); they count
            towards the balance.
        num_folds: number of folds.

    Returns:
        {source: fold} for every source. Deterministic: groups are placed largest
        first (ties in the order of a hash of their name) into the fold where their
        classes hold the fewest clips so far (ties in a per-group hashed order), so
        every clip of one source lands in one fold.
    """
    fixed = dict(fixed or {})
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    for class_name, source in clips:
        per_source[source][class_name] += 1
    load: dict[str, list[int]] = defaultdict(lambda: [0] * num_folds)
    for source, fold in fixed.items():
        for class_name, count in per_source.get(source, Counter()).items():
            load[class_name][fold - 1] += count
    folds = dict(fixed)
    free = sorted(
        (source for source in per_source if source not in fixed),
        key=lambda source: (-sum(per_source[source].values()), _stable_hash(source), source),
    )
    for source in free:
        offset = _stable_hash(f"fold:{source}") % num_folds
        order = [(offset + index) % num_folds for index in range(num_folds)]
        best = min(
            order,
            key=lambda fold_index: (
                sum(load[class_name][fold_index] for class_name in per_source[source]),
                order.index(fold_index),
            ),
        )
        folds[source] = best + 1
        for class_name, count in per_source[source].items():
            load[class_name][best] += count
    return folds


def ensure_test_fold(
    clips: Sequence[tuple[str, str]],
    folds: dict[str, int],
    *,
    test_fold: int,
    movable: Iterable[str],
    last_resort: Iterable[str] = (),
) -> dict[str, int]:
    """Move the smallest movable source of a class lacking test clips into the test fold.

    Only classes with at least two source groups are helped (one group cannot be split
    without leaking). A source moves only if every class it holds keeps a training group
    (a session shared by two labels must not take the other label's last one); else the
    next candidate is tried. Sources in ``last_resort`` (groups an earlier prepare trained
    on) are tried only after every other candidate, with a warning. The caller reports
    classes that still lack test clips.
    """
    movable = set(movable)
    last_resort = set(last_resort)
    result = dict(folds)
    sources_of: dict[str, Counter[str]] = defaultdict(Counter)
    classes_of: dict[str, set[str]] = defaultdict(set)
    for class_name, source in clips:
        sources_of[class_name][source] += 1
        classes_of[source].add(class_name)

    def keeps_training(source: str) -> bool:
        return all(
            any(result[other] != test_fold for other in sources_of[class_name] if other != source)
            for class_name in classes_of[source]
        )

    for class_name, sources in sorted(sources_of.items()):
        if any(result[source] == test_fold for source in sources) or len(sources) < 2:
            continue
        candidates = sorted(
            (source for source in sources if source in movable),
            key=lambda source: (source in last_resort, sources[source], _stable_hash(source), source),
        )
        for source in candidates:
            if keeps_training(source):
                if source in last_resort:
                    logger.warning(
                        "class %r has no test clips left: moving source group %r from training fold %d to the "
                        "test fold %d; a head trained before this prepare has heard it, so fit it again",
                        class_name, source, result[source], test_fold,
                    )  # fmt: skip
                result[source] = test_fold
                break
    return result


# --- a user's own clips ----------------------------------------------------------------------


@dataclass(frozen=True)
class OwnClip:
    """A clip found in a user's folder, before conversion."""

    path: Path
    class_name: str
    source: str
    fold: int | None
    """Fold fixed by an ESC-50 style name, else None (assigned by hash)."""


def audio_files(folder: Path) -> list[Path]:
    """The audio files directly inside ``folder`` (by suffix), sorted.

    Sub-folders are ignored with a warning each; other files (an ``.mp3``, ``notes.txt``) with
    one warning naming the first few and the suffixes taken. Hidden entries are skipped silently.
    """
    files: list[Path] = []
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            logger.warning("ignoring sub-folder %s: put clips directly in %s", path, folder)
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            files.append(path)
        else:
            ignored.append(path.name)
    if ignored:
        shown = ", ".join(ignored[:_IGNORED_SHOWN])
        if len(ignored) > _IGNORED_SHOWN:
            shown += f" and {len(ignored) - _IGNORED_SHOWN} more"
        logger.warning(
            "ignoring %d file(s) in %s that are not %s: %s; convert any recording among them to WAV or FLAC "
            "(e.g. `ffmpeg -i in.mp3 out.wav`)",
            len(ignored), folder, "/".join(sorted(AUDIO_SUFFIXES)), shown,
        )  # fmt: skip
    return files


def scan_class_folders(own_data_dir: Path, *, classes: Sequence[str] | None = None) -> dict[str, list[OwnClip]]:
    """``own_data_dir/<label>/*.wav|*.flac|...`` -> {label: clips}, labels sorted unless ``classes`` orders them.

    Raises:
        DatasetError: the folder is missing, a label is invalid, a requested class has
            no folder, or a class folder holds no audio.
    """
    root = Path(own_data_dir)
    if not root.is_dir():
        raise DatasetError(
            f"own data folder {root} does not exist: make it with one sub-folder of clips per label, "
            f"e.g. {root / 'door_knock' / 'kitchen_01.wav'}"
        )
    folders = {path.name: path for path in sorted(root.iterdir()) if path.is_dir() and not path.name.startswith(".")}
    loose = [path.name for path in sorted(root.iterdir()) if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES]
    if loose:
        logger.warning(
            "ignoring %d clip(s) directly in %s (e.g. %s): put each clip in its label's folder, %s/<label>/",
            len(loose), root, loose[0], root,
        )  # fmt: skip
    if classes is None:
        labels = list(folders)
        if not labels:
            raise DatasetError(
                f"{root} holds no class folders: add one sub-folder of clips per label, "
                f"e.g. {root / 'door_knock' / 'kitchen_01.wav'}"
            )
    else:
        labels = list(classes)
        missing = [label for label in labels if label not in folders]
        if missing:
            raise DatasetError(
                f"class(es) {missing} have no folder in {root}; found: {', '.join(folders) or 'none'}"
            )
    result: dict[str, list[OwnClip]] = {}
    for label in labels:
        validate_label(label, where=root / label if label in folders else "the class list")
        files = audio_files(folders[label])
        if not files:
            raise DatasetError(
                f"class {label!r} has no clips: {folders[label]} holds no "
                f"{'/'.join(sorted(AUDIO_SUFFIXES))} files; add recordings or drop the class"
            )
        result[label] = [OwnClip(path, label, *clip_group(path.stem, folder=label)) for path in files]
    return result


def scan_background_folder(folder: Path, *, label: str) -> list[OwnClip]:
    """A folder of the user's own background recordings -> clips labelled ``label``."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(
            f"background folder {root} does not exist: pass background='esc10', None, or a folder of recordings"
        )
    files = audio_files(root)
    if not files:
        raise DatasetError(f"background folder {root} holds no {'/'.join(sorted(AUDIO_SUFFIXES))} files")
    return [OwnClip(path, label, *clip_group(path.stem, folder=label)) for path in files]


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as UTF-8 JSON to ``path`` via a temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
