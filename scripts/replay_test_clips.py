#!/usr/bin/env python3
"""Replay every held-out clip through the Pi's pipeline and check which LEDs light.

Each fold-5 clip of data/testData.json goes through `oido-edge replay`'s code path (FileSource ->
StreamingPipeline -> Detector -> LedBank) with gpiozero's MockFactory standing in for the pins of
scripts/oido.toml. A target clip passes when its own LED lit and no other did; an "other" clip
passes when nothing lit. Prints one line per clip and the totals; writes model/replay_report.json, or
with --threshold model/replay_report_thresholds.json (an experiment must not overwrite the model's own
report), or --report FILE (its folder is made).

A model of your own classes needs no config of its own: each class the config gives no pin gets a
free mock pin (a note on stderr says which), and the config's pins for classes the model lacks are
left out. A missing model or data set is one line on stderr naming the fix (exit status 2).

    python scripts/replay_test_clips.py [--model-dir model] [--data-dir data] [--config scripts/oido.toml]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.cli import load_edge_config, threshold_arg  # noqa: E402
from edge.config import BCM_PINS  # noqa: E402
from edge.errors import ConfigError, OidoError  # noqa: E402
from edge.leds import LedBank, pin_history  # noqa: E402
from edge.listen import detector_config_for, pipeline_for_rate, replay_source  # noqa: E402
from edge.manifest import MANIFEST_NAME  # noqa: E402
from edge.pipeline import load_pipeline  # noqa: E402
from edge.sources import FileSource  # noqa: E402

PROG = Path(__file__).name
EXIT_USAGE = 2
"""A missing or invalid model, data set or config; the message says how to fix it."""
TEST_JSON = "testData.json"
REPORT_NAME = "replay_report.json"
"""The report of the model as exported, in --model-dir."""
THRESHOLD_REPORT_NAME = "replay_report_thresholds.json"
"""The report of a --threshold run, in --model-dir: beside the model's own report, not over it."""
PULLED_UP_PINS = frozenset({2, 3})
"""BCM 2 and 3 (I2C) have fixed pull-ups: they read high before an LED drives them, which the pin
history would count as lit. Never handed out as stand-ins."""


def pins_for_labels(
    configured: Mapping[str, int],
    labels: Sequence[str],
    *,
    background_label: Optional[str],
    reserved: Iterable[int] = (),
) -> dict[str, int]:
    """Mock LED pin per class of the model, in label order: the config's pin where it names one,
    else the lowest BCM pin from 4 up that neither the config nor `reserved` uses. The background
    class gets a pin only if the config names one; pins for classes the model lacks are left out.

    Raises ConfigError when the model has more classes than there are free pins.
    """
    taken = set(configured.values()) | set(reserved) | PULLED_UP_PINS
    free = iter(pin for pin in BCM_PINS if pin not in taken)
    pins: dict[str, int] = {}
    for label in labels:
        if label in configured:
            pins[label] = configured[label]
        elif label != background_label:
            pin = next(free, None)
            if pin is None:
                raise ConfigError(
                    f"the model has {len(labels)} classes, more than the free BCM pins: "
                    "name the classes to watch under [leds.pins] in --config"
                )
            pins[label] = pin
    return pins


def _require(path: Path, *, flag: str, fix: str) -> None:
    """OidoError naming `path` (and the folder a relative one was looked for in) and the fix, if it is missing."""
    if path.is_file():
        return
    where = "" if path.is_absolute() else f" (looked for in {Path.cwd()})"
    raise OidoError(f"{path} not found{where}: {fix}, or run from the repository root, or pass {flag} DIR", path=path)


