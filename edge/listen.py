"""The core of `oido-edge listen` and `oido-edge replay`: a source's blocks through the pipeline to LEDs and logs.

Microphone and file go through the same loop, `run_stream`, which feeds each block to
StreamingPipeline.push() (so files are measured exactly as the Pi hears them) and routes what
comes out: window decisions to the console view, event starts/ends to the LEDs, finished
events to the JSON-lines log and, optionally, their audio to disk. The CLI only parses and
wires objects together.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import numpy.typing as npt

from edge.config import STDOUT, EdgeConfig
from edge.detect import Detector, DetectorConfig, Event, threshold_text
from edge.events import EventAudioSaver, EventLog, event_record
from edge.leds import AnyLedBank, NullLedBank
from edge.params import Params
from edge.pipeline import SILENCE, PatchResult, StepOutput, StreamingPipeline, WindowDecision, voting_mean
from edge.sources import Gap

log = logging.getLogger(__name__)

TOP_CLASSES = 3
"""Classes shown per window in the live console view."""

REANCHOR_TOLERANCE_SECONDS = 0.5
"""With wall-clock times, a block whose capture time differs by more than this from the time the
stream's anchor gives it re-anchors the stream (the system clock was stepped, e.g. by NTP after a
boot without a real-time clock, or the sound card's clock drifted)."""


def detector_config_for(model: DetectorConfig, config: EdgeConfig) -> DetectorConfig:
    """The model's detector settings with the edge config's thresholds laid over them.

    [detection] threshold (or `--threshold 0.6`) replaces every label's threshold, the model's
    per-label ones included; [detection.thresholds] (or `--threshold LABEL=P`) then sets single labels.
    [detection.veto] sets or (with 0) removes single entries of the model's AudioSet veto.
    """
    thresholds = dict(model.thresholds)
    default_threshold = model.default_threshold
    if config.detection.threshold is not None:
        default_threshold = float(config.detection.threshold)
        thresholds = {}
    thresholds.update(config.detection.thresholds)
    veto = {name: score for name, score in {**model.veto, **config.detection.veto}.items() if score > 0}
    return model.with_changes(default_threshold=default_threshold, thresholds=thresholds, veto=veto)


def pipeline_for_rate(
    base: StreamingPipeline,
    input_rate_hz: int,
    *,
    detector_config: Optional[DetectorConfig] = None,
    params: Optional[Params] = None,
) -> StreamingPipeline:
    """A fresh pipeline sharing `base`'s loaded models, for blocks at input_rate_hz.

    detector_config: None = base's detector settings. params: None = base's; otherwise the
    base's with other window decisions (window_params): the models never see them.
    """
    params = base.params if params is None else params
    settings = base.detector.config if detector_config is None else detector_config
    detector = Detector(settings, labels=base.labels, params=params, audioset_classes=base.detector.audioset_classes)
    return StreamingPipeline(
        base.yamnet,
        base.head,
        labels=base.labels,
        params=params,
        detector=detector,
        input_rate_hz=input_rate_hz,
    )


