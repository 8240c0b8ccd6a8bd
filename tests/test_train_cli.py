"""`oido-train` (train.cli): user errors exit 2 with one clear line; the commands run end to end.

The error-path tests need no TensorFlow. The end-to-end test builds a tiny data set by hand
(two synthetic classes, 1 s clips, folds 1-2 train and 5 test), runs embed / fit / evaluate /
cv / plot-clip with the real YAMNet, and checks that a second embed computes nothing; it skips
without TensorFlow or the YAMNet weights file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.cli import EXIT_USAGE, main

REPO = Path(__file__).resolve().parent.parent


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("oido-train: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_evaluate_without_a_model_exits_2_naming_head_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["evaluate", "--model-dir", str(tmp_path / "model"), "--data-dir", str(tmp_path / "data")])
    assert status == EXIT_USAGE
    line = one_error_line(capsys)
    assert str(tmp_path / "model" / "head.json") in line and "oido-train fit" in line


def test_fit_without_prepared_data_exits_2_and_says_to_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "fit", "--data-dir", str(tmp_path / "nothing")]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert str(tmp_path / "nothing") in line and "oido-train prepare" in line


def test_a_bad_training_option_exits_2_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # refused while parsing, before any data is read
        main(["fit", "--validation-fraction", "1.5", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == EXIT_USAGE
    assert "argument --validation-fraction: '1.5': give a number from 0 up to (not including) 1" in capsys.readouterr().err


def test_an_unknown_flag_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--epocs", "3"])
    assert exit_info.value.code == 2
    assert "--epocs" in capsys.readouterr().err


def test_train_config_flags_reach_the_config() -> None:
    from train.cli import _train_config, parse_args

    args = parse_args(
        ["fit", "--epochs", "7", "--batch-size", "32", "--class-weight", "none", "--no-deterministic", "--seed", "3"]
    )
    config = _train_config(args)
    assert (config.epochs, config.batch_size, config.class_weight, config.deterministic, config.seed) == (7, 32, "none", False, 3)
    assert config.hidden_units == 512


@pytest.mark.parametrize(
    "argv",
    [["-q", "evaluate", "--model-dir", "elsewhere"], ["evaluate", "-q", "--model-dir", "elsewhere"],
     ["--model-dir", "elsewhere", "-q", "evaluate"]],
)  # fmt: skip
def test_global_options_work_before_or_after_the_command(argv: list[str]) -> None:
    from train.cli import parse_args

    args = parse_args(argv)
    assert args.quiet and not args.verbose
    assert args.model_dir == Path("elsewhere") and args.data_dir == Path("data")


def test_python_dash_m_train_shows_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "train", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("prepare", "embed", "fit", "evaluate", "cv", "plot-clip", "all"):
        assert command in result.stdout


ALL_COMMANDS = ["prepare", "embed", "fit", "evaluate", "cv", "plot-clip clip.wav", "all",
                "fit-openset", "calibrate", "evaluate-stream", "loco", "feedback", "ablation"]  # fmt: skip


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_takes_the_assets_folder(command: str) -> None:
    from train.cli import parse_args

    assert parse_args([*command.split(), "--assets", "/srv/assets"]).assets == Path("/srv/assets")
    assert parse_args(["--assets", "/srv/assets", *command.split()]).assets == Path("/srv/assets")
    assert parse_args(command.split()).assets is None  # then $OIDO_ASSETS, else ../shared/assets


def test_the_yamnet_weights_are_found_in_the_assets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from train.core import load_embedder
    from train.yamnet import WEIGHTS_FILE_NAME

    monkeypatch.delenv("OIDO_YAMNET_TFLITE", raising=False)
    monkeypatch.setenv("OIDO_ASSETS", str(tmp_path / "not-this-one"))  # the option wins over the variable
    weights = tmp_path / "assets" / "yamnet" / WEIGHTS_FILE_NAME
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stand-in: only hashed until the model is first used")
    assert load_embedder(assets_dir=tmp_path / "assets").weights_path == weights


@pytest.mark.parametrize("command", ["embed", "fit", "fit-openset"])
def test_a_missing_assets_folder_exits_2_naming_the_option(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tiny_dataset(tmp_path / "data")
    missing = tmp_path / "no-assets"
    argv = [command, "--assets", str(missing), "--data-dir", str(tmp_path / "data"), "--threads", "0"]
    assert main(argv) == EXIT_USAGE
    assert f"assets folder {missing} (from --assets) does not exist" in one_error_line(capsys)


# --------------------------------------------------------------------------- end to end


def write_tiny_dataset(data_dir: Path) -> list[Path]:
    """Two classes (a ~1 kHz beep, white noise), 3 clips per class in each of folds 1, 2 and 5."""
    from edge.audio import write_wav

    rate = 16000
    rng = np.random.default_rng(0)
    time_axis = np.arange(rate) / rate
    audio = data_dir / "audio"
    audio.mkdir(parents=True)
    train, test, paths = [], [], []
    for fold in (1, 2, 5):
        for label, name in enumerate(("beep", "noise")):
            for take in range(3):
                if name == "beep":
                    waveform = (0.3 + 0.05 * take) * np.sin(2 * np.pi * (900 + 60 * fold + 20 * take) * time_axis)
                else:
                    waveform = (0.1 + 0.02 * take) * rng.standard_normal(rate)
                file_name = f"{fold}-{name}{take}.wav"
                write_wav(audio / file_name, waveform.astype(np.float32), rate_hz=rate)
                entry = {"fileName": file_name, "className": name, "classNumber": label, "fold": fold,
                         "source": f"{fold}-{name}{take}"}  # fmt: skip
                (test if fold == 5 else train).append(entry)
                paths.append(audio / file_name)
    (data_dir / "trainData.json").write_text(json.dumps(train))
    (data_dir / "testData.json").write_text(json.dumps(test))
    (data_dir / "classes.json").write_text(json.dumps({"labels": ["beep", "noise"], "background_label": None, "task": "tiny"}))
    return paths


def test_embed_fit_evaluate_cv_and_plot_on_a_tiny_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("matplotlib")
    from train import yamnet
    from train.head import load_head

    if not any(path.is_file() for path in yamnet.default_weight_paths()):
        pytest.skip("no YAMNet weights file (see train.yamnet.default_weight_paths)")
    paths = write_tiny_dataset(tmp_path / "data")
    folders = ["--data-dir", str(tmp_path / "data"), "--model-dir", str(tmp_path / "model"),
               "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    fast = ["--epochs", "4", "--batch-size", "8"]

    builds = []
    real_load = yamnet.load_yamnet
    monkeypatch.setattr(yamnet, "load_yamnet", lambda **kwargs: builds.append(kwargs) or real_load(**kwargs))

    assert main(["embed", *folders]) == 0
    assert len(builds) == 1
    entries = list((tmp_path / "data" / "cache" / "embeddings").rglob("*.npz"))
    assert len(entries) == len(paths)

    assert main(["fit", *folders, *fast]) == 0
    assert len(builds) == 1, "a warm cache must not even build YAMNet"
    head = load_head(tmp_path / "model")
    assert head.labels == ["beep", "noise"] and head.background_label is None

    assert main(["evaluate", *folders]) == 0
    out = capsys.readouterr().out
    assert "Test fold 5: accuracy 6/6" in out
    evaluation = json.loads((tmp_path / "model" / "eval.json").read_text())
    assert evaluation["accuracy_text"] == "6/6"
    assert json.loads((tmp_path / "model" / "head.json").read_text())["metrics"]["evaluation"]["accuracy_text"] == "6/6"

    assert main(["cv", *folders, *fast]) == 0
    cv = json.loads((tmp_path / "reports" / "cv.json").read_text())
    assert cv["folds"] == [1, 2, 5] and cv["mean_accuracy"] == 1.0

    assert main(["plot-clip", str(paths[0]), *folders]) == 0
    assert "beep" in capsys.readouterr().out
    for figure in ("training_curves.png", "confusion.png", "cv_confusion.png", f"{paths[0].stem}.png"):
        assert (tmp_path / "reports" / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("flag", ["--extra-background", "--false-alarms"])
def test_a_missing_extra_background_folder_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    from test_train_prepare import make_esc50  # the miniature ESC-50 of the prepare tests

    esc50 = make_esc50(tmp_path / "esc50")
    status = main(["-q", "prepare", "--esc50", str(esc50), "--data-dir", str(tmp_path / "data"),
                   flag, str(tmp_path / "no-such-folder")])  # fmt: skip
    assert status == EXIT_USAGE
    line = one_error_line(capsys)
    assert str(tmp_path / "no-such-folder") in line and "does not exist" in line
    assert not (tmp_path / "data" / "trainData.json").exists()


def test_prepare_of_one_class_without_a_background_exits_2_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at prepare, before ESC-50 is looked for, not after fit has embedded every clip."""
    status = main(["-q", "prepare", "--classes", "crying_baby", "--background", "none",
                   "--esc50", str(tmp_path / "no-esc50"), "--data-dir", str(tmp_path / "data")])  # fmt: skip
    assert status == EXIT_USAGE
    line = one_error_line(capsys)
    assert "1 label(s) (crying_baby)" in line and "--background esc10" in line and "--classes" in line
    assert not (tmp_path / "data").exists()


