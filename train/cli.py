"""`oido-train` (also `python -m train`): prepare data, embed, train the head, evaluate, plot.

Parsing only; the work is in train.core. Examples:

    oido-train all                                   # the default task, end to end
    oido-train prepare --classes dog,rooster --background none
    oido-train prepare --assets /path/to/assets      # the folder holding esc50/ and yamnet/
    oido-train embed
    oido-train fit --epochs 30 --class-weight none
    oido-train evaluate
    oido-train cv
    oido-train plot-clip data/audio/5-151085-A-20.wav     # a fold-5 crying_baby clip the default prepare writes
    oido-train --config scripts/recipe.toml fit-openset   # flags from a TOML recipe (train.recipe)
    oido-train fit-openset | calibrate | evaluate-stream | loco | separability | readouts | feedback | ablation   (train.openset_cli)

A user mistake (missing data, bad flag value, a model directory from another run) prints one
line on stderr and exits with status 2; -v/--verbose adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.extra_background import DEBIAN_SFX
from train.head import DEFAULT_TRAIN_CONFIG, TrainConfig, field_docs

logger = logging.getLogger(__name__)

PROG = "oido-train"
EXIT_OK = 0
EXIT_FAILURE = 1
"""Something broke at run time (disk, TensorFlow)."""
EXIT_USAGE = 2
"""The user asked for something impossible (missing data or model, bad option); the message says how to fix it."""
EXIT_INTERRUPTED = 130

BACKGROUND_NONE = "none"
COMMANDS_WITHOUT_TENSORFLOW = frozenset({"prepare"})
"""Commands that never import TensorFlow (so --threads does not import it for them)."""
COMMON_DEFAULTS: dict[str, Any] = {
    "verbose": False, "quiet": False, "data_dir": Path("data"), "model_dir": Path("model"),
    "reports_dir": Path("reports"), "assets": None, "threads": 1, "config": None, "recipe_arguments": (),
}  # fmt: skip
"""Defaults of the options accepted before or after the command. They are filled in after parsing:
the main parser and every sub-parser share these option objects (argparse parents), so a default
set on one would overwrite the value given to the other."""


# --------------------------------------------------------------------------- parsing


def names_arg(text: str) -> list[str]:
    """argparse type: "a, b,c" -> ["a", "b", "c"]; an empty list is an error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give names separated by commas, e.g. crying_baby,clock_alarm")
    return names


def optional_float_arg(text: str) -> float | None:
    """argparse type: a number, or "none" for None (turns the option off)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number, or 'none' to turn this off") from None


def _number(text: str, kind: type, *, low: float, high: float | None = None, low_open: bool = False,
            high_open: bool = False, want: str) -> Any:
    """`text` as `kind` (int or float) within [low, high] (open ends as asked), else ArgumentTypeError
    saying what is wanted (argparse puts the flag's name in front and exits 2)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give {want}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give {want}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise argparse.ArgumentTypeError(f"{text!r}: give {want}")
    return value


def positive_int_arg(text: str) -> int:
    """argparse type: a count of at least 1 (epochs, heads, streams, repeats)."""
    return int(_number(text, int, low=1, want="a whole number of at least 1"))


def non_negative_int_arg(text: str) -> int:
    """argparse type: a count or seed of 0 or more."""
    return int(_number(text, int, low=0, want="a whole number of 0 or more"))


def positive_float_arg(text: str) -> float:
    """argparse type: a number above 0 (a learning rate)."""
    return float(_number(text, float, low=0.0, low_open=True, want="a number above 0"))


def non_negative_float_arg(text: str) -> float:
    """argparse type: a number of 0 or more (a rate, a weight decay)."""
    return float(_number(text, float, low=0.0, want="a number of 0 or more"))


def fraction_arg(text: str) -> float:
    """argparse type: a number from 0 to 1, both included (a position within a range)."""
    return float(_number(text, float, low=0.0, high=1.0, want="a number from 0 to 1"))


def fraction_below_one_arg(text: str) -> float:
    """argparse type: a number from 0 up to, not including, 1 (dropout, label smoothing, a held-out share)."""
    return float(_number(text, float, low=0.0, high=1.0, high_open=True, want="a number from 0 up to (not including) 1"))


TRAIN_CONFIG_TYPES: dict[str, Any] = {
    "hidden_units": positive_int_arg, "epochs": positive_int_arg, "batch_size": positive_int_arg,
    "learning_rate": positive_float_arg, "validation_fraction": fraction_below_one_arg, "seed": non_negative_int_arg,
}  # fmt: skip
"""argparse types of TrainConfig's numeric flags: a bad value is refused while parsing, naming the flag."""


def output_folder(given: Path, *parts: str, flag: str) -> Path:
    """The folder `given`/`parts` made now (with its parents), before any long work, so a file in
    the way or a folder that cannot be written is found before the results it would lose.

    Raises:
        ValueError: naming `flag`, what is in the way and the fix.
    """
    folder = given.joinpath(*parts)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"{flag} {given}: {blocker} is a file, not a folder: give another {flag} (or move the file away)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {given}: cannot make {folder} ({error.strerror or error}): give a {flag} you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {given}: {folder} is not writable: give a {flag} you can write to")
    return folder