class ConsoleView:
    """Human-readable lines: one per window decision (its top classes) and one per event start/end.

    Quiet unless `enabled` (the CLI enables it on a terminal, or with --verbose; replay always),
    except for the event lines when `events_always` (listen as a service: its journal gets one
    line per event start and end, not one per window).
    """

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        *,
        enabled: bool = True,
        top_k: int = TOP_CLASSES,
        patches: bool = False,
        events_always: bool = False,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.top_k = top_k
        self.patches = patches
        """Also one line per patch (`patch`): why a sound did or did not light its LED."""
        self.events_always = events_always

    def _print(self, line: str, *, event: bool = False) -> None:
        if self.enabled or (event and self.events_always):
            self._stream.write(line + "\n")
            self._stream.flush()

    def window(self, decision: WindowDecision, *, labels: Sequence[str], sample_rate_hz: int,
               offset_seconds: float = 0.0) -> None:
        if not self.enabled:
            return
        if decision.silent:  # its mean is what YAMNet makes of silence: no class to show
            tops = "no audible patch"
        else:
            order = np.argsort(-decision.mean_probabilities)[: self.top_k]
            tops = "  ".join(f"{labels[i]} {decision.mean_probabilities[i]:.2f}" for i in order)
        end = offset_seconds + decision.end_sample / sample_rate_hz
        self._print(f"{end:8.2f} s  window {decision.index:4d}  {decision.shown_label:<16s} | {tops}")

    def patch(self, result: PatchResult, detector: Detector, *, offset_seconds: float = 0.0) -> None:
        """One line per patch when `patches` is on: its end time, level, top classes (each
        non-background class with its onset threshold, `*` at or over it), then what YAMNet's own
        AudioSet classes say, or why the patch holds no evidence (silent, vetoed)."""
        if not (self.enabled and self.patches):
            return
        labels, config = detector.labels, detector.config
        order = np.argsort(-result.probabilities)[: self.top_k]
        tops = []
        for i in order:
            label, probability = labels[i], float(result.probabilities[i])
            if label == config.background_label:
                tops.append(f"{label} {probability:.3f}")
            else:
                threshold = config.threshold_for(label)
                tops.append(f"{label} {probability:.3f}{'*' if probability >= threshold else ''}/{threshold_text(threshold)}")
        why = detector.no_evidence(result)
        if why is not None:
            heard = f"no evidence ({why})"
        elif detector.audioset_classes:
            best = np.argsort(-result.yamnet_scores)[: self.top_k]
            heard = "YAMNet: " + ", ".join(f"{detector.audioset_classes[i]} {result.yamnet_scores[i]:.2f}" for i in best)
        else:
            heard = ""
        end = offset_seconds + (result.start_sample + detector.params.patch_samples) / detector.params.sample_rate_hz
        self._print(f"{end:8.2f} s  patch  {result.index:4d}  {result.rms_dbfs:6.1f} dBFS | {'  '.join(tops)} | {heard}")

    def started(self, event: Event, *, offset_seconds: float = 0.0) -> None:
        self._print(f"{event.start_seconds + offset_seconds:8.2f} s  >>> {event.label} started", event=True)

    def ended(self, record: Mapping[str, Any]) -> None:
        self._print(
            f"{record['end_seconds']:8.2f} s  <<< {record['label']} ended after {record['duration_seconds']:.2f} s "
            f"(peak {record['peak_score']:.2f}, mean {record['mean_score']:.2f})",
            event=True,
        )

    def line(self, text: str) -> None:
        self._print(text)


def transitions_in_order(output: StepOutput, active: Iterable[str]) -> list[tuple[str, Event]]:
    """The event starts and ends of one push or flush in the order they happened: ("started" | "ended", event).

    StepOutput lists its starts and its ends apart, but a push of several patches (blocks of
    0.5 s or more) may end a label's event and start its next one, or start and end a short one.
    Each label's transitions alternate, beginning with an end when the label was active before
    (`active`: the labels with an event in progress); the labels' sequences are merged by time
    (a start at its start_seconds, an end at its end_seconds), ends first at the same time.
    """
    was_active = set(active)
    sequences: list[list[tuple[str, Event]]] = []
    for label in dict.fromkeys(event.label for event in (*output.ended, *output.started)):
        starts = [event for event in output.started if event.label == label]
        ends = [event for event in output.ended if event.label == label]
        sequence: list[tuple[str, Event]] = []
        ending = label in was_active
        while starts or ends:
            if (ending and ends) or not starts:
                sequence.append(("ended", ends.pop(0)))
            else:
                sequence.append(("started", starts.pop(0)))
            ending = sequence[-1][0] == "started"
        sequences.append(sequence)

    def when(transition: tuple[str, Event]) -> tuple[float, bool]:
        kind, event = transition
        seconds = event.start_seconds if kind == "started" else event.end_seconds
        return (event.start_seconds if seconds is None else seconds, kind == "started")

    ordered: list[tuple[str, Event]] = []
    while any(sequences):
        # The earliest next transition of any label; each label's own order is kept whatever the times.
        earliest = min((sequence for sequence in sequences if sequence), key=lambda sequence: when(sequence[0]))
        ordered.append(earliest.pop(0))
    return ordered


