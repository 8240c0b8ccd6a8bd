"""Extra background (train.extra_background): training-only "other" audio from Debian sound
packages or a folder of recordings.

No network: the Debian download is exercised with a fake `apt-get` that builds a real .deb
with `dpkg-deb --build` (skipped where dpkg-deb is missing); everything else is synthetic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from edge.params import DEFAULT_PARAMS  # noqa: E402
from train import extra_background as extra  # noqa: E402
from train.datasets import FALSE_ALARM_KEY, TRAIN_ONLY_KEY, DatasetEntry, DatasetError, load_dataset  # noqa: E402
from train.extra_background import (  # noqa: E402
    ExtraBackgroundError,
    SfxPackage,
    cached_clips,
    cut_source,
    debian_sfx_clips,
    exclusion_pattern,
    extra_background_clips,
    fetch_package,
    group_sources,
    training_fold,
)

RATE = DEFAULT_PARAMS.sample_rate_hz
TEST_FOLD = 5


def noise(seconds: float, *, seed: int = 0, amplitude: float = 0.1) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


def write(path: Path, seconds: float, *, seed: int = 0, rate_hz: int = RATE, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = noise(seconds * rate_hz / RATE, seed=seed)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate_hz, subtype="PCM_16")
    return path


# --------------------------------------------------------------------------- what is left out


def test_files_named_like_a_target_are_left_out_by_their_name_not_their_folder(tmp_path: Path) -> None:
    pattern = exclusion_pattern(["door_knock", "other"])
    for name in ("water_splash.ogg", "Baby-Cry.wav", "alarm1.wav", "big_knock.flac", "drip.wav"):
        assert pattern.search(name), name
    assert not pattern.search("footstep_wood.ogg")
    # the package frozen-bubble-data is not about bubbles; a file called bubble_pop is
    for relative in ("frozen-bubble/snd/whip.ogg", "frozen-bubble/snd/bubble_pop.ogg", "snd/readme.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    sources = group_sources(tmp_path, name="pkg", group_by_folder=False, exclude=pattern)
    assert sources == {"pkg:frozen-bubble/snd/whip": [tmp_path / "frozen-bubble/snd/whip.ogg"]}


def test_short_words_of_one_language_form_one_source_per_folder(tmp_path: Path) -> None:
    for relative in ("de/eins.wav", "de/zwei.wav", "fr/un.wav"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    sources = group_sources(tmp_path, name="k", group_by_folder=True, exclude=exclusion_pattern([]))
    assert sources == {"k:de": [tmp_path / "de/eins.wav", tmp_path / "de/zwei.wav"], "k:fr": [tmp_path / "fr/un.wav"]}


def test_a_source_gets_a_stable_training_fold_and_never_the_test_fold() -> None:
    folds = Counter(training_fold(f"pkg:file{n}", test_fold=3) for n in range(400))
    assert set(folds) == {1, 2, 4, 5}
    assert min(folds.values()) > 60  # spread over the training folds, not piled into one
    assert training_fold("pkg:a", test_fold=3) == training_fold("pkg:a", test_fold=3)


# --------------------------------------------------------------------------- cutting


def test_a_source_plays_its_files_one_after_another_and_is_cut_into_5_s_clips() -> None:
    clips = cut_source([noise(3.0, seed=1), noise(4.0, seed=2)])  # 3 + 0.3 + 4 + 0.3 = 7.6 s
    assert [len(c) for c in clips] == [5 * RATE, round(2.6 * RATE)]
    first = noise(3.0, seed=1)
    np.testing.assert_array_equal(clips[0][: len(first)], first)
    assert not clips[0][len(first) : len(first) + round(0.3 * RATE)].any()  # the gap is silent
    assert all(c.dtype == np.float32 for c in clips)


def test_short_tails_silence_loud_sources_and_the_clip_limit() -> None:
    assert [len(c) for c in cut_source([noise(5.5)])] == [5 * RATE]  # a 0.8 s tail is dropped
    assert [len(c) for c in cut_source([noise(0.5)])] == []  # 0.8 s in all: nothing
    assert cut_source([np.zeros(10 * RATE, np.float32)]) == []
    assert cut_source([]) == []
    (loud,) = cut_source([noise(4.0, amplitude=2.0)])
    assert np.max(np.abs(loud)) == pytest.approx(1.0)
    assert len(cut_source([noise(60.0)], max_clips=3)) == 3


def test_cut_clips_are_reused_until_a_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [write(tmp_path / "in" / "a.wav", 7.0, rate_hz=44100, channels=2), write(tmp_path / "in" / "b.wav", 2.0, seed=1)]
    sources = {"extra:a": [files[0]], "extra:b": [files[1]]}
    clips = cached_clips(sources, tmp_path / "cache", test_fold=TEST_FOLD)
    assert [c.source for c in clips] == ["extra:a", "extra:a", "extra:b"]
    for clip in clips:
        info = sf.info(clip.path)
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert clip.fold != TEST_FOLD
    calls = []
    real = extra.cut_clips
    monkeypatch.setattr(extra, "cut_clips", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cached_clips(sources, tmp_path / "cache", test_fold=TEST_FOLD) == clips
    assert calls == []
    write(files[1], 6.0, seed=2)  # a changed source is cut again
    again = cached_clips(sources, tmp_path / "cache", test_fold=TEST_FOLD)
    assert calls == [1] and [c.source for c in again] == ["extra:a", "extra:a", "extra:b", "extra:b"]


def test_an_unreadable_file_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write(tmp_path / "good.wav", 3.0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 20)
    clips = cached_clips({"extra:good": [good], "extra:bad": [bad]}, tmp_path / "cache", test_fold=TEST_FOLD)
    assert [c.source for c in clips] == ["extra:good"]
    assert "bad.wav skipped" in caplog.text


def test_a_folder_of_recordings_keeps_every_file_whatever_its_name(tmp_path: Path) -> None:
    write(tmp_path / "room" / "water_heater.wav", 3.0)
    write(tmp_path / "room" / "tv.flac", 12.0, seed=1)
    clips = extra_background_clips(tmp_path / "room", ["water_drops"], test_fold=TEST_FOLD, cache_dir=tmp_path / "cache")
    assert Counter(c.source for c in clips) == {"extra:water_heater": 1, "extra:tv": 3}
    assert extra_background_clips("none", ["water_drops"], test_fold=TEST_FOLD, cache_dir=tmp_path / "cache") == []
    with pytest.raises(ExtraBackgroundError, match="does not exist"):
        extra_background_clips(tmp_path / "nope", ["x"], test_fold=TEST_FOLD, cache_dir=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtraBackgroundError, match="holds no"):
        extra_background_clips(tmp_path / "empty", ["x"], test_fold=TEST_FOLD, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- the Debian packages

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")


class FakeApt:
    """`apt-get download NAME` that builds NAME_1.0_all.deb with dpkg-deb from a folder of files."""

    def __init__(self, tmp_path: Path, files: dict[str, float]) -> None:
        self.root = tmp_path / "fake-apt"
        self.files = files
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], *, cwd: Path, **options) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        assert command[:2] == ["apt-get", "download"]
        package = command[2]
        tree = self.root / package
        (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"
        )
        for seed, (relative, seconds) in enumerate(self.files.items()):
            path = tree / relative
            if path.suffix == ".txt":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("not audio")
            else:
                write(path, seconds, seed=seed, rate_hz=22050)
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(Path(cwd) / f"{package}_1.0_all.deb")],
                       check=True, capture_output=True)  # fmt: skip
        return subprocess.CompletedProcess(command, 0, "", "")


@needs_dpkg
def test_a_package_is_downloaded_once_and_only_its_audio_is_kept(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {"usr/share/games/g/sounds/step.wav": 2.0, "usr/share/doc/g/README.txt": 0})
    folder = fetch_package("g-data", tmp_path / "packages", runner=apt)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".complete", "usr/share/games/g/sounds/step.wav"
    ]  # fmt: skip
    assert json.loads((folder / ".complete").read_text())["audio_files"] == 1
    assert not list((tmp_path / "packages").glob("*.deb")) and not list((tmp_path / "packages").glob(".g-data-*"))
    assert fetch_package("g-data", tmp_path / "packages", runner=apt) == folder
    assert len(apt.calls) == 1


@needs_dpkg
def test_debian_clips_leave_out_target_names_and_the_test_fold(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {"snd/step.wav": 7.0, "snd/water_drip.wav": 3.0, "snd/door.wav": 2.0})
    clips = debian_sfx_clips(["water_drops", "other"], cache_dir=tmp_path / "cache", test_fold=TEST_FOLD,
                             packages=(SfxPackage("g-data", "test sounds"),), runner=apt)  # fmt: skip
    assert Counter(c.source for c in clips) == {"debian-sfx:g-data:snd/step": 2, "debian-sfx:g-data:snd/door": 1}
    assert all(c.fold != TEST_FOLD and c.path.is_file() for c in clips)


def test_missing_or_failing_apt_get_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    def missing(command, **options):
        raise FileNotFoundError(command[0])

    def failing(command, **options):
        return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package g-data\n")

    with pytest.raises(ExtraBackgroundError, match="--extra-background none"):
        fetch_package("g-data", tmp_path / "packages", runner=missing)
    with pytest.raises(ExtraBackgroundError, match="Unable to locate package g-data.*apt-get update"):
        fetch_package("g-data", tmp_path / "packages", runner=failing)
    assert list((tmp_path / "packages").iterdir()) == []


# --------------------------------------------------------------------------- in the data set


def test_train_only_is_written_only_when_true_and_checked_on_load(tmp_path: Path) -> None:
    entry = DatasetEntry("other__x-00001-0.wav", "other", 1, 2, "debian-sfx:p:f", train_only=True)
    document = entry.to_json()
    assert document[TRAIN_ONLY_KEY] is True
    assert DatasetEntry.from_json(document, where=tmp_path) == entry
    plain = DatasetEntry("a.wav", "other", 1, 2, "a")
    assert TRAIN_ONLY_KEY not in plain.to_json()
    with pytest.raises(DatasetError, match="trainOnly"):
        DatasetEntry.from_json({**document, TRAIN_ONLY_KEY: "yes"}, where=tmp_path)


def test_prepare_adds_the_extra_background_to_the_training_folds_only(tmp_path: Path) -> None:
    from test_train_prepare import make_esc50  # the miniature ESC-50 of the prepare tests

    from train.prepare import prepare_dataset

    esc50 = make_esc50(tmp_path / "esc50")
    write(tmp_path / "room" / "tv.wav", 12.0)
    write(tmp_path / "room" / "fan.wav", 4.0, seed=1)
    out = tmp_path / "data"
    prepare_dataset(classes=None, esc50_dir=esc50, out_dir=out, progress=False, extra_background=tmp_path / "room", cache_dir=tmp_path / "cache")
    dataset = load_dataset(out)
    extras = [e for e in dataset.entries if e.train_only]
    assert len(extras) == 4 and {e.class_name for e in extras} == {"other"}
    assert all(e.fold != dataset.test_fold and (out / "audio" / e.file_name).is_file() for e in extras)
    assert {e.source for e in extras} == {"extra:tv", "extra:fan"}
    test_data = json.loads((out / "testData.json").read_text())
    assert not any(TRAIN_ONLY_KEY in item for item in test_data)
    assert sum(TRAIN_ONLY_KEY in item for item in json.loads((out / "trainData.json").read_text())) == 4
    # a test fold holding them is refused
    (out / "testData.json").write_text(json.dumps(test_data + [extras[0].to_json() | {"fold": 5}]))
    with pytest.raises(DatasetError, match="training-only"):
        load_dataset(out)
    # no background class: nothing to add them to
    none = prepare_dataset(classes=None, esc50_dir=esc50, out_dir=tmp_path / "bare", progress=False, background=None,
                           extra_background=tmp_path / "room", cache_dir=tmp_path / "cache")  # fmt: skip
    assert not any(e.train_only for e in none.entries)


def test_a_false_alarm_is_written_as_training_only_too_and_checked_on_load(tmp_path: Path) -> None:
    entry = DatasetEntry("other__false-alarm-000-0.wav", "other", 1, 2, "false-alarm:000", train_only=True, false_alarm=True)
    document = entry.to_json()
    assert document[TRAIN_ONLY_KEY] is True and document[FALSE_ALARM_KEY] is True
    assert DatasetEntry.from_json(document, where=tmp_path) == entry
    assert FALSE_ALARM_KEY not in DatasetEntry("a.wav", "other", 1, 2, "a", train_only=True).to_json()
    with pytest.raises(DatasetError, match="false alarm without 'trainOnly'"):
        DatasetEntry.from_json({**document, TRAIN_ONLY_KEY: False}, where=tmp_path)
    with pytest.raises(DatasetError, match="falseAlarm"):
        DatasetEntry.from_json({**document, FALSE_ALARM_KEY: 1}, where=tmp_path)


def test_prepare_adds_the_false_alarms_beside_the_extra_background_as_their_own_sources(tmp_path: Path) -> None:
    from test_train_prepare import make_esc50

    from train.prepare import prepare_dataset

    esc50 = make_esc50(tmp_path / "esc50")
    write(tmp_path / "room" / "tv.wav", 6.0)
    write(tmp_path / "heard" / "tv.wav", 3.0, seed=2)  # the same name in both folders: two sources
    write(tmp_path / "heard" / "001-water_drops.wav", 2.0, seed=3)  # named like a target, and still kept
    out = tmp_path / "data"
    prepare_dataset(classes=None, esc50_dir=esc50, out_dir=out, progress=False, extra_background=tmp_path / "room",
                    false_alarms=tmp_path / "heard", cache_dir=tmp_path / "cache")  # fmt: skip
    dataset = load_dataset(out)
    alarms = [e for e in dataset.entries if e.false_alarm]
    assert sorted(e.source for e in alarms) == ["false-alarm:001-water_drops", "false-alarm:tv"]
    assert all(e.train_only and e.class_name == "other" and e.fold != dataset.test_fold for e in alarms)
    assert all(e.file_name.startswith("other__false-alarm-") and (out / "audio" / e.file_name).is_file() for e in alarms)
    assert {e.source for e in dataset.entries if e.train_only and not e.false_alarm} == {"extra:tv"}
    with pytest.raises(ValueError, match="--false-alarms.*--background none"):
        prepare_dataset(classes=None, esc50_dir=esc50, out_dir=tmp_path / "bare", progress=False, background=None,
                        false_alarms=tmp_path / "heard", cache_dir=tmp_path / "cache")  # fmt: skip
    with pytest.raises(DatasetError, match="does not exist: copy the false alarms"):
        prepare_dataset(classes=None, esc50_dir=esc50, out_dir=tmp_path / "bad", progress=False,
                        false_alarms=tmp_path / "nope", cache_dir=tmp_path / "cache")  # fmt: skip
    assert not (tmp_path / "bad" / "trainData.json").exists()


@needs_dpkg
def test_everyday_sounds_to_measure_on_come_from_a_named_package_or_a_folder(tmp_path: Path) -> None:
    from train.extra_background import listening_clips

    apt = FakeApt(tmp_path, {"usr/share/words/en/eye.wav": 1.0, "usr/share/words/en/nose.wav": 1.0,
                             "usr/share/words/de/auge.wav": 1.0, "usr/share/words/de/wasser.wav": 1.0})  # fmt: skip
    clips = listening_clips("debian-speech", ["water_drops", "other"], cache_dir=tmp_path / "cache", runner=apt)
    assert apt.calls == [["apt-get", "download", "ktuberling-data"]]
    # one source per language folder (words played one after another); 'wasser' is not left out
    # by name (a German word), 'water' would be
    assert Counter(c.source.rsplit(":", 1)[1] for c in clips) == {"usr/share/words/en": 1, "usr/share/words/de": 1}
    assert listening_clips("debian-speech", ["water_drops"], cache_dir=tmp_path / "cache", runner=apt) == clips
    write(tmp_path / "living-room" / "tv.wav", 12.0)
    mine = listening_clips(tmp_path / "living-room", ["water_drops"], cache_dir=tmp_path / "cache")
    assert len(mine) == 3 and all(c.path.is_file() for c in mine)
    with pytest.raises(ExtraBackgroundError, match="not debian-speech or debian-music and not a folder"):
        listening_clips(tmp_path / "nope", ["x"], cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- episodes of saved events


def test_saved_event_clips_minutes_apart_are_one_episode_and_other_files_their_own_source() -> None:
    from train.extra_background import EPISODE_GAP_SECONDS, episode_sources

    assert EPISODE_GAP_SECONDS == 600.0
    names = {
        "extra:a": "oido-20250102T030410512-water_drops.wav",
        "extra:b": "oido-20250102T031000000-water_drops.wav",  # 5.8 min after a
        "extra:c": "oido-20250102T031900000-clock_alarm.wav",  # 9 min after b: chained, 14.8 min after a
        "extra:d": "oido-20250102T050000000-water_drops.wav",  # 1 h 41 min later: a new episode
        "extra:tv": "tv.wav",
        "extra:bad": "oido-20251302T000000000-water_drops.wav",  # month 13: not a clip time
    }
    sources = {source: [Path("/heard") / name] for source, name in names.items()}
    filed = episode_sources(sources)
    assert filed["extra:a"] == filed["extra:b"] == filed["extra:c"] == "extra:episode-20250102T030410512"
    assert filed["extra:d"] == "extra:episode-20250102T050000000"
    assert filed["extra:tv"] == "extra:tv" and filed["extra:bad"] == "extra:bad"
    assert episode_sources(sources, gap_seconds=300.0)["extra:b"] == "extra:episode-20250102T031000000"


def test_prepare_files_one_episode_of_false_alarms_under_one_source_and_fold(tmp_path: Path) -> None:
    from test_train_prepare import make_esc50

    from train.prepare import prepare_dataset

    esc50 = make_esc50(tmp_path / "esc50")
    heard = tmp_path / "heard"
    for minute, seed in ((10, 1), (15, 2), (22, 3), (29, 4)):  # one evening's fridge, minutes apart
        write(heard / f"oido-20250102T21{minute:02d}00000-water_drops.wav", 3.0, seed=seed)
    write(heard / "oido-20250103T090000000-water_drops.wav", 3.0, seed=5)  # next morning
    out = tmp_path / "data"
    prepare_dataset(classes=None, esc50_dir=esc50, out_dir=out, progress=False, false_alarms=heard,
                    cache_dir=tmp_path / "cache")  # fmt: skip
    alarms = [e for e in load_dataset(out).entries if e.false_alarm]
    assert len(alarms) == 5
    by_source: dict[str, set[int]] = {}
    for entry in alarms:
        by_source.setdefault(entry.source, set()).add(entry.fold)
    assert sorted(by_source) == ["false-alarm:episode-20250102T211000000", "false-alarm:episode-20250103T090000000"]
    assert all(len(folds) == 1 for folds in by_source.values())