TUTORIAL_TRAINING_FIELDS = ("hidden_units", "epochs", "batch_size", "learning_rate", "validation_fraction")
"""TrainConfig fields whose defaults are the TF.js tutorial's (Dense 512, 20 epochs, batch 16, Adam's
0.001, 15% validation); the others are this project's (class_weight, silent_patch_dbfs) or
reproducibility settings the tutorial does not have (seed, deterministic)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--epochs, --batch-size, ...), help from its docstring."""
    docs = field_docs(TrainConfig)
    own = [spec.name for spec in dataclasses.fields(TrainConfig) if spec.name not in TUTORIAL_TRAINING_FIELDS]
    group = parser.add_argument_group(
        "training (TrainConfig)",
        f"{', '.join(_flag(name) for name in TUTORIAL_TRAINING_FIELDS)} default to the TF.js tutorial's values; "
        f"{', '.join(_flag(name) for name in own)} are this project's additions (not in the tutorial).",
    )
    for spec in dataclasses.fields(TrainConfig):
        flag = _flag(spec.name)
        default = getattr(DEFAULT_TRAIN_CONFIG, spec.name)
        origin = "the tutorial's" if spec.name in TUTORIAL_TRAINING_FIELDS else "this project's"
        help_text = f"{docs.get(spec.name, '')} (default: {default}, {origin})"
        if isinstance(default, bool):
            group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif spec.name == "class_weight":
            group.add_argument(flag, dest=spec.name, choices=("none", "balanced"), default=default, help=help_text)
        elif "None" in str(spec.type):
            group.add_argument(flag, dest=spec.name, type=optional_float_arg, default=default, metavar="DB|none", help=help_text)
        else:
            kind = TRAIN_CONFIG_TYPES.get(spec.name, type(default))
            group.add_argument(flag, dest=spec.name, type=kind, default=default, metavar=spec.name.upper(), help=help_text)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(TrainConfig)})


def _add_prepare_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data set")
    group.add_argument("--classes", type=names_arg, default=None, metavar="A,B,C",
                       help="ESC-50 class names in head order (default: crying_baby,clock_alarm,toilet_flush,water_drops); "
                            "with --own-data, the label folders to use")  # fmt: skip
    group.add_argument("--own-data", type=Path, default=None, metavar="DIR",
                       help="your recordings as DIR/<label>/<clip>.wav instead of ESC-50")  # fmt: skip
    group.add_argument("--background", default="esc10", metavar="esc10|esc50|none|DIR",
                       help="'esc10': ESC-10 clips of other classes as the label 'other' (default); "
                            "'esc50': every other ESC-50 class (needs the full ESC-50 download); "
                            "'none': no background class; DIR: your own background recordings")  # fmt: skip
    group.add_argument("--extra-background", default="none", metavar=f"{DEBIAN_SFX}|none|DIR",
                       help="more 'other' audio, trained on but never in a validation or test stream: 'none' (default), "
                            f"'{DEBIAN_SFX}': sound effects, ambiences, music and spoken words from Debian packages "
                            "(apt-get download, ~290 MB, cached in ~/.cache/oido), or DIR: your own recordings of any "
                            "length. Unused with --background none")  # fmt: skip
    group.add_argument("--false-alarms", type=Path, default=None, metavar="DIR",
                       help="the Pi's saved false alarms ([events] save_dir, the files you moved here): trained on as "
                            "'other' like --extra-background DIR, and also in the validation streams that choose the "
                            "thresholds, so calibration hears what fooled the device (never in a test stream)")  # fmt: skip
    group.add_argument("--esc50", type=Path, default=None, metavar="PATH",
                       help="the ESC-50 folder (default: esc50/ in --assets, else $OIDO_ESC50, else $OIDO_ASSETS, else "
                            "../shared/assets, else the user cache, else downloaded)")  # fmt: skip