def report_path(report: Optional[Path], *, model_dir: Path, thresholds_given: bool) -> Path:
    """Where the JSON report goes: `report`, else <model_dir>/replay_report.json, or with --threshold
    <model_dir>/replay_report_thresholds.json. Its folder is made; OidoError naming --report and the fix
    when it is a folder or its folder cannot be made (checked before the replay, not after)."""
    if report is None:
        return model_dir / (THRESHOLD_REPORT_NAME if thresholds_given else REPORT_NAME)
    if report.is_dir():
        raise OidoError(f"--report {report} is a folder: give a file name, e.g. --report {report / REPORT_NAME}",
                        path=report)  # fmt: skip
    try:
        report.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OidoError(f"--report {report}: cannot make its folder {report.parent} ({error.strerror or error}): "
                        "give a file in a folder you can write", path=report) from None
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("model"), help="exported model (default: model)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="prepared data (default: data)")
    parser.add_argument("--config", type=Path, default=REPO / "scripts" / "oido.toml",
                        help="edge config whose [leds.pins] stand in (default: scripts/oido.toml)")
    parser.add_argument("--threshold", type=threshold_arg, action="append", default=[], metavar="[LABEL=]P",
                        help="onset threshold over the model's and the config's, as oido-edge replay takes it "
                             "(crying_baby=0.7; repeatable)")  # fmt: skip
    parser.add_argument("--report", type=Path,
                        help=f"JSON report, its folder made (default: <model-dir>/{REPORT_NAME}; with --threshold "
                             f"<model-dir>/{THRESHOLD_REPORT_NAME})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return replay_test_clips(args)
    except OidoError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE


def replay_test_clips(args: argparse.Namespace) -> int:
    """Replay every clip of <data-dir>/testData.json; print and write the report; returns the exit status."""
    _require(args.model_dir / MANIFEST_NAME, flag="--model-dir", fix="export a model with oido-convert")
    _require(args.data_dir / TEST_JSON, flag="--data-dir", fix="prepare the data with oido-train prepare")
    report = report_path(args.report, model_dir=args.model_dir, thresholds_given=bool(args.threshold))
    from gpiozero.pins.mock import MockFactory

    config = load_edge_config(args)
    pipeline = load_pipeline(args.model_dir)
    # the config's [detection] and --threshold over the model's thresholds, as on the Pi
    pipeline = pipeline_for_rate(pipeline, pipeline.input_rate_hz, detector_config=detector_config_for(pipeline.detector.config, config))
    background = pipeline.detector.config.background_label
    status_pins = [config.leds.status_pin] if config.leds.status_pin is not None else []
    pins = pins_for_labels(config.leds.pins, pipeline.labels, background_label=background, reserved=status_pins)
    added = {label: pin for label, pin in pins.items() if label not in config.leds.pins}
    if added:
        print(f"note: {args.config} [leds.pins] names no pin for {', '.join(added)}; mock pins "
              + ", ".join(f"{label}={pin}" for label, pin in added.items()) + " stand in "
              "(on the Pi, name them in /etc/oido/oido.toml)", file=sys.stderr)  # fmt: skip
    entries = json.loads((args.data_dir / TEST_JSON).read_text())

    rows = []
    for entry in entries:
        path = args.data_dir / "audio" / entry["fileName"]
        factory = MockFactory()
        with LedBank(pins, pin_factory=factory) as leds:
            summary = replay_source(FileSource(path), pipeline, leds=leds, name=entry["fileName"])
            history = pin_history(leds)
        lit = sorted({label for label in pins if any(state for _, state in history.get(label, []))})
        expected = [] if entry["className"] == background else [entry["className"]]
        rows.append(
            {
                "file": entry["fileName"],
                "class": entry["className"],
                "clip_decision": summary.label,
                "lit": lit,
                "events": summary.report.records,
                "ok": lit == expected,
            }
        )
        mark = "ok " if rows[-1]["ok"] else "BAD"
        print(f"{mark} {entry['fileName']:<24} {entry['className']:<13} decision={summary.label:<13} lit={lit}")

    targets = [r for r in rows if r["class"] != background]
    others = [r for r in rows if r["class"] == background]
    totals = {
        "target_clips": len(targets),
        "target_right_led_only": sum(r["ok"] for r in targets),
        "target_clip_decisions_right": sum(r["clip_decision"] == r["class"] for r in targets),
        "other_clips": len(others),
        "other_clips_dark": sum(r["ok"] for r in others),
    }
    print(
        f"targets: {totals['target_right_led_only']}/{totals['target_clips']} lit exactly their own LED "
        f"(clip decisions right: {totals['target_clip_decisions_right']}/{totals['target_clips']}); "
        f"other sounds: {totals['other_clips_dark']}/{totals['other_clips']} left every LED dark"
    )
    thresholds = dict(pipeline.detector.config.thresholds)
    try:
        report.write_text(json.dumps({"totals": totals, "thresholds": thresholds, "clips": rows}, indent=2,
                                     default=float))  # fmt: skip
    except OSError as error:
        raise OidoError(f"cannot write --report {report} ({error.strerror or error}): give a file you can write",
                        path=report) from None  # fmt: skip
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
