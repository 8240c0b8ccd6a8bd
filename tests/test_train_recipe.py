"""`oido-train --config FILE` (train.recipe): a training recipe in TOML gives a command the flags
it names; typed flags win; every mistake in the file is a usage error naming file and line.
Parsing only: no TensorFlow, no data."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.cli import COMMON_DEFAULTS, parse_args

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "scripts" / "recipe.toml"
COMMANDS = ("prepare", "embed", "fit", "evaluate", "cv", "all", "fit-openset", "calibrate", "evaluate-stream", "loco", "feedback", "ablation")


def recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_example_recipe_changes_no_default(command: str) -> None:
    plain = vars(parse_args([command]))
    with_example = vars(parse_args(["--config", str(EXAMPLE), command]))
    assert with_example.pop("config") == EXAMPLE
    assert with_example.pop("recipe_arguments")  # it does set flags for every command (the folders at least)
    assert plain.pop("config") is None and plain.pop("recipe_arguments") == COMMON_DEFAULTS["recipe_arguments"]
    assert with_example == plain


def test_a_table_applies_to_its_command_and_the_top_to_every_command(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'data_dir = "mine"\nbackground = "none"\n[fit]\nepochs = 7\n[fit-openset]\nepochs = 9\n')
    fit = parse_args(["--config", path, "fit"])
    openset = parse_args(["fit-openset", "--config", path])
    prepare = parse_args(["--config", path, "prepare"])
    assert (fit.epochs, openset.epochs) == (7, 9)
    assert fit.data_dir == openset.data_dir == prepare.data_dir == Path("mine")
    assert prepare.background == "none"
    assert parse_args(["--config", path, "cv"]).epochs == 20  # [fit] is not cv's table


def test_a_table_wins_over_the_top_and_typed_flags_win_over_both(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'model_dir = "top"\nepochs = 5\n[fit]\nmodel_dir = "table"\n')
    assert parse_args(["--config", path, "fit"]).model_dir == Path("table")
    assert parse_args(["--config", path, "cv"]).model_dir == Path("top")
    typed_before = parse_args(["--model-dir", "typed", "--config", path, "fit", "--epochs", "3"])
    typed_after = parse_args(["--config", path, "fit", "--model-dir", "typed"])
    assert typed_before.model_dir == typed_after.model_dir == Path("typed")
    assert (typed_before.epochs, typed_after.epochs) == (3, 5)


def test_values_take_the_shape_of_their_flag(tmp_path: Path) -> None:
    path = recipe(tmp_path, "\n".join([
        'classes = ["dog", "rooster"]',
        "deterministic = false",
        "[evaluate-stream]",
        "snr_db = [20, 5]",
        "no-audio = true",
        "veto = { Music = 0.6, Speech = 0.9 }",
        "others = 'debian-music'",
    ]))  # fmt: skip
    prepare = parse_args(["--config", path, "prepare"])
    assert prepare.classes == ["dog", "rooster"]
    assert parse_args(["--config", path, "fit"]).deterministic is False
    stream = parse_args(["--config", path, "evaluate-stream"])
    assert stream.snr_db == [20.0, 5.0]
    assert stream.no_audio is True
    assert stream.veto == {"Music": 0.6, "Speech": 0.9}
    assert stream.others == ["debian-music"]
    assert stream.recipe_arguments == [
        "--snr-db", "20", "5", "--no-audio", "--veto", "Music=0.6,Speech=0.9", "--others", "debian-music",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epoch = 3\n", [":1:", "'epoch'", "did you mean epochs"]),
        ("\n[fitopenset]\nepochs = 3\n", [":2:", "[fitopenset]", "did you mean fit-openset"]),
        ("[fit]\nepocs = 3\n", [":2:", "'epocs' is not a flag of oido-train fit", "epochs"]),
        ("[fit]\nseed = 1\n\n[fit]\n", ["not valid TOML"]),
        ('[fit]\nepochs = "many"\n', [":2:", "--epochs", "'many'"]),
        ("[fit]\ndeterministic = 1\n", [":2:", "--deterministic is a switch", "true or false"]),
        ('[fit-openset]\nclass_weight = "equal"\n', [":2:", "--class-weight is one of none, balanced", "'equal'"]),
        ("[fit]\nepochs = true\n", [":2:", "--epochs takes a value"]),
        ('config = "other.toml"\n', [":1:", "'config'"]),
        ('[plot-clip]\nfile = "x.wav"\n', [":2:", "'file' is not a flag of oido-train plot-clip"]),
    ],
)
def test_a_mistake_anywhere_in_the_recipe_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: list[str]
) -> None:
    path = recipe(tmp_path, text)
    line = usage_error(["--config", path, "prepare"], capsys)  # the mistakes are in other commands' tables too
    assert line.startswith("oido-train") and path in line
    for part in expected:
        assert part in line, line


def test_a_missing_recipe_names_the_file_and_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(["--config", str(tmp_path / "nope.toml"), "fit"], capsys)
    assert str(tmp_path / "nope.toml") in line and "scripts/recipe.toml" in line


# --------------------------------------------------------------------------- oido-convert reads the same file


def convert_args(argv: list[str]):
    import convert.cli as convert_cli

    parser = convert_cli._parser()
    args = parser.parse_args(argv)
    return parser.parse_args(convert_cli._with_recipe(argv, args, parser)) if args.config else args


def test_the_example_recipe_gives_oido_convert_its_defaults() -> None:
    plain = vars(convert_args(["export"]))
    with_example = vars(convert_args(["export", "--config", str(EXAMPLE)]))
    assert with_example.pop("config") == EXAMPLE and plain.pop("config") is None
    assert with_example == plain


def test_oido_convert_takes_the_top_level_folders_and_its_table_and_typed_flags_win(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'model_dir = "mine"\nassets = "kit"\nepochs = 3\n[fit]\nbatch_size = 8\n[convert]\nquantization = "int8_weights"\n')
    args = convert_args(["export", "--config", path])
    assert (args.model_dir, args.quantization) == (Path("mine"), "int8_weights")  # epochs and [fit] are oido-train's
    assert args.assets == Path("kit") == parse_args(["--config", path, "fit"]).assets  # one assets key, both tools
    typed = convert_args(["export", "--config", path, "--quantization", "dynamic_range", "--model-dir", "typed"])
    assert (typed.model_dir, typed.quantization) == (Path("typed"), "dynamic_range")
    assert parse_args(["--config", path, "fit"]).batch_size == 8  # and oido-train accepts the [convert] table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[convert]\nquantisation = "auto"\n', [":2:", "'quantisation' is not a flag of oido-convert", "quantization"]),
        ('[convert]\nquantization = "int4"\n', [":2:", "--quantization is one of"]),
        ("[convrt]\n", [":1:", "[convrt]", "did you mean convert"]),
    ],
)
def test_a_mistake_in_the_recipe_stops_oido_convert_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: list[str]
) -> None:
    path = recipe(tmp_path, text)
    with pytest.raises(SystemExit) as exit_info:
        convert_args(["export", "--config", path])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("oido-convert: error:") and path in line
    for part in expected:
        assert part in line, line