def add_yamnet_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("YAMNet")
    group.add_argument("--yamnet-source", choices=("auto", "tflite", "hub"), default="auto",
                       help="where the YAMNet weights come from (default: auto = the weights file if found, else TF Hub)")  # fmt: skip
    group.add_argument("--yamnet-weights", type=Path, default=None, metavar="FILE",
                       help="the YAMNet weights file (yamnet_public_int8w.tflite); overrides the search")  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (with --config FILE: the recipe's flags, overridden by those typed);
    options given nowhere get COMMON_DEFAULTS. A mistake in the recipe is a usage error (exit 2)."""
    from edge.errors import ConfigError
    from train.recipe import command_index, load_recipe, long_options, recipe_arguments, with_recipe

    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(words)
    if getattr(args, "config", None) is not None:
        commands = _sub_parsers(parser)
        from convert.cli import recipe_commands as convert_commands

        try:
            converting = convert_commands()
            from_recipe = recipe_arguments(load_recipe(args.config), commands, args.command, other_tables=list(converting),
                                           other_options=sorted(long_options(list(converting.values()))))  # fmt: skip
        except ConfigError as error:
            parser.error(str(error))
        args = parser.parse_args(with_recipe(words, from_recipe, at=command_index(words, parser, commands)))
        args.recipe_arguments = from_recipe
    for name, value in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """oido-train's sub-command parsers by name."""
    for action in parser._actions:  # argparse has no public accessor for its sub-parsers
        if action.dest == "command":
            return dict(action.choices or {})
    raise LookupError("oido-train's parser has no sub-commands")


def build_parser() -> argparse.ArgumentParser:
    # -v/-q and the folders are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="debug logging (every epoch; tracebacks for errors)")  # fmt: skip
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="warnings and errors only; no tables")  # fmt: skip
    folders = common.add_argument_group("folders")
    folders.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                         help="prepared data: audio/, trainData.json, testData.json, cache/ (default: data)")  # fmt: skip
    folders.add_argument("--model-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                         help="head.json + head-<sha>.keras, eval.json (default: model)")  # fmt: skip
    folders.add_argument("--reports-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                         help="PNG figures and cv.json (default: reports)")  # fmt: skip
    folders.add_argument("--assets", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                         help="the folder holding esc50/ and yamnet/ (default: $OIDO_ASSETS, else ../shared/assets "
                              "beside the repository or the current directory)")  # fmt: skip
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                        help="a training recipe: these flags kept in a TOML file (example: scripts/recipe.toml); "
                             "flags typed on the command line win")  # fmt: skip
    common.add_argument("--threads", type=non_negative_int_arg, default=argparse.SUPPRESS, metavar="N",
                        help="TensorFlow CPU threads (default: 1: the head is tiny, one thread trains it fastest and makes its weights independent of the core count; 0 = TensorFlow's choice, faster for a cold embedding run; its embeddings differ in the last bits, so they are cached apart and give slightly different heads)")  # fmt: skip

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Oído training: YAMNet embeddings + the TF.js tutorial's small head, evaluated as the Pi decides.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    prepare = commands.add_parser("prepare", parents=[common], help="write data/: 16 kHz clips and the fold lists")
    _add_prepare_flags(prepare)
    prepare.set_defaults(run=_run_prepare)

    embed = commands.add_parser("embed", parents=[common], help="compute (or reuse) YAMNet embeddings of every clip")
    add_yamnet_flags(embed)
    embed.set_defaults(run=_run_embed)

    fit = commands.add_parser("fit", parents=[common], help="train the head on folds 1-4, save model/head.json + head-<sha>.keras")
    add_yamnet_flags(fit)
    _add_train_config_flags(fit)
    fit.set_defaults(run=_run_fit)

    evaluate = commands.add_parser("evaluate", parents=[common], help="clip accuracy on the test fold, as the edge decides")
    add_yamnet_flags(evaluate)
    evaluate.set_defaults(run=_run_evaluate)

    cv = commands.add_parser("cv", parents=[common], help="5-fold cross-validation by ESC-50 fold")
    cv.add_argument("--repeats", type=positive_int_arg, default=1, metavar="N",
                    help="run the whole cross-validation N times, seeds SEED..SEED+N-1, and report the mean (default: 1)")  # fmt: skip
    add_yamnet_flags(cv)
    _add_train_config_flags(cv)
    cv.set_defaults(run=_run_cv)

    plot = commands.add_parser("plot-clip", parents=[common], help="waveform, log-mel and patch probabilities of a clip (PNG)")
    plot.add_argument("file", type=Path, metavar="FILE", help="an audio file (any rate; resampled to 16 kHz)")
    plot.add_argument("--out", type=Path, default=None, metavar="PNG", help="output (default: <reports-dir>/<FILE stem>.png)")
    add_yamnet_flags(plot)
    plot.set_defaults(run=_run_plot_clip)

    everything = commands.add_parser("all", parents=[common], help="prepare + embed + fit + evaluate (the main job)")
    _add_prepare_flags(everything)
    add_yamnet_flags(everything)
    _add_train_config_flags(everything)
    everything.set_defaults(run=_run_all)

    # Open-set training, threshold calibration and stream evaluation: parsed in train.openset_cli.
    from train import openset_cli

    openset_cli.add_subcommands(commands, parents=[common])
    return parser


def _background(text: str) -> str | None:
    return None if text == BACKGROUND_NONE else text


def _progress(args: argparse.Namespace) -> bool | None:
    """Progress bars: never with --quiet, else on a terminal only."""
    return False if args.quiet else None


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
        for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING if args.quiet else logging.ERROR)


