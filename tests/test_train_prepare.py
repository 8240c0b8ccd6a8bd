"""prepare: ESC-50 / own recordings -> data/ (16 kHz mono float32 clips + fold JSONs).

Mostly tiny synthetic fixtures written to tmp_path (fast, no network); one test runs
the default prepare over the real shared assets and skips when they are absent.
"""

from __future__ import annotations

import io
import json
import logging
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
soxr = pytest.importorskip("soxr")

from edge.params import DEFAULT_PARAMS  # noqa: E402
from train import assets as assets_module  # noqa: E402
from train.assets import AssetError, Esc50Catalog, find_esc50, is_esc50_dir  # noqa: E402
from train.datasets import (  # noqa: E402
    DatasetError,
    assign_folds,
    clip_group,
    ensure_test_fold,
    load_dataset,
    source_and_fold,
    validate_label,
)
from train.prepare import DEFAULT_CLASSES, ESC10_TASK_CLASSES, prepare_dataset, to_model_waveform  # noqa: E402

RATE_HZ = DEFAULT_PARAMS.sample_rate_hz
ORIGINAL_RATE_HZ = 44100
CLIP_SECONDS = 1.0
ENTRY_KEYS = {"fileName", "className", "classNumber", "fold", "source"}

# category -> (ESC-50 target, ESC-10?, where the fixture stores its clips: "audio", "esc10-16k" or None)
FAKE_CATEGORIES = {
    "dog": (0, True, "esc10-16k"),
    "rain": (10, True, "esc10-16k"),
    "chirping_birds": (14, False, None),
    "water_drops": (15, False, "audio"),
    "toilet_flush": (18, False, "audio"),
    "crying_baby": (20, True, "audio"),
    "clock_alarm": (37, False, "audio"),
}


def _tone(seconds: float, rate_hz: int, *, seed: int, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = round(seconds * rate_hz)
    t = np.arange(frames) / rate_hz
    mono = amplitude * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.01 * rng.standard_normal(frames)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1).astype(np.float32)


def make_esc50(
    root: Path, *, clips_per_fold: int = 1, skip_folds: dict[str, set[int]] | None = None, complete: bool = False
) -> Path:
    """A miniature ESC-50 folder: meta/esc50.csv, audio/ at 44.1 kHz, esc10-16k/ FLAC at 16 kHz.

    Like the shared assets it lacks the clips of some classes (chirping_birds), unless `complete`.
    """
    skip_folds = skip_folds or {}
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "esc10-16k").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    seed = 0
    for category, (target, esc10, folder) in FAKE_CATEGORIES.items():
        folder = folder or ("audio" if complete else None)
        for fold in range(1, 6):
            source = 1000 * (target + 1) + fold
            for take in "ABCDEFGH"[:clips_per_fold]:
                name = f"{fold}-{source}-{take}-{target}"
                rows.append(f"{name}.wav,{fold},{target},{category},{esc10},{source},{take}")
                seed += 1
                if folder is None or fold in skip_folds.get(category, set()):
                    continue
                if folder == "audio":
                    sf.write(root / "audio" / f"{name}.wav", _tone(CLIP_SECONDS, ORIGINAL_RATE_HZ, seed=seed),
                             ORIGINAL_RATE_HZ, subtype="PCM_16")  # fmt: skip
                else:
                    sf.write(root / "esc10-16k" / f"{name}.flac", _tone(CLIP_SECONDS, RATE_HZ, seed=seed),
                             RATE_HZ, subtype="PCM_16")  # fmt: skip
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def fake_esc50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_esc50(tmp_path_factory.mktemp("assets") / "esc50")


def prepare(esc50: Path, out: Path, **options):
    options.setdefault("classes", None)
    return prepare_dataset(esc50_dir=esc50, out_dir=out, progress=False, **options)


def write_clip(path: Path, *, seconds: float = CLIP_SECONDS, rate_hz: int = RATE_HZ, channels: int = 1,
               subtype: str = "PCM_16", seed: int = 0) -> Path:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seconds, rate_hz, seed=seed, channels=channels), rate_hz, subtype=subtype)
    return path


def make_own_data(root: Path, layout: dict[str, list[str]], *, seed: int = 0, **options) -> Path:
    """own/<label>/<name> for each name, each different; 16 kHz mono 1 s PCM_16 unless options say otherwise."""
    for number, (label, names) in enumerate(layout.items()):
        for index, name in enumerate(names):
            write_clip(root / label / name, seed=seed + 100 * number + index, **options)
    return root


def no_dataset_written(out: Path) -> bool:
    if not out.exists():
        return True
    names = {path.name for path in out.rglob("*")}
    return not names & {"trainData.json", "testData.json", "classes.json"} and not any(
        ".tmp-" in name for name in names
    )


# --- the ESC-50 tasks -----------------------------------------------------------------------


def test_default_prepare_writes_tutorial_schema_with_sources(fake_esc50: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    dataset = prepare(fake_esc50, out)

    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"labels": [*DEFAULT_CLASSES, "other"], "background_label": "other", "task": "default"}
    train = json.loads((out / "trainData.json").read_text())
    test = json.loads((out / "testData.json").read_text())
    for entry in train + test:
        assert set(entry) == ENTRY_KEYS
        assert isinstance(entry["fileName"], str) and entry["fileName"].endswith(".wav")
        assert classes["labels"][entry["classNumber"]] == entry["className"]
        assert isinstance(entry["fold"], int) and isinstance(entry["source"], str) and entry["source"]
        assert (out / "audio" / entry["fileName"]).is_file()
    assert {entry["fold"] for entry in train} == {1, 2, 3, 4}
    assert {entry["fold"] for entry in test} == {5}
    numbers = {entry["className"]: entry["classNumber"] for entry in train}
    assert numbers == {"crying_baby": 0, "clock_alarm": 1, "toilet_flush": 2, "water_drops": 3, "other": 4}
    # other = the ESC-10 clips of non-target classes: dog and rain (crying_baby is a target)
    other_sources = {entry["source"] for entry in train + test if entry["className"] == "other"}
    assert other_sources == {f"esc50:{1000 * (target + 1) + fold}" for target in (0, 10) for fold in range(1, 6)}
    assert dataset.counts()["test"] == {label: 1 for label in DEFAULT_CLASSES} | {"other": 2}
    assert load_dataset(out) == dataset


