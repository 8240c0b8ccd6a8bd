"""The open-set commands of oido-train: fit-openset, calibrate, evaluate-stream, loco, separability, readouts, feedback, ablation.

Parsing only; the work is in train.openset (train.feedback, train.ablation). oido-train
(train/cli.py) adds these sub-commands with `add_subcommands`; `python -m train.openset_cli
COMMAND` runs one stand-alone.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.detect import thresholds_text
from train.ablation import ABLATION, ablation, format_ablation
from train.augment import MixOptions
from train.extra_background import LISTENING_SETS
from train.openset import (
    DEFAULT_BED_CATEGORIES,
    DEFAULT_DETECTOR,
    DEFAULT_RECIPE,
    SEPARABILITY_SCORES,
    THRESHOLDS_FILE,
    ExperimentOptions,
    OpenSetRecipe,
    StreamFactory,
    Task,
    TfYamnet,
    calibrate_on_streams,
    check_bed_categories,
    checked_calibration,
    clip_accuracy,
    detector_with,
    evaluate_streams,
    fit_openset,
    format_stream_results,
    leave_one_class_out,
    load_stream_model,
    load_task,
    oof_validation,
    plot_calibration,
    save_openset_model,
    separability,
    update_thresholds,
    write_json,
)
from train.readouts import READOUTS
from train.streams import AudioLibrary, SourceClip
from train.yamnet import find_audioset_classes

logger = logging.getLogger(__name__)

RECIPE_FLAGS: dict[str, str] = {
    "epochs": "passes over the training patches",
    "label_smoothing": "cross-entropy label smoothing",
    "training_streams": "training streams per fold added to the training patches",
    "ensemble": "heads averaged into the exported head",
    "dropout": "dropout on the hidden layer while training",
    "weight_decay": "AdamW decoupled weight decay (0: Adam, the tutorial's optimiser)",
    "seed": "training seed",
}


def add_subcommands(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add fit-openset, calibrate, evaluate-stream, loco, separability, readouts, feedback and ablation to oido-train's sub-parsers.

    `parents`: oido-train's shared options (-v/-q, --data-dir, --model-dir, --reports-dir, --assets, --threads).
    Each sub-parser sets `run` to its *_main(args) -> exit status.
    """
    from train.cli import (  # oido-train's own flags and types
        add_yamnet_flags,
        fraction_arg,
        fraction_below_one_arg,
        names_arg,
        non_negative_float_arg,
        non_negative_int_arg,
        optional_float_arg,
        positive_int_arg,
    )

    # a value OpenSetRecipe / ExperimentOptions would refuse is refused while parsing, naming the flag (exit 2)
    recipe_types = {
        "epochs": positive_int_arg, "label_smoothing": fraction_below_one_arg, "training_streams": non_negative_int_arg,
        "ensemble": positive_int_arg, "dropout": fraction_below_one_arg, "weight_decay": non_negative_float_arg,
        "seed": non_negative_int_arg,
    }  # fmt: skip

    def calibration_flags(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("calibration")
        group.add_argument("--target-false-per-hour", type=non_negative_float_arg, default=ExperimentOptions.target_false_per_hour,
                           metavar="RATE", help="false events per hour of non-target sound to choose thresholds for (default: 2)")  # fmt: skip
        group.add_argument("--threshold-position", type=fraction_arg, default=ExperimentOptions.threshold_position, metavar="P",
                           help="where each threshold sits among the grid thresholds that give the same validation figures, "
                                "in logit space: 1 the highest, 0.5 the middle, 0 the lowest (default: 1)")  # fmt: skip
        group.add_argument("--validation-seeds", type=positive_int_arg, default=ExperimentOptions.validation_seeds, metavar="N",
                           help="validation streams per training fold (default: 2)")  # fmt: skip
        group.add_argument("--validation-snr-db", type=optional_float_arg, nargs="+", default=list(ExperimentOptions.validation_snr_db),
                           metavar="DB", help="also calibrate on each validation stream with its targets mixed over background clips "
                                              "at these SNRs, for a noisy home; none: the clean streams only (default: "
                                              f"{' '.join(f'{db:g}' for db in ExperimentOptions.validation_snr_db) or 'none'})")  # fmt: skip
        group.add_argument("--min-patches", type=positive_int_arg, default=DEFAULT_DETECTOR.min_patches, metavar="K",
                           help=f"detector: K of N patches over threshold start an event (default: {DEFAULT_DETECTOR.min_patches})")  # fmt: skip
        group.add_argument("--of-patches", type=positive_int_arg, default=DEFAULT_DETECTOR.of_patches, metavar="N",
                           help=f"detector: the N of K-of-N (default: {DEFAULT_DETECTOR.of_patches})")  # fmt: skip
        group.add_argument("--veto-classes", type=veto_classes_arg, default=ExperimentOptions.veto_classes, metavar="NAMES|none",
                           help="YAMNet AudioSet classes (comma-separated) that keep the LEDs dark when YAMNet hears them "
                                "more strongly than any training target; none for no veto (default: Speech,Music)")  # fmt: skip

    def recipe_flags(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("open-set training recipe (defaults: the measured choice)")
        for name, text in RECIPE_FLAGS.items():
            default = getattr(DEFAULT_RECIPE, name)
            group.add_argument("--" + name.replace("_", "-"), dest=name, type=recipe_types[name], default=default,
                               help=f"{text} (default: {default})")  # fmt: skip
        group.add_argument("--class-weight", choices=("none", "balanced"), default=DEFAULT_RECIPE.class_weight,
                           help=f"class weighting (default: {DEFAULT_RECIPE.class_weight})")  # fmt: skip
        group.add_argument("--quiet-below-peak-db", type=optional_float_arg, default=DEFAULT_RECIPE.quiet_below_peak_db, metavar="DB|none",
                           help="target patches this far under the clip's loudest are background (default: "
                                f"{DEFAULT_RECIPE.quiet_below_peak_db})")  # fmt: skip
        group.add_argument("--mix-copies", type=non_negative_int_arg, default=DEFAULT_RECIPE.mix.copies if DEFAULT_RECIPE.mix else 0, metavar="N",
                           help="augmented copies of each target clip over background (default: "
                                f"{DEFAULT_RECIPE.mix.copies if DEFAULT_RECIPE.mix else 0})")  # fmt: skip
        mix = DEFAULT_RECIPE.mix if DEFAULT_RECIPE.mix else MixOptions()
        group.add_argument("--mix-speed", type=float, nargs=2, default=list(mix.speed), metavar=("LOW", "HIGH"),
                           help="each augmented copy is played at a random speed in this range, 1 1 for none "
                                f"(default: {mix.speed[0]:g} {mix.speed[1]:g})")  # fmt: skip
        group.add_argument("--mix-snr", type=float, nargs=2, default=list(mix.snr_db), metavar=("LOW", "HIGH"),
                           help="each augmented copy is mixed over background at a random SNR in this range, dB "
                                f"(default: {mix.snr_db[0]:g} {mix.snr_db[1]:g})")  # fmt: skip
        group.add_argument("--mix-background-copies", type=non_negative_int_arg, default=mix.background_copies, metavar="N",
                           help="augmented copies of each background clip (shifted, gained, over another), trained on "
                                f"as background (default: {mix.background_copies})")  # fmt: skip

    fit = subparsers.add_parser("fit-openset", parents=list(parents),
                                help="train the head for open-set use and calibrate its thresholds (head.json + thresholds.json)")  # fmt: skip
    add_yamnet_flags(fit)
    recipe_flags(fit)
    calibration_flags(fit)
    fit.set_defaults(run=fit_openset_main)

    calibrate = subparsers.add_parser("calibrate", parents=list(parents),
                                      help="choose per-class thresholds on out-of-fold validation streams for a false-alarm rate")  # fmt: skip
    add_yamnet_flags(calibrate)
    calibration_flags(calibrate)
    calibrate.set_defaults(run=calibrate_main)

    stream = subparsers.add_parser("evaluate-stream", parents=list(parents),
                                   help="event-level evaluation: the test fold as long streams through the edge pipeline")  # fmt: skip
    add_yamnet_flags(stream)
    stream.add_argument("--seed", type=non_negative_int_arg, default=0, help="stream layout seed (default: 0)")
    stream.add_argument("--snr-db", type=float, nargs="*", default=[10.0, 0.0], metavar="DB",
                        help="also mix the targets over background at these SNRs (default: 10 0)")  # fmt: skip
    stream.add_argument("--bed-categories", type=names_arg, default=None, metavar="A,B",
                        help="background categories of the test fold mixed under targets (default: those of "
                             f"{','.join(DEFAULT_BED_CATEGORIES)} the data has)")  # fmt: skip
    stream.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where specs, WAVs, results.json and sweep.png go (default: <reports-dir>/openset/stream)")  # fmt: skip
    stream.add_argument("--no-audio", action="store_true", help="do not write the streams as WAV files")
    stream.add_argument("--veto", type=veto_arg, default=None, metavar="CLASS=SCORE,...|none",
                        help="replace the model's AudioSet veto for this evaluation, e.g. none or Music=0.75,Speech=0.8 (default: the model's)")  # fmt: skip
    stream.add_argument("--threshold", type=label_threshold_arg, action="append", default=[], metavar="LABEL=P",
                        help="replace one class's threshold for this evaluation, as [detection.thresholds] does on the Pi "
                             "(water_drops=0.9; repeatable)")  # fmt: skip
    stream.add_argument("--others", nargs="+", default=None, metavar="SET|DIR",
                        help=f"also stream the test targets among everyday sounds no head trained on: {', '.join(LISTENING_SETS)} "
                             "(Debian packages, downloaded once) or a folder of your own recordings; reports false events on them")  # fmt: skip
    stream.add_argument("--no-check", action="store_true", help="skip running the full StreamingPipeline once to check the cache")
    stream.set_defaults(run=evaluate_stream_main)

    def leave_out_parser(name: str, text: str) -> argparse.ArgumentParser:
        """A command that leaves background categories out in turn (loco, feedback)."""
        parser = subparsers.add_parser(name, parents=list(parents), help=text)
        add_yamnet_flags(parser)
        recipe_flags(parser)
        calibration_flags(parser)
        parser.add_argument("--categories", type=names_arg, default=None, metavar="A,B",
                            help="background categories to leave out in turn (default: all)")  # fmt: skip
        return parser

    loco = leave_out_parser("loco", "leave-one-class-out: false events on a background category never trained on")
    loco.add_argument("--context-patches", type=non_negative_int_arg, default=DEFAULT_RECIPE.context_patches, metavar="K",
                      help="measure a head that also hears the mean embedding of the K patches before each one "
                           "(train.context; measured and not kept, so fit-openset has no such flag) (default: 0)")  # fmt: skip
    loco.set_defaults(run=loco_main)

    apart = subparsers.add_parser("separability", parents=list(parents),
                                  help="how well any score of the head tells a target from a sound it never trained on (AUC, out of fold)")  # fmt: skip
    add_yamnet_flags(apart)
    recipe_flags(apart)
    apart.add_argument("--left-out", default="clock_tick", metavar="CATEGORY",
                       help="background category the heads never train on (default: clock_tick, the one that fires most)")  # fmt: skip
    apart.add_argument("--target", default="water_drops", metavar="LABEL",
                       help="target label it is taken for (default: water_drops)")  # fmt: skip
    apart.set_defaults(run=separability_main)

    readouts = subparsers.add_parser("readouts", parents=list(parents),
                                     help="would a head reading more of YAMNet than its embedding keep a never-heard sound dark? (AUC, out of fold)")  # fmt: skip
    add_yamnet_flags(readouts)
    readouts.add_argument("--readouts", type=names_arg, default=list(READOUTS), metavar="A,B",
                          help=f"read-outs to compare (default: all of {', '.join(READOUTS)})")  # fmt: skip
    readouts.add_argument("--left-out", type=names_arg, default=["clock_tick"], metavar="A,B",
                          help="background categories the heads never train on, each in turn (default: clock_tick)")  # fmt: skip
    readouts.add_argument("--target", default="water_drops", metavar="LABEL",
                          help="target label to report on its own as well (default: water_drops)")  # fmt: skip
    readouts.add_argument("--seeds", type=non_negative_int_arg, nargs="+", default=[0], metavar="S", help="training seeds (default: 0)")
    readouts.set_defaults(run=readouts_main)

    from train.feedback import RETRAIN_AS

    feedback = leave_out_parser("feedback", "leave-one-class-out, then retrain on the false alarms of a first day of listening "
                                            "(what the event-saving loop buys; train.feedback)")  # fmt: skip
    feedback.add_argument("--listen-folds", type=folds_arg, default=[1, 2], metavar="F,G",
                          help="folds whose clips of the left-out category are the first day of listening; the "
                               "others are measured (default: 1,2)")  # fmt: skip
    feedback.add_argument("--retrain-as", choices=RETRAIN_AS, default=RETRAIN_AS[0],
                          help="retrain on the heard clips as `prepare --false-alarms` adds them (trained on and in the "
                               "validation streams; the default) or as `--extra-background` (trained on only)")  # fmt: skip
    feedback.set_defaults(run=feedback_main)

    ablate = subparsers.add_parser("ablation", parents=list(parents),
                                   help="what each part of the open-set recipe changes (calibrated, event level)")  # fmt: skip
    add_yamnet_flags(ablate)
    calibration_flags(ablate)
    ablate.add_argument("--variants", type=names_arg, default=[v for v in ABLATION if v != "ensemble"], metavar="A,B",
                        help=f"variants to run (default: all but ensemble; from {','.join(ABLATION)})")  # fmt: skip
    ablate.add_argument("--seed", type=non_negative_int_arg, default=DEFAULT_RECIPE.seed, metavar="S",
                        help=f"training seed of every variant (default: {DEFAULT_RECIPE.seed})")  # fmt: skip
    ablate.set_defaults(run=ablation_main)


def _arg(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def recipe_from_args(args: argparse.Namespace) -> OpenSetRecipe:
    values = {name: getattr(args, name) for name in RECIPE_FLAGS}
    mix = DEFAULT_RECIPE.mix if DEFAULT_RECIPE.mix is not None else MixOptions(copies=0)
    return replace(
        DEFAULT_RECIPE,
        class_weight=args.class_weight,
        quiet_below_peak_db=args.quiet_below_peak_db,
        mix=replace(
            mix, copies=args.mix_copies, speed=_mix_range(args.mix_speed, "--mix-speed", (0.5, 2.0)),
            snr_db=_mix_range(args.mix_snr, "--mix-snr", (-30.0, 60.0), " in dB"), background_copies=args.mix_background_copies,
        ) if args.mix_copies > 0 or args.mix_background_copies > 0 else None,  # fmt: skip
        context_patches=getattr(args, "context_patches", DEFAULT_RECIPE.context_patches),
        **values,
    )


def _mix_range(values: Sequence[float], flag: str, bounds: tuple[float, float], unit: str = "") -> tuple[float, float]:
    """A LOW HIGH flag of the mix (--mix-speed, --mix-snr), checked against bounds."""
    low, high = values
    if not (bounds[0] <= low <= high <= bounds[1]):
        raise ValueError(f"{flag} takes LOW HIGH{unit} with {bounds[0]:g} <= LOW <= HIGH <= {bounds[1]:g}, got {low:g} {high:g}")
    return (float(low), float(high))


def label_threshold_arg(text: str) -> tuple[str, float]:
    """--threshold: "water_drops=0.9" -> ("water_drops", 0.9); oido-edge's parser, one label only."""
    from edge.cli import threshold_arg

    label, threshold = threshold_arg(text)
    if not label or not 0.0 < threshold <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: write LABEL=P with P in (0, 1], e.g. water_drops=0.9")
    return label, threshold


def veto_arg(text: str) -> dict[str, float]:
    """--veto: "Music=0.75,Speech=0.8" -> {"Music": 0.75, "Speech": 0.8}; "none" -> {}."""
    if text.strip().lower() in ("", "none"):
        return {}
    veto = {}
    for item in text.split(","):
        name, equals, value = item.rpartition("=")
        try:
            veto[name.strip()] = float(value)
        except ValueError:
            equals = ""
        if not equals or not name.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: write CLASS=SCORE, e.g. Music=0.75 (or none)")
    return veto


def veto_classes_arg(text: str) -> tuple[str, ...]:
    """--veto-classes: "Speech,Music" -> ("Speech", "Music"); "none" or "" -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _experiment_from_args(args: argparse.Namespace) -> ExperimentOptions:
    """The calibration flags as ExperimentOptions; ValueError naming the flag for a value it refuses."""
    if args.min_patches > args.of_patches:
        raise ValueError(f"--min-patches {args.min_patches} is more than --of-patches {args.of_patches}: "
                         "an event needs K of the last N patches, so give K <= N (e.g. --min-patches 2 --of-patches 3)")  # fmt: skip
    detector = DEFAULT_DETECTOR.with_changes(min_patches=args.min_patches, of_patches=args.of_patches)
    return ExperimentOptions(
        validation_seeds=args.validation_seeds, target_false_per_hour=args.target_false_per_hour, detector=detector,
        veto_classes=tuple(_arg(args, "veto_classes", ExperimentOptions.veto_classes)),
        threshold_position=_arg(args, "threshold_position", ExperimentOptions.threshold_position),
        validation_snr_db=tuple(db for db in _arg(args, "validation_snr_db", ExperimentOptions.validation_snr_db) if db is not None),
    )  # fmt: skip


def _factory(args: argparse.Namespace) -> StreamFactory:
    from train.core import load_embedder

    data_dir = Path(_arg(args, "data_dir", "data"))
    assets = _arg(args, "assets", None)
    embedder = TfYamnet(load_embedder(source=args.yamnet_source, weights_path=args.yamnet_weights, assets_dir=assets))
    library = AudioLibrary()
    task = load_task(data_dir, embedder, cache_root=data_dir / "cache" / "embeddings", esc50_dir=getattr(args, "esc50", None),
                     assets_dir=assets, library=library)  # fmt: skip
    if task.background_label is None:
        raise ValueError(
            f"{data_dir / 'classes.json'} has no background class: open-set training needs one; "
            "run oido-train prepare --background esc10 (or a folder of your own background recordings)"
        )
    audioset_classes = find_audioset_classes(getattr(embedder.yamnet, "weights_path", None), assets_dir=assets)
    return StreamFactory(task, embedder, cache_dir=data_dir / "cache" / "streams", library=library, audioset_classes=audioset_classes)


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _reports_folder(args: argparse.Namespace) -> Path:
    """<reports-dir>/openset, made before any work: a file in its way is a usage error naming
    --reports-dir now, not after hours of training (train.cli.output_folder)."""
    from train.cli import output_folder

    return output_folder(Path(_arg(args, "reports_dir", "reports")), "openset", flag="--reports-dir")


def _categories_suffix(categories: Sequence[str] | None) -> str:
    """"" for every category; "-a,b" for --categories a,b, so runs over other categories (the halves
    of a long run) write beside each other instead of over each other."""
    return "" if categories is None else "-" + ",".join(categories)


def _train_folds(task: Task) -> list[int]:
    return sorted({c.fold for c in task.clips if c.fold != task.test_fold})


def fit_openset_main(args: argparse.Namespace) -> int:
    """oido-train fit-openset: train the recipe's head, calibrate out of fold, save into --model-dir."""
    from train.cli import output_folder

    recipe, experiment = recipe_from_args(args), _experiment_from_args(args)
    reports = _reports_folder(args)
    model_dir = output_folder(Path(_arg(args, "model_dir", "model")), flag="--model-dir")
    factory = _factory(args)
    task = factory.task
    data_dir = Path(_arg(args, "data_dir", "data"))
    model = fit_openset(
        factory, recipe, train_folds=_train_folds(task), experiment=experiment,
        augment_cache=data_dir / "cache" / "augment", progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    right, total = clip_accuracy(task, model.heads, folds=[task.test_fold])
    save_openset_model(model, model_dir, task=task, yamnet_weights_sha256=factory.embedder.weights_sha256,
                       params=factory.params, evaluation={"test_clip_accuracy_targets": [right, total]})  # fmt: skip
    plot_calibration(model.calibration, reports / "calibration.png")
    _say(args, f"saved {model_dir / 'head.json'} (+ the .keras it names) and {THRESHOLDS_FILE}: thresholds "
               + thresholds_text(model.calibration.thresholds))  # fmt: skip
    _say(args, f"test fold {task.test_fold}: {right}/{total} target clips decided right (a clip's argmax; whether an LED "
               f"lights is the thresholds'); calibration plot {reports / 'calibration.png'}")  # fmt: skip
    _say_warnings(args, model.calibration.warnings)
    return 0


def _say_warnings(args: argparse.Namespace, warnings: Sequence[str]) -> None:
    """The calibration's warnings again as the last lines of the summary (logged when found, too)."""
    if warnings:
        _say(args, f"WARNING: calibration warnings for {len(warnings)} class(es); fix before shipping:")
        for text in warnings:
            _say(args, f"  {text}")


def calibrate_main(args: argparse.Namespace) -> int:
    """oido-train calibrate: new thresholds for --model-dir's head (trained by fit-openset) at a false-alarm rate."""
    from train.head import read_head_metadata

    model_dir = Path(_arg(args, "model_dir", "model"))
    metadata = read_head_metadata(model_dir)
    recorded = (metadata.get("openset") or {}).get("recipe")
    if recorded is None:
        raise ValueError(
            f"{model_dir / 'head.json'} was not trained by oido-train fit-openset, so its validation heads cannot be "
            "retrained the same way: run oido-train fit-openset"
        )
    recipe = OpenSetRecipe.from_dict(recorded)
    experiment = _experiment_from_args(args)
    reports = _reports_folder(args)
    factory = _factory(args)
    data_dir = Path(_arg(args, "data_dir", "data"))
    validation = oof_validation(
        factory, recipe, train_folds=_train_folds(factory.task), experiment=experiment,
        augment_cache=data_dir / "cache" / "augment", progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    recorded_temperature = (metadata.get("openset") or {}).get("temperature", 1.0)
    if not math.isclose(validation.temperature, recorded_temperature, rel_tol=1e-6):
        raise ValueError(
            f"{model_dir / 'head.json'}: its head was exported at temperature {recorded_temperature:.4g} but the "
            f"validation heads now fit {validation.temperature:.4g} (data or code changed): run oido-train fit-openset"
        )
    base = experiment.detector.with_changes(background_label=factory.task.background_label)
    calibration = calibrate_on_streams(validation.streams, labels=factory.task.labels, config=base,
                                       target_false_per_hour=experiment.target_false_per_hour,
                                       options=factory.options, params=factory.params,
                                       position=experiment.threshold_position)  # fmt: skip
    calibration = checked_calibration(factory.task, calibration, train_folds=_train_folds(factory.task))
    veto = (metadata.get("detector") or {}).get("veto") or {}
    detector = detector_with(calibration, base, factory.task.background_label).with_changes(veto=veto)
    update_thresholds(model_dir, calibration, detector)
    png = plot_calibration(calibration, reports / "calibration.png")
    _say(args, f"thresholds for {experiment.target_false_per_hour:g} false events/hour written to {model_dir / 'head.json'} "
               f"and {THRESHOLDS_FILE}: " + thresholds_text(calibration.thresholds))  # fmt: skip
    _say(args, f"validation: {calibration.validation_hours:.2f} h of non-target sound, {calibration.validation_targets} targets; plot {png}")
    _say(args, "run oido-convert again to copy them into model/manifest.json")
    _say_warnings(args, calibration.warnings)
    return 0


def evaluate_stream_main(args: argparse.Namespace) -> int:
    """oido-train evaluate-stream: event recall, latency and false events/hour on test-fold streams."""
    from train.cli import output_folder

    data_dir = Path(_arg(args, "data_dir", "data"))
    model_dir = Path(_arg(args, "model_dir", "model"))
    assets = _arg(args, "assets", None)
    if args.bed_categories is not None:  # before the model loads and --others downloads
        check_bed_categories(data_dir, args.bed_categories, esc50_dir=getattr(args, "esc50", None), assets_dir=assets)
    if args.out is not None:
        out = output_folder(args.out, flag="--out")
    else:
        out = output_folder(Path(_arg(args, "reports_dir", "reports")), "openset", "stream", flag="--reports-dir")
    model = load_stream_model(model_dir, yamnet_source=args.yamnet_source, yamnet_weights=args.yamnet_weights, assets_dir=assets)
    if args.threshold:
        unknown = [label for label, _ in args.threshold if label not in model.labels]
        if unknown:
            raise ValueError(f"--threshold: {unknown} are not labels of {model_dir} ({', '.join(model.labels)})")
        model = replace(model, detector=model.detector.with_changes(thresholds={**model.detector.thresholds, **dict(args.threshold)}))
    if args.veto is not None:
        model = replace(model, detector=model.detector.with_changes(veto=args.veto))
        model.detector.veto_indices(model.audioset_classes)  # a name YAMNet does not have fails here, not after the streams
    _check_not_trained_on_test(model_dir, data_dir)
    others = []
    for choice in args.others or ():
        from train.extra_background import listening_clips

        category = choice if choice in LISTENING_SETS else Path(choice).name
        clips = listening_clips(choice, model.labels, params=model.params, progress=not getattr(args, "quiet", False))
        others += [SourceClip(c.path, "nontarget", None, category) for c in clips]
    results = evaluate_streams(
        model, data_dir, out_dir=out, seed=args.seed, snr_db=args.snr_db, bed_categories=args.bed_categories,
        cache_dir=data_dir / "cache" / "streams", esc50_dir=getattr(args, "esc50", None), assets_dir=assets,
        check_pipeline=not args.no_check, write_audio=not args.no_audio, everyday=others,
    )  # fmt: skip
    _say(args, f"model: {model_dir} ({model.kind}); thresholds "
               + thresholds_text(model.detector.thresholds)
               + "; veto " + (", ".join(f"{k} {v:g}" for k, v in model.detector.veto.items()) or "none"))  # fmt: skip
    _say(args, format_stream_results(results))
    _say(args, f"written to {out}/ (results.json, sweep.png, *.spec.json{', *.wav: oido-edge replay ' + str(out / 'clean.wav') if not args.no_audio else ''})")
    return 0


def _check_not_trained_on_test(model_dir: Path, data_dir: Path) -> None:
    """HeadError when the head in `model_dir` (its head.json, exported or not) was trained on a
    recording that `data_dir`'s test fold now holds: its stream figures would be inflated."""
    from train.core import check_head_not_trained_on_test
    from train.datasets import load_dataset
    from train.head import read_head_metadata

    json_path = model_dir / "head.json"
    if not json_path.is_file():
        return  # an exported model copied without its head.json: nothing records what it heard
    check_head_not_trained_on_test(read_head_metadata(model_dir), load_dataset(data_dir, check_audio=False),
                                   json_path=json_path)


def loco_main(args: argparse.Namespace) -> int:
    """oido-train loco: leave each background category out in turn; false events/hour on it.

    Writes <reports-dir>/openset/loco.json, or loco-A,B.json for --categories A,B (so the halves of
    a long run, each with its own --categories, do not overwrite each other)."""
    recipe, experiment = recipe_from_args(args), _experiment_from_args(args)
    out = _reports_folder(args) / f"loco{_categories_suffix(args.categories)}.json"
    factory = _factory(args)
    task = factory.task
    data_dir = Path(_arg(args, "data_dir", "data"))
    summary = leave_one_class_out(
        factory, recipe, train_folds=_train_folds(task), test_fold=task.test_fold,
        categories=args.categories, experiment=experiment,
        augment_cache=data_dir / "cache" / "augment", progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    _say(args, f"{'left out':16s} {'false':>5s} {'per h':>7s} {'targets in time':>16s}   in hindsight, with 0 / 1 / any false events")
    for category, figures in summary["splits"].items():
        ceiling = figures["hindsight"]
        best = " / ".join("-" if b["detected_in_time"] is None else str(b["detected_in_time"]) for b in ceiling["budgets"][:2])
        _say(args, f"{category:16s} {figures['false_events']:>5d} {figures['false_per_hour']:>7.1f} "
                   f"{figures['detected_in_time']:>10d}/{figures['targets']}   {best} / {ceiling['any_false']}")  # fmt: skip
    _say(args, f"mean {summary['mean_false_per_hour']:.1f}/h, worst {summary['worst_false_per_hour']:.1f}/h "
               f"({summary['worst_category']}), fewest targets in time {summary['min_detected_in_time']}/{summary['targets']}")  # fmt: skip
    write_json(out, summary)
    _say(args, f"written to {out}")
    return 0


def separability_main(args: argparse.Namespace) -> int:
    """oido-train separability: AUC of each patch score between a target's clips and a never-trained category's."""
    recipe = recipe_from_args(args)
    out = _reports_folder(args) / f"separability-{args.left_out}-{args.target}.json"
    factory = _factory(args)
    data_dir = Path(_arg(args, "data_dir", "data"))
    result = separability(
        factory, recipe, train_folds=_train_folds(factory.task), left_out=args.left_out, target=args.target,
        augment_cache=data_dir / "cache" / "augment", progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    _say(args, f"{args.target} ({result['target_clips']} clips) against never-trained {args.left_out} "
               f"({result['left_out_clips']} clips), out of fold; a clip scores its highest audible patch")  # fmt: skip
    _say(args, f"{'score':18s} {'AUC':>5s}   {args.left_out} clips over the threshold that keeps 75% / 50% of {args.target}")
    for name in SEPARABILITY_SCORES:
        over = result[name]["left_out_over"]
        _say(args, f"{name:18s} {result[name]['auc']:5.3f}   {over['75%']} / {over['50%']}")
    write_json(out, result)
    _say(args, f"written to {out}")
    return 0


def readouts_main(args: argparse.Namespace) -> int:
    """oido-train readouts: separability of never-heard sounds from the targets, per read-out of YAMNet."""
    from train.readouts import check_left_out, check_readouts, clip_readouts, compare_readouts

    check_readouts(args.readouts)  # before the clips load
    out = _reports_folder(args) / "readouts.json"
    factory = _factory(args)
    check_left_out(factory.task, args.left_out, target=args.target)  # before every clip goes through YAMNet
    yamnet = factory.embedder.yamnet
    patch_model = getattr(yamnet, "model", yamnet).patch_model  # train.core.LazyYamnet or YamnetTF
    _say(args, f"reading out {len(factory.task.clips)} clips through YAMNet ({', '.join(args.readouts)})")
    features = clip_readouts(factory.task, patch_model, names=args.readouts, library=factory.library, params=factory.params,
                             progress=lambda text: _say(args, f"  {text}"))  # fmt: skip
    result = compare_readouts(
        factory.task, features, readouts=args.readouts, left_out=args.left_out, train_folds=_train_folds(factory.task),
        seeds=args.seeds, target=args.target, params=factory.params, progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    _say(args, f"out of fold over folds {result['train_folds']}, seeds {result['seeds']}; a clip scores its highest audible patch")
    _say(args, f"{'read-out':14s} {'left out':16s} {'AUC':>6s} {'AUC ' + args.target:>18s}   left-out clips over the 75% threshold, per seed")
    for name, rows in result["readouts"].items():
        for category, row in rows.items():
            over = ", ".join(str(run["left_out_over_75%"]) for run in row["seeds"])
            _say(args, f"{name:14s} {category:16s} {row['mean_auc']:6.3f} {row['mean_target_auc']:18.3f}   {over} of {row['seeds'][0]['left_out_clips']}")
    write_json(out, result)
    _say(args, f"written to {out}")
    return 0


def folds_arg(text: str) -> list[int]:
    """argparse type: "1,2" -> [1, 2]."""
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give fold numbers separated by commas, e.g. 1,2") from None
    if not folds:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one fold")
    return folds


def feedback_main(args: argparse.Namespace) -> int:
    """oido-train feedback: false events/hour on a left-out category before and after retraining
    on the false alarms heard in --listen-folds (train.feedback)."""
    from train.feedback import feedback_loop, format_feedback

    recipe, experiment = recipe_from_args(args), _experiment_from_args(args)
    out = _reports_folder(args) / f"feedback{_categories_suffix(args.categories)}.json"
    factory = _factory(args)
    task = factory.task
    data_dir = Path(_arg(args, "data_dir", "data"))
    summary = feedback_loop(
        factory, recipe, train_folds=_train_folds(task), test_fold=task.test_fold,
        categories=args.categories, listen_folds=args.listen_folds, retrain_as=args.retrain_as,
        experiment=experiment,
        augment_cache=data_dir / "cache" / "augment", embeddings_cache=data_dir / "cache" / "embeddings",
        work_dir=data_dir / "cache" / "feedback", progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    _say(args, format_feedback(summary))
    write_json(out, summary)
    _say(args, f"written to {out}; the false-alarm clips are in {data_dir / 'cache' / 'feedback'}/")
    return 0


def ablation_main(args: argparse.Namespace) -> int:
    """oido-train ablation: the ablation table (markdown) into <reports-dir>/openset/ablation.md + .json."""
    unknown = sorted(set(args.variants) - set(ABLATION))
    if unknown:
        raise ValueError(f"--variants: unknown variant(s) {unknown}; choose from {list(ABLATION)}")
    experiment = _experiment_from_args(args)
    out = _reports_folder(args)
    factory = _factory(args)
    task = factory.task
    data_dir = Path(_arg(args, "data_dir", "data"))
    detectors = sorted({(1, 1), (args.min_patches, args.of_patches)})
    rows = ablation(
        factory, {name: replace(ABLATION[name], recipe=replace(ABLATION[name].recipe, seed=args.seed)) for name in args.variants},
        train_folds=_train_folds(task), test_fold=task.test_fold,
        detectors=detectors, experiment=experiment, augment_cache=data_dir / "cache" / "augment",
        progress=lambda text: _say(args, f"  {text}"),
    )  # fmt: skip
    table = format_ablation(rows)
    _say(args, table)
    write_json(out / "ablation.json", rows)
    from train.streams import _write_text_atomic

    _write_text_atomic(out / "ablation.md", table + "\n")
    _say(args, f"written to {out / 'ablation.md'} and {out / 'ablation.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser (python -m train.openset_cli COMMAND) with oido-train's shared options."""
    from train.cli import non_negative_int_arg

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    common.add_argument("--data-dir", type=Path, default=Path("data"), metavar="DIR", help="prepared data (default: data)")
    common.add_argument("--model-dir", type=Path, default=Path("model"), metavar="DIR", help="model folder (default: model)")
    common.add_argument("--reports-dir", type=Path, default=Path("reports"), metavar="DIR", help="figures (default: reports)")
    common.add_argument("--assets", type=Path, default=None, metavar="DIR",
                        help="the folder holding esc50/ and yamnet/ (default: $OIDO_ASSETS, else ../shared/assets)")  # fmt: skip
    common.add_argument("--threads", type=non_negative_int_arg, default=0, metavar="N", help="TensorFlow CPU threads (default: 0 = its choice)")
    parser = argparse.ArgumentParser(prog="python -m train.openset_cli", description="Oído open-set training and event-level evaluation.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_subcommands(commands, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command stand-alone (oido-train wires the same functions as its sub-commands)."""
    import sys

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)  # fmt: skip
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    try:
        return int(args.run(args))
    except ValueError as error:  # the project's user errors (and AssetError's message) name the fix
        logger.debug("details", exc_info=True)
        print(f"{build_parser().prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