def _configure_threads(threads: int) -> None:
    if threads < 0:
        raise ValueError(f"--threads must be 0 (TensorFlow's choice) or more, got {threads}")
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow's runtime already started (main() called twice in one process)
            logger.warning("--threads %d ignored: TensorFlow is already running in this process", threads)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


# --------------------------------------------------------------------------- commands


def _run_prepare(args: argparse.Namespace) -> int:
    from train import core

    dataset = core.prepare(
        data_dir=args.data_dir, classes=args.classes, own_data_dir=args.own_data,
        background=_background(args.background), extra_background=_background(args.extra_background),
        false_alarms=args.false_alarms, esc50_dir=args.esc50, assets_dir=args.assets, progress=not args.quiet,
    )  # fmt: skip
    counts = dataset.counts()
    _say(args, f"prepared {args.data_dir}: task {dataset.task}, labels {list(dataset.labels)}")
    _say(args, f"  train clips {counts['train']}\n  test clips (fold {dataset.test_fold}) {counts['test']}")
    return EXIT_OK


def _embedded(args: argparse.Namespace) -> Any:
    from train import core
    from train.datasets import load_dataset

    dataset = load_dataset(args.data_dir)
    embedder = core.load_embedder(source=args.yamnet_source, weights_path=args.yamnet_weights, assets_dir=args.assets)
    return core.embed_dataset(dataset, embedder, progress=_progress(args))


def _run_embed(args: argparse.Namespace) -> int:
    embedded = _embedded(args)
    clips = embedded.train + embedded.test
    patches = sum(clip.num_patches for clip in clips)
    _say(args, f"embeddings of {len(clips)} clips ({patches} patches) ready in {embedded.seconds:.1f} s")
    return EXIT_OK


def _run_fit(args: argparse.Namespace) -> int:
    from train import core

    config = _train_config(args)
    head = core.fit(_embedded(args), config=config, model_dir=args.model_dir, reports_dir=args.reports_dir)
    last = head.metrics["training"]["final_epoch"]
    shown = ", ".join(f"{name} {value:.3f}" for name, value in last.items())
    _say(args, f"saved {args.model_dir / head.extra.get('head_file', 'head.json')} (labels {head.labels}); last epoch: {shown}")
    return EXIT_OK