def test_outputs_are_16k_mono_float32(fake_esc50: Path, tmp_path: Path) -> None:
    dataset = prepare(fake_esc50, tmp_path / "data")
    for entry in dataset.entries:
        info = sf.info(str(dataset.audio_path(entry)))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (RATE_HZ, 1, "FLOAT", "WAV")
        assert info.frames == round(CLIP_SECONDS * RATE_HZ)


def test_full_scale_44k_clip_keeps_its_overshoot_instead_of_clipping(tmp_path: Path) -> None:
    esc50 = make_esc50(tmp_path / "esc50")
    loud = sorted((esc50 / "audio").glob("*-20.wav"))[0]
    frames = round(CLIP_SECONDS * ORIGINAL_RATE_HZ)
    square = np.where(np.sin(2 * np.pi * 997 * np.arange(frames) / ORIGINAL_RATE_HZ) >= 0, 32767, -32768)
    sf.write(loud, square.astype(np.int16), ORIGINAL_RATE_HZ, subtype="PCM_16")

    dataset = prepare(esc50, tmp_path / "data", background=None)

    written, rate_hz = sf.read(dataset.audio_dir / loud.name, dtype="float32")
    assert rate_hz == RATE_HZ
    source, _ = sf.read(loud, dtype="float32")
    expected = soxr.resample(source, ORIGINAL_RATE_HZ, RATE_HZ, quality="VHQ")
    assert np.abs(written).max() > 1.0  # band-limited full-scale square overshoots; float keeps it
    np.testing.assert_allclose(written, expected, atol=1e-6)


def test_to_model_waveform_mixes_channels_in_float_without_clipping() -> None:
    stereo = np.stack([np.full(1000, 1.0), np.full(1000, 0.6)], axis=1).astype(np.float32)
    mono = to_model_waveform(stereo, RATE_HZ)
    assert mono.dtype == np.float32 and mono.shape == (1000,)
    np.testing.assert_allclose(mono, 0.8, rtol=1e-6)


def test_background_never_holds_a_target_class(fake_esc50: Path, tmp_path: Path) -> None:
    dataset = prepare(fake_esc50, tmp_path / "data", classes=["dog", "crying_baby"])
    assert dataset.labels == ("dog", "crying_baby", "other")
    other = {entry.file_name for entry in dataset.entries if entry.class_name == "other"}
    assert other and all(name.endswith("-10.wav") for name in other)  # rain only, never dog's -0 clips


def test_esc50_background_takes_every_other_class_of_a_full_copy(tmp_path: Path) -> None:
    esc50 = make_esc50(tmp_path / "esc50", complete=True)
    dataset = prepare(esc50, tmp_path / "data", background="esc50")
    assert dataset.labels == ("crying_baby", "clock_alarm", "toilet_flush", "water_drops", "other")
    other_targets = {entry.file_name.rsplit("-", 1)[1] for entry in dataset.entries if entry.class_name == "other"}
    assert other_targets == {"0.wav", "10.wav", "14.wav"}  # dog, rain (ESC-10) and chirping_birds (not ESC-10)


def test_esc50_background_on_a_partial_copy_says_to_fetch_the_full_one(fake_esc50: Path, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"background 'esc50' needs every clip.*lacks 5 of their 15 clips.*chirping_birds.*--background esc10"):
        prepare(fake_esc50, tmp_path / "data", background="esc50")
    assert no_dataset_written(tmp_path / "data")


def test_esc10_style_task_without_background(fake_esc50: Path, tmp_path: Path) -> None:
    dataset = prepare(fake_esc50, tmp_path / "data", classes=["rain", "dog"], background=None)
    assert dataset.labels == ("rain", "dog") and dataset.background_label is None
    assert json.loads((tmp_path / "data" / "classes.json").read_text())["background_label"] is None
    assert len(dataset.train) == 8 and len(dataset.test) == 2


def test_unknown_class_lists_the_valid_names(fake_esc50: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ESC-50 class.*'dogs'.*valid names: .*chirping_birds"):
        prepare(fake_esc50, tmp_path / "data", classes=["dogs"])
    assert no_dataset_written(tmp_path / "data")


def test_class_missing_from_the_local_copy_names_the_class(fake_esc50: Path, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"'chirping_birds' \(5 of 5 clips missing, e.g. 1-15001-A-14.wav\)"):
        prepare(fake_esc50, tmp_path / "data", classes=["chirping_birds", "dog"])
    assert no_dataset_written(tmp_path / "data")


def test_missing_asset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"ESC-50 folder .*nowhere does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "data")
    (tmp_path / "half").mkdir()
    with pytest.raises(AssetError, match=r"meta/esc50.csv not found"):
        prepare(tmp_path / "half", tmp_path / "data")


def test_class_without_test_fold_clips_is_an_error(tmp_path: Path) -> None:
    esc50 = make_esc50(tmp_path / "esc50")
    # a csv that has no fold-5 rows for water_drops
    csv_path = esc50 / "meta" / "esc50.csv"
    lines = [line for line in csv_path.read_text().splitlines() if not line.startswith("5-16005-")]
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="class 'water_drops' has no clips in the test fold 5"):
        prepare(esc50, tmp_path / "data")
    assert no_dataset_written(tmp_path / "data")