@dataclass
class StreamReport:
    """What one run_stream() call did."""

    input_seconds: float = 0.0
    """Audio consumed, in seconds at the source's rate."""
    blocks: int = 0
    patches: int = 0
    window_count: int = 0
    """Window decisions made (kept in `windows` only with keep_history)."""
    event_count: int = 0
    """Events finished (kept in `records` only with keep_history)."""
    events_lost: int = 0
    """Finished events the event log could not write (disk full or read-only)."""
    windows: list[WindowDecision] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    """Finished events, as written to the event log (stream times)."""
    patch_probabilities: list[npt.NDArray[np.float32]] = field(default_factory=list)
    """float32 [num_labels] per patch, when collected (replay)."""
    patch_levels_dbfs: list[float] = field(default_factory=list)
    """RMS level per patch, when collected (it decides which patches vote)."""
    gaps: int = 0
    stopped: bool = False
    """True when stop() ended the run (signal), False at end of source or duration."""
    processing_seconds: float = 0.0
    """Wall time spent inside the pipeline."""

    @property
    def labels_detected(self) -> list[str]:
        return [record["label"] for record in self.records]


def run_stream(
    source: Any,
    pipeline: StreamingPipeline,
    *,
    leds: Optional[AnyLedBank] = None,
    event_log: Optional[EventLog] = None,
    saver: Optional[EventAudioSaver] = None,
    console: Optional[ConsoleView] = None,
    duration_seconds: Optional[float] = None,
    source_name: Optional[str] = None,
    wall_clock: bool = False,
    collect_patches: bool = False,
    keep_history: bool = True,
    clock: Callable[[], float] = time.time,
) -> StreamReport:
    """Feed every block of `source` through `pipeline` until the source ends, stops, or duration_seconds.

    source: has rate_hz, blocks() -> float32 [n, channels] blocks or Gap, stop(), stopped, and
    optionally block_capture_time (POSIX seconds when the last sample of the block just yielded
    was captured; a microphone has it). The pipeline must take blocks at source.rate_hz. On a Gap
    the pipeline is flushed (ending open events) and stream time continues. At the end the
    pipeline is flushed and every class LED is turned off, whatever happened; when the source or
    the pipeline raises, the events in progress are still ended and logged (best effort) before
    the error propagates. LEDs, console and event log follow each push's starts and ends in time
    order (transitions_in_order).

    wall_clock: add *_utc times to the records (live audio). They are anchored at the first block
    (and after each Gap) to its capture time, or to clock() for a source without capture times;
    a block whose capture time strays more than REANCHOR_TOLERANCE_SECONDS from the anchor
    re-anchors them (a clock step, sound-card drift). keep_history: keep every window decision and
    event record in the report (replay, tests); a listener that runs for weeks keeps only the counts.
    """
    if pipeline.input_rate_hz != source.rate_hz:
        raise ValueError(
            f"the pipeline takes blocks at {pipeline.input_rate_hz} Hz but the source delivers "
            f"{source.rate_hz} Hz; build it with pipeline_for_rate(pipeline, source.rate_hz)"
        )
    leds = leds if leds is not None else NullLedBank()
    console = console if console is not None else ConsoleView(enabled=False)
    rate_hz = int(source.rate_hz)
    params = pipeline.params
    report = StreamReport()
    limit = None if duration_seconds is None else round(duration_seconds * rate_hz)
    consumed = 0  # input samples, all segments
    segment_start = 0  # input sample where the pipeline's stream time 0 is
    stream_start_time: Optional[float] = None
    active: set[str] = set()  # labels with an event in progress

    def handle(output: StepOutput) -> None:
        offset = segment_start / rate_hz
        report.patches += len(output.patches)
        if collect_patches:
            report.patch_probabilities.extend(p.probabilities for p in output.patches)
            report.patch_levels_dbfs.extend(p.rms_dbfs for p in output.patches)
        for result in output.patches:
            console.patch(result, pipeline.detector, offset_seconds=offset)
        report.window_count += len(output.windows)
        for window in output.windows:
            if keep_history:
                report.windows.append(window)
            console.window(window, labels=pipeline.labels, sample_rate_hz=params.sample_rate_hz,
                           offset_seconds=offset)
        for kind, event in transitions_in_order(output, active):
            if kind == "started":
                active.add(event.label)
                leds.on(event.label)
                console.started(event, offset_seconds=offset)
                continue
            active.discard(event.label)
            leds.off(event.label)
            audio_path = saver.save(event, wall_time=clock()) if saver is not None else None
            record = event_record(
                event,
                offset_seconds=offset,
                stream_start_time=stream_start_time if wall_clock else None,
                source=source_name,
                audio_path=audio_path,
            )
            report.event_count += 1
            if keep_history:
                report.records.append(record)
            # The log first: a console whose reader went away (`oido-edge listen | head`) must not cost the record.
            if event_log is not None and not event_log.write(record):
                report.events_lost += 1
            console.ended(record)

    def step(work: Callable[[], StepOutput]) -> None:
        started = time.perf_counter()
        output = work()
        report.processing_seconds += time.perf_counter() - started
        handle(output)

    try:
        for item in source.blocks():
            if isinstance(item, Gap):
                report.gaps += 1
                step(pipeline.flush)
                segment_start = consumed
                stream_start_time = None  # re-anchor the wall clock: the outage took real time
                if saver is not None:
                    saver.mark_origin()
                console.line(f"{consumed / rate_hz:8.2f} s  --- audio gap ({item.reason}); stream restarted")
                continue
            block = np.asarray(item, dtype=np.float32)
            block_end = consumed + len(block)  # input sample after this block's last one, all segments
            if limit is not None:
                block = block[: max(0, limit - consumed)]
            capture_time = getattr(source, "block_capture_time", None)
            if stream_start_time is None or (wall_clock and capture_time is not None):
                # This block's last sample was captured at capture_time (or, without one, about now).
                anchor = (clock() if capture_time is None else capture_time) - block_end / rate_hz
                if stream_start_time is None:
                    stream_start_time = anchor
                elif abs(anchor - stream_start_time) > REANCHOR_TOLERANCE_SECONDS:
                    log.info("event times re-anchored by %+.2f s: the capture clock disagrees with the audio's "
                             "sample count (the system clock was stepped, or the sound card's clock drifts)",
                             anchor - stream_start_time)
                    stream_start_time = anchor
            if saver is not None:
                saver.feed(block)
            step(lambda: pipeline.push(block))
            consumed += len(block)
            report.blocks += 1
            if limit is not None and consumed >= limit:
                break
            if source.stopped:
                break
        report.stopped = bool(source.stopped) and (limit is None or consumed < limit)
        step(pipeline.flush)
    except BaseException:
        # The source or the pipeline failed: end the events in progress so they are logged, not lost.
        try:
            step(pipeline.flush)
        except Exception as error:  # noqa: BLE001 - the original failure is the one to report
            log.warning("could not end the events in progress after the failure: %s: %s", type(error).__name__, error)
        raise
    finally:
        report.input_seconds = consumed / rate_hz
        leds.all_off()
    return report


