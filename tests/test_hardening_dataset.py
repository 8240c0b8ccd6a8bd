"""Hardening: bad input that is not audio — data sets, the edge configuration, exported models.

Already covered elsewhere by honest tests (not repeated here):
- duplicate files within a class warn and keep one: test_train_prepare.py::test_duplicate_files_warn_and_keep_one
- bad label names ("", "..", "a/b", control characters) and unicode ones: test_train_prepare.py::
  test_bad_label_names_are_rejected, test_unicode_label_names_are_fine, test_bad_label_in_the_class_list_...
- imbalanced classes warn with counts: test_train_prepare.py::test_imbalanced_classes_warn_with_counts
- a class missing from the test fold: test_train_prepare.py::test_class_without_test_fold_clips_is_an_error,
  test_class_from_one_source_recording_cannot_have_test_clips
- each config mistake raises ConfigError with file:line: test_edge_config.py (unknown key, pin twice, bad pin,
  threshold outside (0, 1], class not in the model)
- manifest disagreements and corrupt .tflite files: test_edge_manifest.py

Here: the same mistakes end to end (prepare over real folders; `oido-edge listen` refusing before the
microphone opens), and property tests that no configuration or manifest can get past the checks and
then crash, or be refused without the line / file that is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge import cli  # noqa: E402
from edge.config import BCM_PINS, MAX_BLOCK_SECONDS, MAX_EVENT_AUDIO_SECONDS, parse_config  # noqa: E402
from edge.errors import ConfigError, ManifestError, ModelError, OidoError  # noqa: E402
from edge.manifest import load_manifest  # noqa: E402
from edge.record import label_problem  # noqa: E402
from train import datasets, evaluate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import ASSET_YAMNET, TINY_HEAD, fake_model_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = 16000


# --- data sets ---------------------------------------------------------------------------------

sf = pytest.importorskip("soundfile")


def clip(path: Path, *, seed: int, seconds: float = 1.0, rate_hz: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    sf.write(path, (0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)).astype(np.float32), rate_hz,
             subtype="PCM_16")
    return path


def own_data(root: Path, layout: dict[str, list[str]]) -> Path:
    for number, (label, names) in enumerate(layout.items()):
        for index, name in enumerate(names):
            clip(root / label / name, seed=100 * number + index)
    return root


def prepare(own: Path, out: Path, **options: Any):
    pytest.importorskip("soxr")  # train.prepare resamples with it (the train extra)
    from train.prepare import prepare_dataset

    return prepare_dataset(classes=options.pop("classes", None), own_data_dir=own, background=None,
                           out_dir=out, progress=False, **options)


def test_the_same_recording_under_two_labels_is_kept_once_and_the_warning_names_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = own_data(tmp_path / "own", {"knock": ["a_01.wav", "b_01.wav", "c_01.wav"],
                                      "clap": ["d_01.wav", "e_01.wav", "f_01.wav"]})
    (own / "clap" / "g_01.wav").write_bytes((own / "knock" / "a_01.wav").read_bytes())
    with caplog.at_level(logging.WARNING):
        dataset = prepare(own, tmp_path / "data")
    warning = next(r.getMessage() for r in caplog.records if "duplicate audio" in r.getMessage())
    assert "g_01.wav" in warning and "'clap'" in warning and "'knock'" in warning
    assert sum(e.file_name.endswith("g_01.wav") or e.file_name.endswith("a_01.wav") for e in dataset.entries) == 1


def test_unicode_and_spaced_labels_go_through_prepare_and_back(tmp_path: Path) -> None:
    labels = ["tür_klopfen", "狗", "door knock"]
    own = own_data(tmp_path / "own", {label: ["a_01.wav", "b_01.wav", "c_01.wav"] for label in labels})
    dataset = prepare(own, tmp_path / "data", classes=labels)
    again = datasets.load_dataset(tmp_path / "data")
    assert list(again.labels) == labels and again == dataset
    assert all((tmp_path / "data" / "audio" / e.file_name).is_file() for e in again.entries)
    classes = json.loads((tmp_path / "data" / "classes.json").read_text(encoding="utf-8"))
    assert classes["labels"] == labels
    # The edge takes the same labels: a TOML quoted key per LED, and `record --label`.
    config = parse_config('[leds.pins]\n"tür_klopfen" = 17\n"狗" = 27\n"door knock" = 22\n')
    assert dict(config.leds.pins) == {"tür_klopfen": 17, "狗": 27, "door knock": 22}
    assert all(label_problem(label) is None for label in labels)


@pytest.mark.parametrize("label", ["../x", "", " ", "a/b", "x\n", " knock"])
def test_a_label_that_is_not_a_plain_folder_name_is_refused_before_anything_is_written(
    tmp_path: Path, label: str
) -> None:
    own = own_data(tmp_path / "own", {"knock": ["a_01.wav", "b_01.wav", "c_01.wav"]})
    with pytest.raises(datasets.DatasetError, match="label"):
        prepare(own, tmp_path / "data", classes=[label])
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()
    from edge.record import next_dataset_path

    with pytest.raises(ConfigError, match="--label"):
        next_dataset_path(tmp_path / "recordings", label)
    assert not (tmp_path / "recordings").exists()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=12))
def test_record_and_prepare_accept_exactly_the_same_labels(label: str) -> None:
    try:
        datasets.validate_label(label)
        prepare_ok = True
    except datasets.DatasetError:
        prepare_ok = False
    assert (label_problem(label) is None) == prepare_ok, label


def test_a_nan_sample_in_a_source_file_does_not_spread_into_the_prepared_clip(tmp_path: Path) -> None:
    own = own_data(tmp_path / "own", {"knock": ["a_01.wav", "b_01.wav", "c_01.wav"],
                                      "clap": ["d_01.wav", "e_01.wav", "f_01.wav"]})
    source = 0.3 * np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    source[1000] = np.nan
    sf.write(own / "knock" / "a_01.wav", source, 44100, subtype="FLOAT")
    prepare(own, tmp_path / "data")
    written, _ = sf.read(tmp_path / "data" / "audio" / "knock__a_01.wav", dtype="float32")
    assert np.all(np.isfinite(written))
    assert "NaN" not in (tmp_path / "data" / "manifest.json").read_text()  # strict JSON


def test_macos_appledouble_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    own = own_data(tmp_path / "own", {"knock": ["a_01.wav", "b_01.wav", "c_01.wav"],
                                      "clap": ["d_01.wav", "e_01.wav", "f_01.wav"]})
    (own / "knock" / "._a_01.wav").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (own / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (own / "clap" / ".~lock.wav#").write_text("x")
    dataset = prepare(own, tmp_path / "data")
    assert sorted(e.file_name for e in dataset.entries if e.class_name == "knock") == [
        "knock__a_01.wav", "knock__b_01.wav", "knock__c_01.wav"]


def test_a_class_absent_from_the_test_clips_scores_zero_recall_not_nan() -> None:
    labels = ["knock", "clap", "other"]
    probabilities = [np.array([[0.8, 0.1, 0.1]], np.float32), np.array([[0.1, 0.1, 0.8]], np.float32)]
    report = evaluate.evaluate_clip_probabilities(probabilities, [0, 2], labels, background_label="other")
    assert report["per_class"]["clap"]["support"] == 0 and report["per_class"]["clap"]["recall"] == 0.0
    assert report["macro_f1"] == 1.0  # over the classes present
    json.dumps(report, allow_nan=False)


# --- the edge configuration ----------------------------------------------------------------------

SCHEMA: dict[str, list[str]] = {
    "": ["model_dir", "state_dir", "num_threads"],
    "audio": ["device", "rate_hz", "block_seconds", "channels"],
    "detection": ["threshold"],
    "detection.thresholds": ["crying_baby", "clock_alarm"],
    "leds": ["status", "blink_seconds"],
    "leds.pins": ["crying_baby", "clock_alarm", "toilet_flush"],
    "events": ["log", "budget_mb", "keep", "keep_days", "pre_roll_seconds", "max_clip_seconds"],
}

toml_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, 2, 17, 27, 28, -1, 48000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5, 300.0, 1e308]),
    st.booleans(),
    st.text(alphabet="abcé狗 ./-_", max_size=8),
    st.lists(st.integers(0, 30), max_size=3),
)


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(toml_literal(item) for item in value) + "]"


@st.composite
def config_documents(draw: Any) -> str:
    lines: list[str] = []
    for table, keys in SCHEMA.items():
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
        if draw(st.integers(0, 9)) == 0:
            chosen.append(draw(st.sampled_from(["colour", "pin", "thresold", "rate"])))  # unknown keys
        if not chosen:
            continue
        if table:
            lines.append(f"[{table}]")
        for key in chosen:
            lines.append(f"{json.dumps(key)} = {toml_literal(draw(toml_values))}")
    return "\n".join(lines) + "\n"


def check_usable(config: Any, tmp_path: Path) -> None:
    """What parse_config accepts must be usable: every number finite and in range, the saver and mic constructible."""
    from edge.events import EventAudioSaver
    from edge.sources import MicrophoneSource

    events, leds, audio = config.events, config.leds, config.audio
    assert 0 < audio.block_seconds <= MAX_BLOCK_SECONDS and audio.channels >= 1 and config.num_threads >= 1
    assert all(math.isfinite(v) for v in (leds.blink_seconds, events.budget_mb, events.keep_days,
                                          events.pre_roll_seconds, events.max_clip_seconds))
    assert events.pre_roll_seconds + events.max_clip_seconds <= MAX_EVENT_AUDIO_SECONDS
    pins = list(leds.pins.values()) + ([leds.status_pin] if leds.status_pin is not None else [])
    assert len(set(pins)) == len(pins) and all(pin in BCM_PINS for pin in pins)
    thresholds = list(config.detection.thresholds.values()) + [config.detection.threshold or 0.5]
    assert all(0 < t <= 1 for t in thresholds)
    EventAudioSaver(tmp_path / "clips", rate_hz=48000, budget_mb=events.budget_mb, keep=events.keep,
                    pre_roll_seconds=events.pre_roll_seconds, max_clip_seconds=events.max_clip_seconds,
                    keep_days=events.keep_days)
    MicrophoneSource(audio.device, audio.rate_hz, audio.block_seconds, audio.channels)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=config_documents())
def test_any_config_is_either_usable_or_refused_at_the_line_that_is_wrong(tmp_path: Path, document: str) -> None:
    path = tmp_path / "oido.toml"
    path.write_text(document, encoding="utf-8")
    try:
        config = parse_config(document, path=path)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}:"), message
        match = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
        assert match, f"no line number: {message}"
        line = document.splitlines()[int(match.group(1)) - 1]
        key = json.loads(line.split(" = ", 1)[0]) if " = " in line else line.strip("[]")
        assert key in message, (line, message)
        return
    check_usable(config, tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[audio]\nblock_seconds = nan\n", 2, "block_seconds"),
        ("[audio]\nblock_seconds = 3.0\n", 2, "at most 1"),  # longer than the mic's 2 s stall timeout
        ("[events]\nbudget_mb = inf\n", 2, "budget_mb"),
        ("[events]\nmax_clip_seconds = 1e9\n", 2, "in memory"),
        ("[leds]\nblink_seconds = nan\n", 2, "blink_seconds"),
        ("[events]\nkeep_days = 0\n", 2, "keep_days"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused_at_their_line(tmp_path: Path, text: str, line: int,
                                                                  words: str) -> None:
    """They used to pass: nan block_seconds crashed the microphone, 1e9 s of clip allocated 190 GB."""
    path = tmp_path / "oido.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:{line}: .*{words}"):
        parse_config(text, path=path)


class RefusingSoundDevice:
    """A sounddevice that fails the test if anything tries to capture."""

    default = SimpleNamespace(device=[0, 0])

    def query_devices(self) -> list[dict[str, Any]]:
        return [{"name": "Fake Mic", "max_input_channels": 1, "default_samplerate": 48000.0, "hostapi": 0}]

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs: Any) -> None:
        pass

    def InputStream(self, **kwargs: Any) -> None:  # noqa: N802 - sounddevice's name
        raise AssertionError("the microphone was opened although the configuration or model is bad")


@pytest.fixture
def no_microphone(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: RefusingSoundDevice())


@pytest.mark.parametrize(
    ("mistake", "line", "words"),
    [
        ("[leds.pins]\ncrying_baby = 17\nbarking = 27\n", 3, "barking.*not one of the labels"),
        ("[leds.pins]\ncrying_baby = 17\nclock_alarm = 17\n", 3, "used twice"),
        ("[leds.pins]\ncrying_baby = 40\n", 2, "not a usable GPIO pin"),
        ("[detection.thresholds]\ncrying_baby = 1.5\n", 2, r"outside \(0, 1\]"),
        ("[audio]\nblocksize = 1024\n", 2, "unknown key 'blocksize'"),
    ],
)
def test_listen_refuses_a_bad_config_before_the_microphone_opens(
    tmp_path: Path, no_microphone: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    mistake: str, line: int, words: str,
) -> None:
    from edge.detect import Detector, DetectorConfig
    from edge.pipeline import StreamingPipeline

    labels = ["crying_baby", "clock_alarm", "other"]
    pipeline = StreamingPipeline(object(), object(), labels=labels,  # never run: listen must stop first
                                 detector=Detector(DetectorConfig(background_label="other"), labels=labels))
    monkeypatch.setattr("edge.pipeline.load_pipeline", lambda *args, **kwargs: pipeline)
    path = tmp_path / "oido.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + mistake, encoding="utf-8")
    code = cli.main(["listen", "--config", str(path), "--no-leds"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "Traceback" not in err
    assert re.search(rf"{re.escape(str(path))}:{line + 1}: .*{words}", err), err
    assert not (tmp_path / "state").exists()


# --- exported models ------------------------------------------------------------------------


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON document (objects and lists), leaves and containers alike."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, path + (index,))
    return found


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True),
              st.text(max_size=6)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damaged_manifest_is_refused_with_a_manifest_error_naming_the_file(tmp_path: Path, data: Any) -> None:
    model_dir = tmp_path / "model"
    if not (model_dir / "manifest.json").exists():
        fake_model_dir(model_dir)
        (model_dir / "original.json").write_text((model_dir / "manifest.json").read_text())
    document = json.loads((model_dir / "original.json").read_text())
    target = data.draw(st.sampled_from(leaves(document)))
    replacement = data.draw(json_values)
    if target == ():
        document = replacement
    else:
        holder = document
        for key in target[:-1]:
            holder = holder[key]
        if data.draw(st.booleans()) and isinstance(holder, dict):
            del holder[target[-1]]
        else:
            holder[target[-1]] = replacement
    (model_dir / "manifest.json").write_text(json.dumps(document), encoding="utf-8")
    try:
        manifest = load_manifest(model_dir)
    except ManifestError as error:
        assert str(model_dir) in str(error)
    else:  # what loads must be consistent and usable
        assert len(manifest.labels) == manifest.head.outputs["probabilities"].last_dim
        manifest.detector_config()
        params = manifest.params
        assert params.window_patches >= 1 and params.decision_hop_samples >= 1 and params.clip_samples > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("window_seconds", float("nan")), ("window_seconds", float("inf")), ("sample_rate_hz", 16000.5),
     ("clip_seconds", float("nan")), ("clip_seconds", -1), ("log_offset", float("nan")), ("patch_frames", 0),
     ("silent_patch_dbfs", 0.0), ("silent_patch_dbfs", float("nan"))],
)
def test_manifest_params_that_would_crash_later_are_refused_at_load(tmp_path: Path, field: str, value: Any) -> None:
    """window_seconds = NaN used to load, then crash the listener at its first window decision."""
    fake_model_dir(tmp_path)
    document = json.loads((tmp_path / "manifest.json").read_text())
    document["params"][field] = value
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=rf"manifest\.json: .*{field}"):
        load_manifest(tmp_path)


def damaged_copy(source: Path, destination: Path, damage: str) -> Path:
    import shutil

    shutil.copytree(source, destination, symlinks=False)
    manifest_path = destination / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "labels-outputs":
        manifest["labels"] = ["beep", "speech", "dog", "other"]
    elif damage == "wrong-format":
        manifest["format"] = "oido-model/0"
    elif damage == "flipped-byte":
        head = destination / "head.tflite"
        data = bytearray(head.read_bytes())
        data[len(data) // 2] ^= 0x01
        head.write_bytes(bytes(data))
    elif damage == "truncated-rehashed":  # corrupt AND a manifest that matches it: the loader must catch it
        from edge.manifest import sha256_file

        head = destination / "head.tflite"
        head.write_bytes(head.read_bytes()[:5000])
        manifest["head"]["sha256"] = sha256_file(head)
    elif damage == "other-model":  # the manifest of another model: tensor names disagree
        manifest["head"]["outputs"]["probabilities"]["name"] = "logits"
    manifest_path.write_text(json.dumps(manifest))
    return destination


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("labels-outputs", r"manifest\.json: head\.outputs\.probabilities has shape .* the number of labels is 4"),
        ("wrong-format", r"manifest\.json: \"format\" is 'oido-model/0'"),
        ("flipped-byte", r"head\.tflite: sha256 .* does not match"),
        ("truncated-rehashed", r"head\.tflite: not a loadable TF-Lite model"),
        ("other-model", r"head\.tflite: .*names head\.outputs\.probabilities 'logits'"),
    ],
)
def test_listen_refuses_a_damaged_model_before_the_microphone_opens(
    tmp_path: Path, tiny_model_dir: Path, no_microphone: None, capsys: pytest.CaptureFixture[str], damage: str,
    words: str,
) -> None:
    model_dir = damaged_copy(tiny_model_dir, tmp_path / "model", damage)
    code = cli.main(["listen", "--model-dir", str(model_dir), "--no-leds", "--event-log", str(tmp_path / "e.jsonl")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "Traceback" not in err, err
    assert re.search(words, err), err
    assert not (tmp_path / "e.jsonl").exists()


def test_mutated_model_files_give_a_model_error_or_a_working_model_never_a_crash(tmp_path: Path) -> None:
    """Bit flips, zeroed blocks and truncations of both .tflite files, loaded in a child process (a segfault shows)."""
    from edge.runtime import available_backend

    if available_backend() is None or not ASSET_YAMNET.is_file():
        pytest.skip("needs a TF-Lite runtime and the YAMNet asset")
    code = f"""
import random, sys
import numpy as np
from pathlib import Path
from edge.errors import ModelError
from edge.head import HeadTflite
from edge.yamnet import YamnetTflite
rng = random.Random(0)
work = Path({str(tmp_path)!r})
for name, cls, count, probe in (("head", HeadTflite, 120, np.zeros((2, 1024), np.float32)),
                                ("yamnet", YamnetTflite, 20, np.zeros(15600, np.float32))):
    original = Path({str(TINY_HEAD)!r} if name == "head" else {str(ASSET_YAMNET)!r}).read_bytes()
    for index in range(count):
        data = bytearray(original)
        kind = rng.randrange(3)
        where = rng.randrange(len(data))
        if kind == 0:
            data[where] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[where : where + 4096] = bytes(len(data[where : where + 4096]))
        else:
            del data[where:]
        path = work / f"{{name}}-{{index}}.tflite"
        path.write_bytes(bytes(data or b"x"))
        try:
            cls(path).run(probe)
        except ModelError as error:
            assert str(path) in str(error), error
        path.unlink()
print("done")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]


def test_model_errors_are_project_errors() -> None:
    assert issubclass(ModelError, OidoError) and issubclass(ManifestError, OidoError)