def test_other_cannot_be_a_target_with_a_background(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", {"other": ["a_1.wav", "b_1.wav"], "knock": ["a_1.wav", "b_1.wav"]})
    with pytest.raises(DatasetError, match="'other' is also the background label"):
        prepare_dataset(classes=None, own_data_dir=own, background=tmp_path / "own" / "knock",
                        out_dir=tmp_path / "data", progress=False)  # fmt: skip


ONE_LABEL = r"1 label\(s\) \(crying_baby\).*at least 2.*--background esc10.*--classes"


def test_one_esc50_class_without_a_background_is_refused_before_esc50_is_looked_for(tmp_path: Path) -> None:
    """fit would only say "a head needs at least 2 labels" after embedding every clip."""
    with pytest.raises(DatasetError, match=ONE_LABEL):  # the ESC-50 folder does not even exist
        prepare(tmp_path / "no-esc50", tmp_path / "data", classes=["crying_baby"], background=None)
    assert no_dataset_written(tmp_path / "data")


def test_one_own_label_folder_without_a_background_is_refused(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", {"crying_baby": ["a_01.wav", "b_01.wav", "c_01.wav"]})
    with pytest.raises(DatasetError, match=ONE_LABEL):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data")
    # with a background class the same folder is a task of two labels
    background = make_own_data(tmp_path / "noise", {"hum": ["x_01.wav", "y_01.wav", "z_01.wav"]}, seed=50) / "hum"
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=background, out_dir=tmp_path / "data",
                              progress=False)  # fmt: skip
    assert dataset.labels == ("crying_baby", "other")


# --- skipping work, atomic writes ---------------------------------------------------------------


def test_rerun_skips_unchanged_clips_and_redoes_changed_ones(tmp_path: Path) -> None:
    esc50 = make_esc50(tmp_path / "esc50")
    out = tmp_path / "data"
    first = prepare(esc50, out, background=None)
    assert first.report is not None and first.report.written == len(first.entries) == 20
    stamps = {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}

    second = prepare(esc50, out, background=None)
    assert second.report is not None and (second.report.written, second.report.skipped) == (0, 20)
    assert {path.name: path.stat().st_mtime_ns for path in (out / "audio").iterdir()} == stamps

    changed = sorted((esc50 / "audio").glob("*.wav"))[3]
    sf.write(changed, _tone(CLIP_SECONDS, ORIGINAL_RATE_HZ, seed=999), ORIGINAL_RATE_HZ, subtype="PCM_16")
    third = prepare(esc50, out, background=None)
    assert third.report is not None and (third.report.written, third.report.skipped) == (1, 19)

    # a smaller task removes the outputs the old one no longer needs
    fourth = prepare(esc50, out, classes=["dog", "rain"], background=None)
    assert fourth.report is not None and fourth.report.removed == 20
    assert sorted(path.name for path in (out / "audio").iterdir()) == sorted(e.file_name for e in fourth.entries)


def test_interrupted_prepare_leaves_no_half_written_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    esc50 = make_esc50(tmp_path / "esc50")
    out = tmp_path / "data"
    prepare(esc50, out, background=None)  # an older, complete data set
    calls = {"n": 0}
    import train.prepare as prepare_module

    real_write = prepare_module.write_float_wav_atomic

    def write_then_die(path: Path, waveform: np.ndarray, *, rate_hz: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        real_write(path, waveform, rate_hz=rate_hz)

    monkeypatch.setattr(prepare_module, "write_float_wav_atomic", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(esc50, out, classes=["dog", "rain"], background=None)
    assert no_dataset_written(out)
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    with pytest.raises(DatasetError, match="run `oido-train prepare`"):
        load_dataset(out)

    monkeypatch.setattr(prepare_module, "write_float_wav_atomic", real_write)
    dataset = prepare(esc50, out, classes=["dog", "rain"], background=None)
    assert load_dataset(out) == dataset


def test_progress_bar_is_quiet_in_a_pipe(fake_esc50: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_dataset(classes=["dog", "rain"], esc50_dir=fake_esc50, out_dir=tmp_path / "data", background=None, progress=True)
    assert capsys.readouterr().err == ""


# --- own recordings -------------------------------------------------------------------------


def test_silent_own_clips_are_named_in_a_warning_and_audible_ones_are_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["kitchen.wav", "hall.wav", "porch.wav", "desk.wav", "garden.wav", "attic.wav", "cellar.wav"]
    own = make_own_data(tmp_path / "own", {"kettle": names, "door": names}, subtype="FLOAT")
    sf.write(own / "kettle" / "hall.wav", np.full(RATE_HZ, 1e-5, np.float32), RATE_HZ, subtype="FLOAT")  # -100 dBFS
    sf.write(own / "door" / "desk.wav", np.zeros(RATE_HZ, np.float32), RATE_HZ, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="train.prepare"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(f"{own / 'kettle' / 'hall.wav'} is silent (peak -100.0 dBFS" in message for message in warnings)
    assert any(f"{own / 'door' / 'desk.wav'} is digital silence" in message for message in warnings)
    assert len([message for message in warnings if "silen" in message]) == 2  # the audible clips pass


def test_own_data_with_mixed_rates_channels_and_bit_depths(tmp_path: Path) -> None:
    own = tmp_path / "own"
    formats = [  # (file, rate, channels, subtype)
        ("kitchen__a.wav", 8000, 1, "PCM_U8"),
        ("kitchen__b.flac", 22050, 2, "PCM_24"),
        ("hall_01.wav", 48000, 4, "FLOAT"),
        ("hall_02.wav", 44100, 2, "PCM_32"),
        ("porch-1.flac", 32000, 1, "PCM_16"),
        ("desk.wav", 16000, 2, "DOUBLE"),
        ("garden.wav", 11025, 1, "PCM_16"),
    ]
    for label in ("tür_klopfen", "kettle"):
        for index, (name, rate_hz, channels, subtype) in enumerate(formats):
            write_clip(own / label / name, rate_hz=rate_hz, channels=channels, subtype=subtype,
                       seed=index + 50 * len(label))  # fmt: skip

    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                              progress=False)  # fmt: skip

    assert dataset.labels == ("kettle", "tür_klopfen") and dataset.task == "own"
    assert len(dataset.entries) == 2 * len(formats)
    for entry in dataset.entries:
        info = sf.info(str(dataset.audio_path(entry)))
        assert (info.samplerate, info.channels, info.subtype) == (RATE_HZ, 1, "FLOAT")
        assert info.frames == round(CLIP_SECONDS * RATE_HZ)
    assert {label: n > 0 for label, n in dataset.counts()["test"].items()} == {"kettle": True, "tür_klopfen": True}
    assert load_dataset(tmp_path / "data") == dataset


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("1-100032-A-0", ("100032", 1)),
        ("3-5000-B-41", ("5000", 3)),
        ("kitchen__take3", ("kitchen", None)),
        ("kitchen__2024_01", ("kitchen", None)),
        ("hall_01", ("hall", None)),
        ("hall-12", ("hall", None)),
        ("a_1_2", ("a_1", None)),
        ("door", ("door", None)),
        ("2024", ("2024", None)),
        ("__x", ("__x", None)),
    ],
)
def test_source_recording_is_read_from_the_file_name(stem: str, expected: tuple[str, int | None]) -> None:
    assert source_and_fold(stem) == expected


def test_fold_assignment_keeps_each_source_together_and_is_stable(tmp_path: Path) -> None:
    layout = {
        "knock": [f"{source}__{take}.wav" for source in ("door", "desk", "wall", "table", "floor", "box")
                  for take in range(3)] + ["1-777-A-0.wav", "1-777-B-0.wav"],
        "clap": [f"session{n}_{take:02d}.wav" for n in range(6) for take in range(2)],
    }  # fmt: skip
    own = make_own_data(tmp_path / "own", layout)
    first = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "a", progress=False)
    second = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "b", progress=False)

    fold_of_source: dict[str, set[int]] = {}
    for entry in first.entries:
        fold_of_source.setdefault(entry.source, set()).add(entry.fold)
    assert all(len(folds) == 1 for folds in fold_of_source.values()), fold_of_source
    assert set(fold_of_source) == {"door", "desk", "wall", "table", "floor", "box", "777"} | {
        f"session{n}" for n in range(6)
    }
    assert fold_of_source["777"] == {1}  # an ESC-50 style name keeps its fold
    assert [(e.file_name, e.fold) for e in first.entries] == [(e.file_name, e.fold) for e in second.entries]