def listen_to(
    source: Any,
    base_pipeline: StreamingPipeline,
    config: EdgeConfig,
    *,
    leds: Optional[AnyLedBank] = None,
    console: Optional[ConsoleView] = None,
    duration_seconds: Optional[float] = None,
    source_name: Optional[str] = None,
    clock: Callable[[], float] = time.time,
) -> StreamReport:
    """What `oido-edge listen` does once its source is open (the soak test runs exactly this).

    run_stream to the LEDs, the event log (config.event_log_target(), wall-clock times) and, when
    config.events.save_dir is set (off by default), the event audio saver. Keeps counts, no
    history, so memory stays flat over weeks.
    """
    pipeline = pipeline_for_rate(base_pipeline, source.rate_hz)
    target = config.event_log_target()
    with EventLog(target) as event_log:
        if target != STDOUT:
            log.info("event log: %s", target)
        saver = None
        if config.events.save_dir is not None:
            events = config.events
            saver = EventAudioSaver(events.save_dir, rate_hz=source.rate_hz, budget_mb=events.budget_mb,
                                    keep=events.keep, pre_roll_seconds=events.pre_roll_seconds,
                                    max_clip_seconds=events.max_clip_seconds, keep_days=events.keep_days)
            log.info("saving event audio to %s (at most %d clips, %.0f MB, %g days)", events.save_dir,
                     events.keep, events.budget_mb, events.keep_days)
        return run_stream(source, pipeline, leds=leds, event_log=event_log, saver=saver, console=console,
                          duration_seconds=duration_seconds, source_name=source_name, wall_clock=True,
                          keep_history=False, clock=clock)