def _run_evaluate(args: argparse.Namespace) -> int:
    from train import core
    from train.head import load_head

    head = load_head(args.model_dir)
    report = core.evaluate(head, _embedded(args), model_dir=args.model_dir, reports_dir=args.reports_dir)
    _say(args, core.format_report(report, title=f"Test fold {report['test_fold']}"))
    return EXIT_OK


def _run_cv(args: argparse.Namespace) -> int:
    from train import core

    config = _train_config(args)
    output_folder(args.reports_dir, flag="--reports-dir")  # now, not after every fold has trained
    summary = core.cross_validation(_embedded(args), config=config, reports_dir=args.reports_dir, repeats=args.repeats)
    _say(args, core.format_cross_validation(summary))
    _say(args, f"({summary['seconds']:.1f} s; written to {args.reports_dir / 'cv.json'})")
    return EXIT_OK


def check_png_path(out: Path, *, example: str) -> None:
    """ValueError naming --out and the fix unless `out` can become a PNG file: not a folder, ends in .png.
    Checked before anything loads: matplotlib would write PNG data under any other name."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the PNG file to write, e.g. --out {out / example}")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: plot-clip writes PNG only; give a name ending in .png, e.g. --out {out.with_suffix('.png')}")


def _run_plot_clip(args: argparse.Namespace) -> int:
    from train import core
    from train.head import load_head

    out = args.out if args.out is not None else args.reports_dir / f"{args.file.stem}.png"
    check_png_path(out, example=f"{args.file.stem}.png")
    head = load_head(args.model_dir)
    embedder = core.load_embedder(
        source=args.yamnet_source, weights_path=args.yamnet_weights, assets_dir=args.assets, params=head.params
    )
    png, decision = core.plot_clip_file(args.file, head=head, embedder=embedder, out_path=out)
    _say(args, f"{args.file}: {decision}; figure {png}")
    return EXIT_OK


def _run_all(args: argparse.Namespace) -> int:
    from train import core

    report, summary = core.run_all(
        data_dir=args.data_dir, model_dir=args.model_dir, reports_dir=args.reports_dir,
        classes=args.classes, own_data_dir=args.own_data, background=_background(args.background),
        extra_background=_background(args.extra_background), false_alarms=args.false_alarms, esc50_dir=args.esc50,
        assets_dir=args.assets, config=_train_config(args), yamnet_source=args.yamnet_source,
        yamnet_weights=args.yamnet_weights, progress=_progress(args),
    )  # fmt: skip
    _say(args, core.format_report(report, title=f"Test fold {report['test_fold']}"))
    timing = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in summary.seconds.items())
    _say(args, f"\ntimes: {timing}\nmodel: {args.model_dir}/head.json (+ the .keras it names) + eval.json; figures: {args.reports_dir}/")
    return EXIT_OK


# --------------------------------------------------------------------------- entry point


def _user_error_types() -> tuple[type[BaseException], ...]:
    """ValueError (the project's error types derive from it) and train.assets.AssetError."""
    from train.assets import AssetError

    return (ValueError, AssetError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `oido-train` and `python -m train`; returns the exit status."""
    args = parse_args(argv)
    _configure_logging(args)
    if args.config is not None:
        logger.info("recipe %s gives %s: %s", args.config, args.command, " ".join(args.recipe_arguments) or "nothing")
    started = time.perf_counter()
    try:
        if args.command not in COMMANDS_WITHOUT_TENSORFLOW:
            _configure_threads(args.threads)
        status = int(args.run(args))
    except _user_error_types() as error:
        logger.debug("details", exc_info=True)
        lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]  # a list keeps its lines
        message = "\n  ".join(lines) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # disk full, permissions: not the user's input, but no traceback either
        logger.debug("details", exc_info=True)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cache entries are kept and the previous model in {args.model_dir} is unchanged",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    logger.debug("%s %s took %.1f s", PROG, args.command, time.perf_counter() - started)
    if argv is None:  # run as a program: about to exit
        # The collector's passes over TensorFlow's millions of objects at interpreter exit take
        # ~1.5 s; frozen objects are skipped (atexit handlers and file flushes still run).
        gc.freeze()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