def test_fit_help_says_which_training_defaults_are_the_tutorials(monkeypatch: pytest.MonkeyPatch) -> None:
    from train.cli import build_parser, _sub_parsers

    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a flag's name
    text = " ".join(_sub_parsers(build_parser())["fit"].format_help().split())
    assert "defaults: the TF.js tutorial's" not in text  # class weighting and the silence level are not
    assert "--epochs, --batch-size, --learning-rate, --validation-fraction default to the TF.js tutorial's" in text
    assert "--silent-patch-dbfs, --class-weight, --seed, --deterministic are this project's additions" in text
    assert "(default: balanced, this project's)" in text and "(default: 20, the tutorial's)" in text


@pytest.mark.parametrize("out", ["folder", "figure.jpg", "figure"])
def test_plot_clip_refuses_an_out_that_is_no_png_file_before_loading_anything(
    out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import train.head

    def no_head(*_: object, **__: object) -> None:
        raise AssertionError("the head was loaded before --out was checked")

    monkeypatch.setattr(train.head, "load_head", no_head)
    (tmp_path / "folder").mkdir()
    target = tmp_path / out
    status = main(["plot-clip", str(tmp_path / "clip.wav"), "--out", str(target), "--model-dir", str(tmp_path)])
    assert status == EXIT_USAGE
    line = one_error_line(capsys)
    assert f"--out {target}" in line and ".png" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder"]  # nothing written


def test_the_plot_clip_example_names_a_clip_the_default_prepare_writes() -> None:
    import csv
    import re

    import train.cli
    from fixtures.assets import ESC50_DIR
    from train.prepare import DEFAULT_CLASSES

    (name,) = re.findall(r"oido-train plot-clip data/audio/(\S+\.wav)", train.cli.__doc__ or "")
    csv_path = ESC50_DIR / "meta" / "esc50.csv"
    if not csv_path.is_file():
        pytest.skip(f"no ESC-50 metadata at {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = {row["filename"]: row for row in csv.DictReader(handle)}
    assert name in rows, f"{name} is not an ESC-50 clip"
    assert rows[name]["category"] in DEFAULT_CLASSES  # prepare writes the default classes' clips to data/audio


EXPERIMENT_COMMANDS = ("fit-openset", "calibrate", "evaluate-stream", "loco", "separability", "readouts", "feedback", "ablation", "cv")
UNCHECKED_NUMBER_FLAGS = frozenset({"--snr-db", "--mix-speed", "--mix-snr"})
"""Numbers any value of which is a request (dB; the mix ranges are checked as pairs by recipe_from_args)."""


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("fit-openset", "--validation-seeds", "0"),  # was: thresholds.json with no thresholds, exit 0
        ("loco", "--validation-seeds", "0"),
        ("loco", "--epochs", "0"),
        ("fit-openset", "--ensemble", "0"),  # was: refused after training
        ("fit-openset", "--target-false-per-hour", "-1"),
        ("ablation", "--target-false-per-hour", "nan"),
        ("loco", "--training-streams", "-1"),
        ("fit-openset", "--mix-copies", "-1"),
        ("feedback", "--mix-background-copies", "-1"),
        ("calibrate", "--threshold-position", "2"),  # was: refused after the validation heads trained
        ("fit-openset", "--seed", "-1"),  # was: numpy's "expected non-negative integer"
        ("evaluate-stream", "--seed", "-1"),
        ("ablation", "--seed", "-1"),
        ("readouts", "--seeds", "-1"),
        ("loco", "--context-patches", "-1"),
        ("feedback", "--min-patches", "0"),
        ("calibrate", "--of-patches", "0"),
        ("separability", "--dropout", "1"),
        ("fit-openset", "--label-smoothing", "1"),
        ("loco", "--weight-decay", "-0.1"),
        ("cv", "--repeats", "0"),
        ("cv", "--epochs", "0"),
        ("cv", "--batch-size", "0"),
        ("cv", "--seed", "-1"),
        ("cv", "--learning-rate", "0"),
        ("fit-openset", "--threads", "-1"),
        ("fit-openset", "--validation-seeds", "two"),
    ],
)
def test_a_count_or_range_flag_out_of_range_is_refused_while_parsing_naming_the_flag(
    command: str, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, f"{flag}={value}"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"error: argument {flag}: {value!r}: give " in err, err


def test_every_number_flag_of_the_experiment_commands_has_a_range_checked_type() -> None:
    """A count parsed as a plain int (--validation-seeds 0, --ensemble 0, ...) ran, sometimes for
    hours, into a broken model or a late traceback; every such flag now has a type with a range."""
    from train.cli import _sub_parsers, build_parser

    parsers = _sub_parsers(build_parser())
    plain = sorted(
        f"{command} {action.option_strings[-1]}"
        for command in EXPERIMENT_COMMANDS
        for action in parsers[command]._actions  # argparse has no public accessor for a parser's options
        if action.type in (int, float) and action.option_strings[-1] not in UNCHECKED_NUMBER_FLAGS
    )
    assert plain == []


def test_the_edges_of_each_range_are_still_accepted() -> None:
    from train.cli import parse_args

    args = parse_args(["loco", "--training-streams", "0", "--target-false-per-hour", "0", "--threshold-position", "0",
                       "--mix-copies", "0", "--seed", "0", "--validation-seeds", "1", "--epochs", "1", "--dropout", "0"])  # fmt: skip
    assert (args.training_streams, args.target_false_per_hour, args.threshold_position, args.validation_seeds) == (0, 0.0, 0.0, 1)
    assert parse_args(["calibrate", "--threshold-position", "1"]).threshold_position == 1.0


def test_cv_refuses_a_reports_dir_that_is_a_file_before_embedding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to fail after every fold had trained, with "[Errno 17] File exists"."""
    import train.cli

    def no_work(args: object) -> None:
        raise AssertionError("the clips were embedded before --reports-dir was checked")

    monkeypatch.setattr(train.cli, "_embedded", no_work)
    reports = tmp_path / "reports.txt"
    reports.write_text("not a folder")
    assert main(["cv", "--threads", "0", "--reports-dir", str(reports), "--data-dir", str(tmp_path)]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert f"--reports-dir {reports}" in line and "is a file, not a folder" in line
    assert reports.read_text() == "not a folder"
