"""oido-convert: export the trained model for the edge, report parity, check golden decisions.

    oido-convert [export] [--model-dir model] [--data-dir data]
                 [--quantization auto|dynamic_range|full_int8|int8_weights] [--no-parity] [--config RECIPE.toml]
    oido-convert check [--model-dir model] [--data-dir data]   # golden decisions, installed runtime, no TF

`export` (the default) needs TensorFlow and a trained head (model/head.json + the head-<sha>.keras it names);
it writes model/yamnet.tflite, head.tflite, parity.json, parity.md, golden.json and
manifest.json (last), after checking every file. `check` replays model/golden.json's clips
through the edge pipeline with whichever TF-Lite runtime is installed and exits 1 if any
decision differs. Exit codes, as oido-train's: 0 success; 1 the export or check failed (a file failed
its checks, a decision differs, `check` finds no golden.json or clips to replay); 2 a usage error: a
bad flag, or an export input the user has to provide first (no trained head, no prepared data, no
YAMNet weights; convert.export.ExportInputError). Each message names the file and the fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import OidoError

logger = logging.getLogger(__name__)

COMMANDS = ("export", "check")
EXIT_OK = 0
EXIT_FAILURE = 1
"""The export or the check failed (a file failed its checks, a golden decision differs)."""
EXIT_USAGE = 2
"""A bad flag, or missing or mismatched input (no head, no prepared data): the message says how to fix it."""
EXIT_INTERRUPTED = 130
VERBOSITY_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def _parser() -> argparse.ArgumentParser:
    from convert.export import AUTO, QUANTIZATIONS, ExportOptions

    defaults = ExportOptions()
    parser = argparse.ArgumentParser(
        prog="oido-convert",
        description="Export YAMNet + the trained head as checked TF-Lite files with a manifest.",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model-dir", type=Path, default=Path("model"), help="model directory (default: model)")
        sub.add_argument("--data-dir", type=Path, default=Path("data"), help="prepared data directory (default: data)")

    export = commands.add_parser("export", help="export and check the model (default command)")
    common(export)
    export.add_argument(
        "--quantization",
        choices=(AUTO, *QUANTIZATIONS),
        default=defaults.quantization,
        help="'auto' measures every candidate and keeps the fastest accurate one (default: auto)",
    )
    export.add_argument(
        "--calibration-patches",
        type=int,
        default=defaults.calibration_patches,
        help=f"training patches that calibrate full int8 (default: {defaults.calibration_patches})",
    )
    export.add_argument(
        "--cosine-target",
        type=float,
        default=defaults.cosine_target,
        help=f"mean embedding cosine a candidate needs (default: {defaults.cosine_target})",
    )
    export.add_argument(
        "--cosine-floor",
        type=float,
        default=defaults.cosine_floor,
        help=f"1st-percentile embedding cosine a candidate needs (default: {defaults.cosine_floor})",
    )
    export.add_argument("--no-parity", action="store_true", help="skip the parity report and golden file")
    export.add_argument("--yamnet-weights", type=Path, help="YAMNet weights file (default: found automatically)")
    export.add_argument("--class-map", type=Path, help="yamnet_class_map.csv (default: beside the weights)")
    export.add_argument("--assets", type=Path, metavar="DIR",
                        help="the folder holding yamnet/, as oido-train --assets (default: $OIDO_ASSETS, else "
                             "../shared/assets beside the repository or the current directory)")  # fmt: skip
    export.add_argument("--seed", type=int, default=defaults.seed, help="seed for sampling clips and patches")

    export.add_argument("--config", type=Path, metavar="FILE",
                        help="a recipe: these flags in a TOML file, top-level keys and the [convert] table (the file "
                             "oido-train --config reads; example: scripts/recipe.toml); flags typed here win")  # fmt: skip

    check = commands.add_parser("check", help="replay golden.json in the installed TF-Lite runtime")
    common(check)
    check.add_argument("--limit", type=_positive_int, help="check only the first N golden clips")
    return parser


RECIPE_TABLE = "convert"
"""The recipe table oido-convert reads (with the top-level keys it has flags for)."""


def recipe_commands() -> dict[str, argparse.ArgumentParser]:
    """oido-convert's export parser under its recipe table name (for train.recipe)."""
    parser = _parser()
    for action in parser._actions:  # argparse has no public accessor for its sub-parsers
        if action.dest == "command":
            return {RECIPE_TABLE: action.choices["export"]}
    raise LookupError("oido-convert's parser has no sub-commands")


def _with_recipe(arguments: list[str], args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """`arguments` with the recipe's words (args.config) after the command, so typed flags win.
    A mistake in the recipe is a usage error (exit 2) naming file and line."""
    from train.cli import build_parser as train_parser, _sub_parsers
    from train.recipe import load_recipe, long_options, recipe_arguments

    training = _sub_parsers(train_parser())
    try:
        words = recipe_arguments(load_recipe(args.config), recipe_commands(), RECIPE_TABLE, tool="oido-convert",
                                 other_tables=list(training), other_options=sorted(long_options(list(training.values()))))  # fmt: skip
    except OidoError as error:
        parser.error(str(error))
    if words:
        logger.info("recipe %s gives oido-convert: %s", args.config, " ".join(words))
    at = next(i for i, word in enumerate(arguments) if word in COMMANDS)
    return [*arguments[: at + 1], *words, *arguments[at + 1 :]]


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
        for noisy in ("absl", "tensorflow", "h5py"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _export(args: argparse.Namespace) -> int:
    from convert.export import ExportOptions, export_model

    options = ExportOptions(
        quantization=args.quantization,
        calibration_patches=args.calibration_patches,
        cosine_target=args.cosine_target,
        cosine_floor=args.cosine_floor,
        evaluate=not args.no_parity,
        yamnet_weights=args.yamnet_weights,
        class_map=args.class_map,
        assets_dir=args.assets,
        seed=args.seed,
        progress=not args.quiet,
    )
    result = export_model(args.model_dir, args.data_dir, options=options)
    if not args.quiet:
        print(result.summary())
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} checks no clip; give 1 or more")
    return value


def _check(args: argparse.Namespace) -> int:
    from convert.parity import check_golden

    report = check_golden(args.model_dir, args.data_dir, limit=args.limit)
    print(report.describe())
    return EXIT_OK if not report.failures else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of oido-convert and `python -m convert`; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # -v/-q may stand anywhere; no command means export.
    flags = [a for a in arguments if a in VERBOSITY_FLAGS]
    rest = [a for a in arguments if a not in VERBOSITY_FLAGS]
    if not (rest and rest[0] in COMMANDS) and rest[:1] not in (["-h"], ["--help"]):
        rest = ["export"] + rest
    arguments = flags + rest
    parser = _parser()
    args = parser.parse_args(arguments)
    _configure_logging(args.verbose, args.quiet)
    if getattr(args, "config", None) is not None:
        args = parser.parse_args(_with_recipe(arguments, args, parser))
    # SIGTERM (systemd, `kill`) unwinds like Ctrl-C, so the export's staging folder is removed.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    from convert.export import ExportInputError

    try:
        if args.command == "check":
            return _check(args)
        return _export(args)
    except OidoError as error:
        logger.error("%s", error)
        return EXIT_USAGE if isinstance(error, ExportInputError) else EXIT_FAILURE
    except KeyboardInterrupt:
        logger.error("interrupted; the previous model in %s is unchanged", getattr(args, "model_dir", "model"))
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