@dataclass(frozen=True)
class ClipSummary:
    """replay's answer for one file."""

    path: str
    label: Optional[str]
    """decide() over the file's audible patches (None for a file too short for a patch)."""
    score: float
    report: StreamReport
    silent: bool = False
    """No patch of the file is audible: `label` is only decide()'s argmax over silence, shown as SILENCE."""


def replay_source(
    source: Any,
    base_pipeline: StreamingPipeline,
    *,
    leds: Optional[AnyLedBank] = None,
    event_log: Optional[EventLog] = None,
    console: Optional[ConsoleView] = None,
    name: str,
) -> ClipSummary:
    """run_stream over a file source, plus the clip decision over its audible patches."""
    pipeline = pipeline_for_rate(base_pipeline, source.rate_hz)
    report = run_stream(
        source, pipeline, leds=leds, event_log=event_log, console=console, source_name=name, collect_patches=True
    )
    if not report.patch_probabilities:
        return ClipSummary(path=name, label=None, score=0.0, report=report)
    audible = pipeline.params.audible(report.patch_levels_dbfs)
    mean = voting_mean(np.stack(report.patch_probabilities), audible)
    index = int(np.argmax(mean))
    return ClipSummary(path=name, label=pipeline.labels[index], score=float(mean[index]), report=report,
                       silent=not bool(np.any(audible)))


def format_summary(summaries: Iterable[ClipSummary]) -> str:
    """One line per replayed file: its decision and its events; for several files, a last line
    of totals: how many files each label was decided for, and how many lit each label."""
    lines = []
    decided: Counter[str] = Counter()
    lit: Counter[str] = Counter()
    dark = 0
    for summary in summaries:
        events = ", ".join(
            f"{r['label']} {r['start_seconds']:.2f}-{r['end_seconds']:.2f} s" for r in summary.report.records
        ) or "no events"
        if summary.label is None:
            label, shown = "(too short)", "(too short) 0.00"
        elif summary.silent:  # no evidence: a score would dress the argmax over silence up as a decision
            label = shown = SILENCE
        else:
            label, shown = summary.label, f"{summary.label} {summary.score:.2f}"
        lines.append(f"{summary.path}: {shown}; {events}")
        decided[label] += 1
        lit.update({r["label"] for r in summary.report.records})
        dark += not summary.report.records
    if len(lines) > 1:
        events = f"files that lit each label: {_counts(lit)}; " if lit else ""
        lines.append(f"{len(lines)} files: decided {_counts(decided)}; {events}{dark} lit nothing")
    return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    """"label count, ..." most first, ties by label."""
    return ", ".join(f"{label} {count}" for label, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
