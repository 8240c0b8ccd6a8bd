#!/usr/bin/env python3
"""Replay every held-out clip through the Pi's pipeline and check which LEDs light.

Each fold-5 clip of data/testData.json goes through `oido-edge replay`'s code path (FileSource ->
StreamingPipeline -> Detector -> LedBank) with gpiozero's MockFactory standing in for the pins of
scripts/oido.toml. A target clip passes when its own LED lit and no other did; an "other" clip
passes when nothing lit. Prints one line per clip and the totals; writes model/replay_report.json.

    python scripts/replay_test_clips.py [--model-dir model] [--data-dir data] [--config scripts/oido.toml]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import load_config  # noqa: E402
from edge.leds import LedBank, pin_history  # noqa: E402
from edge.listen import replay_source  # noqa: E402
from edge.pipeline import load_pipeline  # noqa: E402
from edge.sources import FileSource  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("model"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--config", type=Path, default=REPO / "scripts" / "oido.toml")
    parser.add_argument("--report", type=Path, help="JSON report (default: <model-dir>/replay_report.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from gpiozero.pins.mock import MockFactory

    config = load_config(args.config)
    pipeline = load_pipeline(args.model_dir)
    background = pipeline.detector.config.background_label
    pins = {label: pin for label, pin in config.leds.pins.items() if label in pipeline.labels}
    entries = json.loads((args.data_dir / "testData.json").read_text())

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
    report = args.report or args.model_dir / "replay_report.json"
    report.write_text(json.dumps({"totals": totals, "clips": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