def test_assign_folds_balances_groups_per_class() -> None:
    clips = [("a", f"a{n}") for n in range(10)] + [("b", f"b{n}") for n in range(5) for _ in range(2)]
    folds = assign_folds(clips)
    per_fold_a = np.bincount([folds[f"a{n}"] for n in range(10)], minlength=6)[1:]
    per_fold_b = np.bincount([folds[f"b{n}"] for n in range(5)], minlength=6)[1:]
    assert per_fold_a.tolist() == [2, 2, 2, 2, 2] and per_fold_b.tolist() == [1, 1, 1, 1, 1]
    assert assign_folds(list(reversed(clips))) == folds


def test_own_background_folder_becomes_other(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", {"knock": [f"s{n}__x.wav" for n in range(5)]})
    background = make_own_data(tmp_path / "bg", {"room": [f"tv_{n:02d}.wav" for n in range(2)] + ["fan__1.wav"]},
                                seed=1000)
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=background / "room",
                              out_dir=tmp_path / "data", progress=False)  # fmt: skip
    assert dataset.labels == ("knock", "other") and dataset.background_label == "other"
    assert {e.source for e in dataset.entries if e.class_name == "other"} == {"tv", "fan"}


@pytest.mark.parametrize(
    ("stem", "folder", "expected"),
    [
        ("0000", "kettle", ("kettle/0000", None)),  # `oido-edge record` before sessions
        ("office", "door", ("door/office", None)),
        ("20240501-143012_0003", "kettle", ("20240501-143012", None)),  # `oido-edge record --dataset`
        ("kitchen__take1", "door", ("kitchen", None)),  # a named group stays shared across folders
        ("hall_01", "other", ("hall", None)),
        ("1-100032-A-0", "kettle", ("100032", 1)),
    ],
)
def test_a_clip_whose_name_names_no_group_is_a_group_of_one_in_its_own_folder(
    stem: str, folder: str, expected: tuple[str, int | None]
) -> None:
    assert clip_group(stem, folder=folder) == expected


def _sources_by_class(dataset) -> dict[str, set[str]]:
    classes_of: dict[str, set[str]] = {}
    for entry in dataset.entries:
        classes_of.setdefault(entry.source, set()).add(entry.class_name)
    return classes_of


def test_numbered_recordings_of_different_labels_and_the_background_are_never_one_group(tmp_path: Path) -> None:
    numbered = [f"{n:04d}.wav" for n in range(5)]  # what `oido-edge record --dataset` wrote before sessions
    own = make_own_data(tmp_path / "own", {"kettle": numbered, "door": numbered})
    background = make_own_data(tmp_path / "bg", {"other": numbered}, seed=1000)
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=background / "other",
                              out_dir=tmp_path / "data", progress=False)  # fmt: skip
    assert all(len(classes) == 1 for classes in _sources_by_class(dataset).values()), _sources_by_class(dataset)
    assert len({entry.source for entry in dataset.entries}) == 15


class _SeededMicrophone:
    """sounddevice faked as in test_edge_cli.py: one 48 kHz input whose stream delivers fresh noise per run."""

    def __init__(self, seed: int, *, seconds: float) -> None:
        self.audio = np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * 48000)).astype(np.float32)
        self.default = type("Default", (), {"device": [0, 0]})()

    def query_devices(self) -> list[dict[str, object]]:
        return [{"name": "Fake USB Mic", "max_input_channels": 1, "default_samplerate": 48000.0, "hostapi": 0}]

    def query_hostapis(self) -> list[dict[str, str]]:
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs: object) -> None:
        pass

    def InputStream(self, *, blocksize: int, callback, **kwargs: object):  # noqa: N802 - sounddevice's name
        audio = self.audio

        class Stream:
            def start(self) -> None:
                for start in range(0, len(audio), blocksize):
                    block = audio[start : start + blocksize]
                    callback(block[:, None], len(block), None, None)

            def stop(self) -> None:
                pass

            def close(self) -> None:
                pass

        return Stream()


def test_recorded_sessions_keep_their_takes_in_one_fold_and_labels_never_share_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.sources
    from edge import cli

    own = tmp_path / "mydata"
    make_own_data(own, {"kettle": ["0000.wav"], "door": ["0000.wav"]}, seed=500)  # from an older release
    seeds = iter(range(10))
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: _SeededMicrophone(next(seeds), seconds=4))
    for label in ("kettle", "door", "kettle", "door"):  # two sessions per label, three takes each
        argv = ["record", "--dataset", str(own), "--label", label, "--seconds", "1", "--count", "3"]
        assert cli.main(argv) == cli.EXIT_OK

    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                              progress=False)  # fmt: skip

    sessions: dict[str, list] = {}
    for entry in dataset.entries:
        stem = entry.file_name.split("__", 1)[1].removesuffix(".wav")
        if stem != "0000":
            sessions.setdefault(stem.rsplit("_", 1)[0], []).append(entry)
    assert sorted(len(takes) for takes in sessions.values()) == [3, 3, 3, 3]
    for session, takes in sessions.items():
        assert {entry.source for entry in takes} == {session} and len({entry.fold for entry in takes}) == 1
    assert all(len(classes) == 1 for classes in _sources_by_class(dataset).values()), _sources_by_class(dataset)
    assert len({entry.source for entry in dataset.entries}) == 6  # four sessions + two old clips
    assert {label: n > 0 for label, n in dataset.counts()["test"].items()} == {"door": True, "kettle": True}


# The reviewer's layout: four door and four kettle sessions; a fifth door session added later.
SESSIONS = {
    "door": {"20240501-180954": 2, "20240502-113734": 2, "20240503-189238": 2, "20240504-102500": 3},
    "kettle": {"20240505-104798": 5, "20240506-107070": 3, "20240507-185761": 6, "20240508-143416": 3},
}
LATER_SESSION = ("door", "20240509-120000", 5)


def _sessions(sessions: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    layout: dict[str, list[str]] = {}
    for label, counts in sessions.items():
        takes = iter(range(100))
        layout[label] = [f"{session}_{next(takes):04d}.wav" for session, count in counts.items() for _ in range(count)]
    return layout


def _folds_by_source(own: Path, out: Path) -> dict[str, int]:
    """Prepare `own` into `out`; {source: fold} of every clip."""
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=out, progress=False)
    return {entry.source: entry.fold for entry in dataset.entries}


def _add_later_session(own: Path) -> None:
    label, session, count = LATER_SESSION
    for take in range(count):
        write_clip(own / label / f"{session}_{20 + take:04d}.wav", seed=900 + take)


def test_re_preparing_after_a_new_session_keeps_every_earlier_group_in_its_fold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = make_own_data(tmp_path / "own", _sessions(SESSIONS))
    out = tmp_path / "data"
    before = _folds_by_source(own, out)
    _add_later_session(own)
    with caplog.at_level(logging.INFO, logger="train.prepare"):
        after = _folds_by_source(own, out)
    assert {source: after[source] for source in before} == before
    assert LATER_SESSION[1] in after
    assert "kept the folds of 8 source group(s) from the previous prepare; placed 1 new group(s)" in caplog.text
    # A fresh folder places every group anew, and here that moves a trained-on session into the test fold.
    fresh = _folds_by_source(own, tmp_path / "fresh")
    assert any(fresh[source] == 5 != fold for source, fold in before.items())


def test_folds_are_kept_even_after_a_run_that_stopped_with_the_fold_files_removed(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", _sessions(SESSIONS))
    out = tmp_path / "data"
    before = _folds_by_source(own, out)
    _add_later_session(own)
    whole = write_clip(tmp_path / "whole.flac", seconds=5.0, seed=7).read_bytes()
    cut = own / "kettle" / "cut__1.flac"
    cut.write_bytes(whole[: len(whole) // 2])  # found only while converting, after the JSONs are gone
    with pytest.raises(DatasetError, match="cut__1.flac is not readable audio"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=out, progress=False)
    assert no_dataset_written(out)
    cut.unlink()
    after = _folds_by_source(own, out)
    assert {source: after[source] for source in before} == before


def test_esc50_folds_are_never_taken_from_an_earlier_prepare(fake_esc50: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    esc50_folds = {entry.file_name: entry.fold for entry in prepare(fake_esc50, out).entries}
    (out / "trainData.json").write_text(json.dumps([
        {"fileName": name, "className": "dog", "classNumber": 0, "fold": 1 + fold % 5, "source": source}
        for name, fold, source in ((e.file_name, e.fold, e.source) for e in load_dataset(out).entries)
    ]))  # fmt: skip
    assert {entry.file_name: entry.fold for entry in prepare(fake_esc50, out).entries} == esc50_folds
    assert all(int(name.split("-")[0]) == fold for name, fold in esc50_folds.items())


def test_a_session_filed_under_two_labels_goes_to_test_only_if_both_keep_training_clips(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", {
        "door": ["kitchen__d.wav"] + [f"hall_{n:02d}.wav" for n in range(1, 6)],
        "kettle": ["kitchen__k.wav", "office6_01.wav"],
    })  # fmt: skip
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                              progress=False)  # fmt: skip
    counts = dataset.counts()
    assert all(counts[split][label] > 0 for split in ("train", "test") for label in ("door", "kettle")), counts


def test_only_a_move_that_leaves_every_class_of_the_group_a_training_group_is_made() -> None:
    clips = [("door", "kitchen"), *[("door", "hall")] * 5, ("kettle", "kitchen"), ("kettle", "office6")]
    folds = {"hall": 1, "kitchen": 2, "office6": 5}  # door has no test clips; kitchen is its smallest group
    moved = ensure_test_fold(clips, folds, test_fold=5, movable=folds)
    assert moved == {"hall": 5, "kitchen": 2, "office6": 5}  # kitchen would take kettle's only training group


def test_a_group_an_earlier_prepare_placed_moves_to_test_only_as_a_last_resort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clips = [("door", "old"), ("door", "new"), ("door", "new"), ("door", "big"), ("door", "big"), ("door", "big")]
    folds = {"old": 1, "new": 2, "big": 3}
    assert ensure_test_fold(clips, folds, test_fold=5, movable=folds)["old"] == 5  # the smallest
    with caplog.at_level(logging.WARNING):
        assert ensure_test_fold(clips, folds, test_fold=5, movable=folds, last_resort={"old"})["new"] == 5
        assert caplog.text == ""
        moved = ensure_test_fold(clips, folds, test_fold=5, movable=folds, last_resort=set(folds))
    assert moved["old"] == 5 and "moving source group 'old' from training fold 1" in caplog.text


# --- bad input ------------------------------------------------------------------------------


def _own_two_sources(root: Path, label: str = "knock") -> Path:
    """`label` from two sources (a, b), and a second label, door, so the task has the two labels a head needs."""
    return make_own_data(root, {label: ["a_01.wav", "a_02.wav", "b_01.wav"], "door": ["a_01.wav", "b_01.wav"]})


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is not readable audio"), (b"this is not a wav file at all" * 10, "is not readable audio")],
)
def test_unreadable_file_names_the_file_and_writes_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    own = _own_two_sources(tmp_path / "own")
    (own / "knock" / "broken_01.wav").write_bytes(content)
    with pytest.raises(DatasetError, match=f"broken_01.wav {message}"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data") and not (tmp_path / "data" / "audio").exists()


def test_every_unreadable_file_is_named_in_one_error(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    (own / "knock" / "broken_01.wav").write_bytes(b"not audio")
    (own / "knock" / "broken_02.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="2 input file") as raised:
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    lines = str(raised.value).splitlines()
    assert [line.split()[0].endswith(name) for line, name in zip(lines[1:], ["broken_01.wav", "broken_02.wav"])] == [True, True]
    assert no_dataset_written(tmp_path / "data")


def test_audio_that_does_not_decode_keeps_the_clips_already_converted(tmp_path: Path) -> None:
    """A FLAC cut short reads its header and fails to decode: found only while converting, after
    other clips are done. Those stay recorded, so the rerun after deleting the file converts nothing."""
    own = make_own_data(tmp_path / "own", {"knock": ["a_01.wav", "a_02.wav", "b_01.wav"], "door": ["a_01.wav", "b_01.wav"]})
    whole = write_clip(tmp_path / "whole.flac", seconds=5.0, seed=7).read_bytes()
    cut = own / "knock" / "c_01.flac"
    cut.write_bytes(whole[: len(whole) // 2])
    assert sf.info(cut).frames > 0  # the check step cannot tell
    out = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"c_01.flac is not readable audio") as raised:
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=out, progress=False)
    assert "the 5 other new clip(s) are converted and kept" in str(raised.value)
    assert no_dataset_written(out)
    assert len(json.loads((out / "manifest.json").read_text())["files"]) == 5
    cut.unlink()
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=out, progress=False)
    assert dataset.report is not None and (dataset.report.written, dataset.report.skipped) == (0, 5)


def test_a_wav_cut_short_is_named_before_anything_is_written(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    whole = write_clip(tmp_path / "whole.wav", seconds=5.0, seed=7).read_bytes()
    cut = own / "knock" / "copied_01.wav"
    cut.write_bytes(whole[: len(whole) // 2])
    assert 0 < sf.info(cut).frames < 5 * RATE_HZ  # libsndfile reads the half that is there
    with pytest.raises(DatasetError, match=r"copied_01.wav is cut short: its header promises \d+ more bytes.*copy it"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data")


def test_a_wav_of_unknown_length_streamed_to_a_pipe_is_not_cut_short(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    data = bytearray(write_clip(tmp_path / "whole.wav", seed=7).read_bytes())
    chunk = data.find(b"data")
    data[4:8] = data[chunk + 4 : chunk + 8] = (0xFFFFFFFF).to_bytes(4, "little")  # the writer never knew the length
    (own / "knock" / "piped_01.wav").write_bytes(bytes(data))
    dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                              progress=False)  # fmt: skip
    assert "knock__piped_01.wav" in {entry.file_name for entry in dataset.entries}


def test_files_of_other_types_in_a_class_folder_are_named_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = _own_two_sources(tmp_path / "own")
    (own / "knock" / "song.mp3").write_bytes(b"ID3")
    (own / "knock" / "notes.txt").write_text("recorded on the porch")
    with caplog.at_level(logging.WARNING, logger="train.datasets"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    (warning,) = [record.getMessage() for record in caplog.records if "ignoring" in record.getMessage()]
    assert "ignoring 2 file(s)" in warning and "notes.txt, song.mp3" in warning
    assert ".aif/.aiff/.flac/.ogg/.wav" in warning and "ffmpeg" in warning


def test_a_float_file_holding_integer_scaled_samples_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = _own_two_sources(tmp_path / "own")
    misscaled = own / "knock" / "float_01.wav"
    sf.write(misscaled, 9830 * np.sin(np.arange(RATE_HZ) / 10.0), RATE_HZ, subtype="FLOAT")  # int16 values, as float
    with caplog.at_level(logging.INFO, logger="train.prepare"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert f"{misscaled}: peaks at 9.83e+03" in caplog.text and "mis-scaled" in caplog.text
    assert "after resampling" not in caplog.text  # nothing was resampled
    assert "1 clip(s) peak above full scale as stored in their float source" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="train.prepare"):  # a rerun converts nothing and still says so
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert f"{misscaled}: peaks at 9.83e+03" in caplog.text


def test_audio_file_without_samples_is_an_error(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    sf.write(own / "knock" / "empty_01.wav", np.zeros(0, dtype=np.float32), RATE_HZ, subtype="PCM_16")
    with pytest.raises(DatasetError, match="empty_01.wav holds no audio samples"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data")


def test_clip_shorter_than_a_patch_is_zero_padded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = _own_two_sources(tmp_path / "own")
    write_clip(own / "knock" / "short_01.wav", seconds=0.25, rate_hz=44100)
    with caplog.at_level(logging.WARNING):
        dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                                  progress=False)  # fmt: skip
    assert "short_01.wav is shorter than one patch" in caplog.text and "zero-padded" in caplog.text
    assert dataset.report is not None and dataset.report.padded == ("knock__short_01.wav",)
    written, _ = sf.read(tmp_path / "data" / "audio" / "knock__short_01.wav", dtype="float32")
    assert written.shape == (DEFAULT_PARAMS.patch_samples,)
    assert np.all(written[round(0.25 * RATE_HZ) + 1 :] == 0.0) and np.any(written[:100] != 0.0)


def test_unknown_own_class_is_an_error(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    with pytest.raises(DatasetError, match=r"\['clap'\] have no folder in .*found: door, knock"):
        prepare_dataset(classes=["clap"], own_data_dir=own, background=None, out_dir=tmp_path / "data",
                        progress=False)  # fmt: skip


def test_class_folder_without_clips_is_an_error(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    (own / "clap").mkdir()
    (own / "clap" / "notes.txt").write_text("no audio here")
    with pytest.raises(DatasetError, match="class 'clap' has no clips"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data")


def test_class_from_one_source_recording_cannot_have_test_clips(tmp_path: Path) -> None:
    own = make_own_data(
        tmp_path / "own", {"knock": ["a_01.wav", "b_01.wav"], "clap": ["kitchen__1.wav", "kitchen__2.wav"]}
    )
    with pytest.raises(DatasetError, match="class 'clap' has no clips in the test fold 5.*sources: kitchen"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert no_dataset_written(tmp_path / "data")


def test_own_files_named_with_training_folds_only_have_no_test_clips(tmp_path: Path) -> None:
    own = make_own_data(tmp_path / "own", {"knock": ["1-1-A-0.wav", "2-2-A-0.wav", "3-3-A-0.wav"],
                                           "door": ["a_01.wav", "b_01.wav"]})  # fmt: skip
    with pytest.raises(DatasetError, match="class 'knock' has no clips in the test fold 5"):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "a\\b", "bell\n", " bell"])
def test_bad_label_names_are_rejected(name: str) -> None:
    with pytest.raises(DatasetError, match="label"):
        validate_label(name)


@pytest.mark.parametrize("name", ["tür_klopfen", "狗", "door knock", "a.b"])
def test_unicode_label_names_are_fine(name: str) -> None:
    assert validate_label(name) == name


def test_bad_label_in_the_class_list_is_rejected_before_touching_disk(tmp_path: Path) -> None:
    own = _own_two_sources(tmp_path / "own")
    with pytest.raises(DatasetError, match=r"label '\.\.' from the class list is a relative path"):
        prepare_dataset(classes=[".."], own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)


def test_imbalanced_classes_warn_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = make_own_data(tmp_path / "own", {
        "knock": [f"s{n}_01.wav" for n in range(10)],
        "clap": ["a_01.wav", "b_01.wav", "c_01.wav"],
    })  # fmt: skip
    with caplog.at_level(logging.WARNING):
        prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data", progress=False)
    assert "imbalanced classes" in caplog.text and "clap=3" in caplog.text and "knock=10" in caplog.text


def test_duplicate_files_warn_and_keep_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = _own_two_sources(tmp_path / "own")
    (own / "knock" / "c_01.wav").write_bytes((own / "knock" / "a_01.wav").read_bytes())
    with caplog.at_level(logging.WARNING):
        dataset = prepare_dataset(classes=None, own_data_dir=own, background=None, out_dir=tmp_path / "data",
                                  progress=False)  # fmt: skip
    assert "duplicate audio" in caplog.text and "c_01.wav" in caplog.text
    assert sorted(e.file_name for e in dataset.entries if e.class_name == "knock") == [
        "knock__a_01.wav", "knock__a_02.wav", "knock__b_01.wav"]  # fmt: skip
    assert dataset.report is not None and len(dataset.report.duplicates) == 1


def test_load_dataset_without_prepare_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="classes.json not found: run `oido-train prepare` first"):
        load_dataset(tmp_path / "data")


# --- finding the assets -----------------------------------------------------------------------


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def test_offline_without_esc50_fails_with_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _offline(monkeypatch)
    cache = tmp_path / "cache"
    with pytest.raises(AssetError) as raised:
        find_esc50(env={}, root=tmp_path / "repo", cwd=tmp_path / "repo", cache_dir=cache, progress=False)
    message = str(raised.value)
    assert attempts == [assets_module.ESC50_URL]
    shared = (tmp_path / "shared" / "assets" / "esc50").resolve()
    assert message.startswith(f"ESC-50 not found: put the ESC-50 folder (audio/ + meta/esc50.csv) at {shared} or ")
    assert str(cache / "esc50") in message and "--esc50 PATH or --assets DIR" in message
    assert message.endswith("download failed: <urlopen error [Errno -3] Temporary failure in name resolution>")
    assert "\n" not in message
    assert not (cache / "esc50").exists() and not any(cache.glob(".esc50-download-*"))


def _esc50_skeleton(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n")
    (root / "audio").mkdir()
    return root


def test_search_order_flags_then_env_then_shared_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _offline(monkeypatch)
    explicit = _esc50_skeleton(tmp_path / "explicit" / "esc50")
    from_env = _esc50_skeleton(tmp_path / "env" / "esc50")
    shared = _esc50_skeleton(tmp_path / "shared" / "assets" / "esc50")
    cached = _esc50_skeleton(tmp_path / "cache" / "esc50")
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "elsewhere" / "deep", "cache_dir": tmp_path / "cache"}
    every_variable = {"OIDO_ESC50": str(from_env), "OIDO_ASSETS": str(from_env.parent)}

    assert find_esc50(esc50_dir=explicit, env={"OIDO_ESC50": str(shared)}, **where) == explicit
    assert find_esc50(esc50_dir=explicit, assets_dir=from_env.parent, env={}, **where) == explicit
    # --assets beats both variables: every flag before every environment variable
    assert find_esc50(assets_dir=explicit.parent, env=every_variable, **where) == explicit
    with pytest.raises(AssetError, match=r"\(from --assets\)"):  # a wrong flag is not rescued by a variable
        find_esc50(assets_dir=tmp_path / "elsewhere", env=every_variable, **where)
    assert find_esc50(env={"OIDO_ESC50": str(explicit), "OIDO_ASSETS": str(shared.parent)}, **where) == explicit
    assert find_esc50(env={"OIDO_ASSETS": str(explicit.parent)}, **where) == explicit
    assert find_esc50(env={}, **where) == shared.resolve()  # ../shared/assets beside the repo root
    beside_cwd = where | {"root": tmp_path / "x" / "repo", "cwd": tmp_path / "repo"}
    assert find_esc50(env={}, **beside_cwd) == shared.resolve()
    assert find_esc50(env={}, **(where | {"root": tmp_path / "x" / "repo", "cwd": tmp_path / "x" / "y"})) == cached
    with pytest.raises(AssetError, match=r"ESC-50 not found at .*missing \(from OIDO_ESC50\)"):
        find_esc50(env={"OIDO_ESC50": str(tmp_path / "missing")}, **where)
    assert attempts == []  # a local copy, or an explicit but wrong one, never triggers a download


def test_the_assets_folder_may_hold_esc50_or_be_the_esc50_folder_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _offline(monkeypatch)
    esc50 = _esc50_skeleton(tmp_path / "assets" / "esc50")
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "repo", "cache_dir": tmp_path / "cache"}
    for assets in (esc50.parent, esc50):
        assert find_esc50(assets_dir=assets, env={}, **where) == esc50
        assert find_esc50(env={"OIDO_ASSETS": str(assets)}, **where) == esc50
    assert attempts == []


@pytest.mark.parametrize("origin", ["--assets", "OIDO_ASSETS"])
def test_a_wrong_assets_folder_says_to_point_it_at_the_folder_holding_esc50(tmp_path: Path, origin: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "repo", "cache_dir": tmp_path / "cache"}
    given = {"assets_dir": empty, "env": {}} if origin == "--assets" else {"env": {"OIDO_ASSETS": str(empty)}}
    with pytest.raises(AssetError) as raised:
        find_esc50(**given, **where)
    message = str(raised.value)
    assert f"ESC-50 not found at {empty / 'esc50'} (from {origin})" in message
    assert f"point {origin} at the folder holding esc50/" in message  # not "at the ESC-50 folder": that loops


@pytest.mark.parametrize("given", ["assets folder", "esc50 folder"])
def test_oido_train_prepare_reads_esc50_from_the_assets_option(
    fake_esc50: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    from train.cli import main

    monkeypatch.delenv("OIDO_ESC50", raising=False)
    monkeypatch.setenv("OIDO_ASSETS", str(tmp_path / "not-this-one"))  # the option wins over the variable
    assets = fake_esc50.parent if given == "assets folder" else fake_esc50
    out = tmp_path / "data"
    argv = ["-q", "prepare", "--assets", str(assets), "--classes", "crying_baby,clock_alarm", "--background", "none"]
    assert main([*argv, "--data-dir", str(out)]) == 0
    # The fixture's one clip per fold, not the shared assets' eight.
    assert load_dataset(out).counts()["train"] == {"crying_baby": 4, "clock_alarm": 4}


def test_open_set_background_categories_come_from_the_assets_option(fake_esc50: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from train.openset import esc50_categories

    monkeypatch.delenv("OIDO_ESC50", raising=False)
    monkeypatch.delenv("OIDO_ASSETS", raising=False)
    categories = esc50_categories(assets_dir=fake_esc50.parent)
    assert categories == {target: name for name, (target, _, _) in FAKE_CATEGORIES.items()}


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_extracts_the_archive_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("ESC-50-master/meta/esc50.csv", "filename,fold,target,category,esc10,src_file,take\n")
        zipped.writestr("ESC-50-master/audio/1-1-A-0.wav", b"RIFF")
        zipped.writestr("ESC-50-master/README.md", "not needed")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **_: _FakeResponse(archive.getvalue()))

    found = find_esc50(env={}, root=tmp_path / "repo", cwd=tmp_path / "repo", cache_dir=tmp_path / "cache",
                       progress=False)  # fmt: skip

    assert found == tmp_path / "cache" / "esc50" and is_esc50_dir(found)
    assert (found / "audio" / "1-1-A-0.wav").is_file() and not (found / "README.md").exists()
    assert sorted(os.listdir(tmp_path / "cache")) == ["esc50"]


# --- the real assets --------------------------------------------------------------------------


def test_default_prepare_over_the_real_assets(tmp_path: Path) -> None:
    try:
        esc50 = find_esc50(download=False, progress=False)
    except AssetError:
        pytest.skip("the shared ESC-50 assets are not on this machine")
    catalog = Esc50Catalog(esc50)
    try:
        catalog.present_clips([*DEFAULT_CLASSES, *ESC10_TASK_CLASSES])
    except AssetError:
        pytest.skip(f"{esc50} lacks the default or ESC-10 clips")

    dataset = prepare_dataset(classes=None, esc50_dir=esc50, out_dir=tmp_path / "data", progress=False)

    counts = dataset.counts()
    assert counts["train"] == {label: 32 for label in DEFAULT_CLASSES} | {"other": 9 * 32}
    assert counts["test"] == {label: 8 for label in DEFAULT_CLASSES} | {"other": 9 * 8}
    targets = [entry for entry in dataset.entries if entry.class_name != "other"]
    assert sum(entry.fold != 5 for entry in targets) == 128 and sum(entry.fold == 5 for entry in targets) == 32
    # every clip written (a fresh folder), none reused; its speed is bench material, not a test's
    assert dataset.report is not None and dataset.report.written == 4 * 40 + 9 * 40 and dataset.report.skipped == 0
    assert load_dataset(tmp_path / "data") == dataset
