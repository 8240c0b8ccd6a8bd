"""Turn per-patch class probabilities into sound events (what lights an LED).

Detection runs on every YAMNet patch (every 0.48 s), so a sound is reported
within about 1.5 s of its onset. Per class:

- onset: at least `min_patches` of the last `of_patches` patches score at or
  above the class threshold (k-of-n smoothing against single-patch blips);
- sustain: while active, a patch scoring at or above the release threshold
  (hysteresis: release <= onset threshold) keeps the event alive;
- release: the event ends once no patch has sustained it for `hold_seconds`,
  so an LED does not flicker through short dips.

The background label (e.g. "other") never produces events, and a patch that is silent or
vetoed (YAMNet's own AudioSet scores say e.g. music, `veto`) holds no evidence for any class.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
from collections import deque
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS, Params

if TYPE_CHECKING:  # pragma: no cover
    from edge.pipeline import PatchResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One detected sound. Times are stream time in seconds (0 = first sample pushed)."""

    label: str
    """Class name, as in the manifest's labels."""
    start_seconds: float
    """Start of the first patch that counted towards the onset."""
    end_seconds: Optional[float]
    """End of the last patch that sustained the event; None while still active."""
    peak_score: float
    """Highest class probability over the event's patches."""
    mean_score: float
    """Mean class probability over the event's patches (onset patch .. last sustaining patch)."""

    @property
    def active(self) -> bool:
        return self.end_seconds is None

    @property
    def duration_seconds(self) -> Optional[float]:
        return None if self.end_seconds is None else self.end_seconds - self.start_seconds


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings; every field may be set in the manifest's "detector" and overridden."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Onset threshold per label (probability in (0, 1]); labels not listed use default_threshold."""
    default_threshold: float = 0.5
    """Onset threshold for labels without their own."""
    release_threshold: Optional[float] = None
    """Probability a patch needs to sustain an active event (capped at each label's threshold);
    None: release_fraction x the label's threshold."""
    release_fraction: float = 0.5
    """Release threshold as a fraction of the onset threshold, when release_threshold is None."""
    hold_seconds: float = 1.0
    """How long an event outlives its last sustaining patch (keeps LEDs from flickering)."""
    min_patches: int = 2
    """k of k-of-n: patches at or above threshold needed among the last of_patches."""
    of_patches: int = 3
    """n of k-of-n: how many recent patches the onset rule looks at."""
    background_label: Optional[str] = None
    """Label that never produces events (the "nothing of interest" class), or None."""
    veto: Mapping[str, float] = field(default_factory=dict)
    """YAMNet AudioSet class (display name, e.g. "Music") -> score: a patch where YAMNet scores
    that class at least this high holds no evidence, like a silent patch (it cannot start or
    sustain an event). Training chooses it above every training target patch's score."""

    def __post_init__(self) -> None:
        # A manifest is JSON edited by hand: NaN, 3.0 or true must be refused here, naming the
        # setting, not crash the Detector later (or, for a NaN hold, keep an event open for ever).
        for name in ("thresholds", "veto"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} is {getattr(self, name)!r}; use an object of name -> probability")
        thresholds = dict(self.thresholds)
        for label, value in thresholds.items():
            if not _is_probability(value):
                raise ConfigError(
                    f"detector threshold for {label!r} is {value!r}; use a probability in (0, 1]"
                )
        object.__setattr__(self, "thresholds", MappingProxyType({k: float(v) for k, v in thresholds.items()}))
        veto = dict(self.veto)
        for name, value in veto.items():
            if not _is_probability(value):
                raise ConfigError(f"veto score for AudioSet class {name!r} is {value!r}; use a score in (0, 1]")
        object.__setattr__(self, "veto", MappingProxyType({str(k): float(v) for k, v in veto.items()}))
        if not _is_probability(self.default_threshold):
            raise ConfigError(
                f"default_threshold is {self.default_threshold!r}; use a probability in (0, 1]"
            )
        if self.release_threshold is not None and not _is_probability(self.release_threshold):
            raise ConfigError(
                f"release_threshold is {self.release_threshold!r}; use a probability in (0, 1] or null"
            )
        if not _is_probability(self.release_fraction):
            raise ConfigError(f"release_fraction is {self.release_fraction!r}; use a value in (0, 1]")
        if not (_is_number(self.hold_seconds) and math.isfinite(self.hold_seconds) and self.hold_seconds >= 0):
            raise ConfigError(f"hold_seconds is {self.hold_seconds!r}; use a finite number of seconds >= 0, e.g. 1.0")
        for name in ("min_patches", "of_patches"):
            count = getattr(self, name)
            if not isinstance(count, numbers.Integral) or isinstance(count, bool):
                raise ConfigError(f"{name} is {count!r}; use a whole number of patches (e.g. 2, not 2.0 or true)")
            object.__setattr__(self, name, int(count))
        if self.of_patches < 1 or not 1 <= self.min_patches <= self.of_patches:
            raise ConfigError(
                f"min_patches={self.min_patches}, of_patches={self.of_patches}: need "
                f"1 <= min_patches <= of_patches"
            )

    def threshold_for(self, label: str) -> float:
        """Onset threshold of `label`."""
        return self.thresholds.get(label, self.default_threshold)

    def release_for(self, label: str) -> float:
        """Sustain (release) threshold of `label`; never above its onset threshold."""
        onset = self.threshold_for(label)
        if self.release_threshold is None:
            return onset * self.release_fraction
        return min(self.release_threshold, onset)

    def with_changes(self, **changes: Any) -> "DetectorConfig":
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (the manifest's "detector" entry, thresholds included)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["thresholds"] = dict(self.thresholds)
        values["veto"] = dict(self.veto)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "detector settings") -> "DetectorConfig":
        """Build from a dict (manifest "detector" entry, config file section).

        `source` names where the values came from, for the error message.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown detector setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(values))
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        except TypeError as error:
            raise ConfigError(f"{source}: {error}") from None

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raise ConfigError if thresholds or background_label name a label not in `labels`."""
        unknown = sorted(set(self.thresholds) - set(labels))
        if unknown:
            raise ConfigError(
                f"thresholds given for unknown label(s) {unknown}; the model's labels are {list(labels)}"
            )
        if self.background_label is not None and self.background_label not in labels:
            raise ConfigError(
                f"background_label {self.background_label!r} is not one of the model's labels "
                f"{list(labels)}; use one of them or null"
            )

    def veto_indices(self, audioset_classes: Optional[Sequence[str]]) -> Tuple[Tuple[int, float], ...]:
        """(AudioSet class index, score) of each veto entry, looked up in YAMNet's class names.

        Raises ConfigError for a name YAMNet does not have, or when there is a veto and no names.
        """
        if not self.veto:
            return ()
        if not audioset_classes:
            raise ConfigError(
                f"the detector's veto names AudioSet classes {sorted(self.veto)} but YAMNet's class names are "
                f"not known: re-export the model with oido-convert (the manifest carries them), or drop the veto"
            )
        index = {name: number for number, name in enumerate(audioset_classes)}
        resolved = []
        for name, score in self.veto.items():
            why = unknown_audioset_class(name, audioset_classes)
            if why is not None:
                raise ConfigError(f"veto: {why}")
            resolved.append((index[name], score))
        return tuple(resolved)


def unknown_audioset_class(name: str, audioset_classes: Sequence[str]) -> Optional[str]:
    """None when `name` is one of YAMNet's class names (`audioset_classes`, score order), else why
    not, with the closest names: "'Musci' is not one of YAMNet's 521 AudioSet classes; did you mean [...]?"."""
    if name in audioset_classes:
        return None
    close = difflib.get_close_matches(name, list(audioset_classes), n=3)
    hint = f"; did you mean {close}?" if close else ""
    return f"{name!r} is not one of YAMNet's {len(audioset_classes)} AudioSet classes{hint}"


def threshold_text(value: float, digits: int = 4) -> str:
    """A threshold or score as text, `digits` significant digits, more where fewer would round a
    probability that is not 1 up to "1": a threshold of 0.9999939 reads 0.99999, not 1."""
    text = f"{value:.{digits}g}"
    while 0.0 < value < 1.0 and float(text) >= 1.0 and digits < 9:
        digits += 1
        text = f"{value:.{digits}g}"
    return text


def thresholds_text(thresholds: Mapping[str, float]) -> str:
    """"label threshold, ..." as printed by training, calibration and evaluation."""
    return ", ".join(f"{label} {threshold_text(value)}" for label, value in thresholds.items())


def _is_number(value: Any) -> bool:
    """A real number, not a bool (JSON's true is a Python int)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_probability(value: Any) -> bool:
    """A number in (0, 1] (NaN and infinity are not)."""
    return _is_number(value) and 0.0 < float(value) <= 1.0


class _LabelState:
    """Onset history and the active event of one label.

    An event's peak and mean cover its onset patch .. its last sustaining patch. They are kept
    as running values over the patches up to the last sustaining one, plus `pending`: the scores
    since then, folded in (in order, so the sum is the same float as summing the whole list) when
    another patch sustains the event and dropped when it ends. `pending` spans at most the hold
    time, so the state stays the same size however long an event lasts.
    """

    def __init__(self, of_patches: int) -> None:
        self.recent: Deque[Tuple[int, float, bool]] = deque(maxlen=of_patches)  # (start, prob, positive)
        self.active = False
        self.start_sample = 0
        self.last_sustain_start = 0
        self.peak_score = 0.0  # highest probability, onset patch .. last sustaining patch
        self.score_sum = 0.0  # sum of those probabilities, added in patch order
        self.score_count = 0  # how many patches that is
        self.pending: List[float] = []  # probabilities of the patches since the last sustaining one

    def clear(self) -> None:
        self.recent.clear()
        self.active = False
        self.peak_score = 0.0
        self.score_sum = 0.0
        self.score_count = 0
        self.pending = []

    def sustain(self, scores: Sequence[float]) -> None:
        """Count the pending patches and `scores` (ending with a sustaining patch) into the event."""
        for score in (*self.pending, *scores):
            self.peak_score = score if self.score_count == 0 else max(self.peak_score, score)
            self.score_sum += score
            self.score_count += 1
        self.pending = []


class Detector:
    """Per-patch event detector over the labels of one head.

    `labels` are in head output order; `params` gives the sample rate and patch length
    used to turn sample positions into seconds.
    """

    def __init__(
        self,
        config: Optional[DetectorConfig] = None,
        *,
        labels: Sequence[str],
        params: Params = DEFAULT_PARAMS,
        audioset_classes: Optional[Sequence[str]] = None,
    ) -> None:
        self.config = DetectorConfig() if config is None else config
        self.labels: Tuple[str, ...] = tuple(labels)
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ConfigError(f"detector labels must be unique and non-empty, got {list(labels)}")
        self.config.check_labels(self.labels)
        self.params = params
        self._hold_samples = self.config.hold_seconds * params.sample_rate_hz
        self._silent_patch_dbfs = params.silent_patch_dbfs
        self.audioset_classes: Tuple[str, ...] = tuple(audioset_classes or ())
        """YAMNet's class names (the veto names them); () if unknown."""
        self._veto = self.config.veto_indices(self.audioset_classes)
        self._watched = [
            (i, label, self.config.threshold_for(label), self.config.release_for(label))
            for i, label in enumerate(self.labels)
            if label != self.config.background_label
        ]
        self._states = {label: _LabelState(self.config.of_patches) for _, label, _, _ in self._watched}

    # --- state ---
    def reset(self) -> None:
        """Forget all history and active events (no events are reported)."""
        for state in self._states.values():
            state.clear()

    @property
    def active_labels(self) -> Tuple[str, ...]:
        """Labels with an event in progress, in label order."""
        return tuple(label for _, label, _, _ in self._watched if self._states[label].active)

    # --- updates ---
    def update(self, patch: "PatchResult") -> Tuple[List[Event], List[Event]]:
        """Feed one patch's probabilities; return (events started, events ended) by this patch.

        Started events have end_seconds None; ended ones carry their final times and scores.
        A patch quieter than params.silent_patch_dbfs, or vetoed (config.veto: YAMNet hears e.g.
        music in it), holds no evidence: it scores 0 for every label (it cannot start or sustain
        an event).
        """
        probabilities = patch.probabilities
        if len(probabilities) != len(self.labels):
            raise ValueError(
                f"patch {patch.index} has {len(probabilities)} probabilities but the detector "
                f"has {len(self.labels)} labels {list(self.labels)}; build the Detector with the head's labels"
            )
        started: List[Event] = []
        ended: List[Event] = []
        audible = self.no_evidence(patch) is None
        for index, label, onset, release in self._watched:
            state = self._states[label]
            score = float(probabilities[index]) if audible else 0.0
            positive = score >= onset
            state.recent.append((patch.start_sample, score, positive))
            if state.active:
                if score >= release:
                    state.last_sustain_start = patch.start_sample
                    state.sustain([score])
                elif patch.start_sample - state.last_sustain_start > self._hold_samples:
                    ended.append(self._finish(label, state, end_sample=None))
                else:
                    state.pending.append(score)
            elif sum(1 for _, _, p in state.recent if p) >= self.config.min_patches:
                first = next(i for i, (_, _, p) in enumerate(state.recent) if p)
                onset_patches = list(state.recent)[first:]
                state.active = True
                state.start_sample = onset_patches[0][0]
                state.last_sustain_start = patch.start_sample
                state.sustain([s for _, s, _ in onset_patches])
                event = self._event(label, state, end_seconds=None)
                logger.debug("event started: %s", event)
                started.append(event)
        return started, ended

    def no_evidence(self, patch: "PatchResult") -> Optional[str]:
        """Why `patch` holds no evidence for any class ("silent: -131.2 dBFS < -90", "vetoed: Music
        0.82 >= 0.75"), or None when it does."""
        if not patch.rms_dbfs >= self._silent_patch_dbfs:
            return f"silent: {patch.rms_dbfs:.1f} dBFS < {self._silent_patch_dbfs:g}"
        for index, score in self._veto:
            heard = float(patch.yamnet_scores[index])
            if heard >= score:
                return f"vetoed: {self.audioset_classes[index]} {heard:.2f} >= {score:g}"
        return None

    def close(self, end_sample: Optional[int] = None) -> List[Event]:
        """End every active event (stream stopped); `end_sample` caps their end time."""
        ended = [
            self._finish(label, self._states[label], end_sample=end_sample)
            for _, label, _, _ in self._watched
            if self._states[label].active
        ]
        self.reset()
        return ended

    # --- helpers ---
    def _event(self, label: str, state: _LabelState, *, end_seconds: Optional[float]) -> Event:
        return Event(
            label=label,
            start_seconds=state.start_sample / self.params.sample_rate_hz,
            end_seconds=end_seconds,
            peak_score=state.peak_score,
            mean_score=state.score_sum / state.score_count,
        )

    def _finish(self, label: str, state: _LabelState, *, end_sample: Optional[int]) -> Event:
        end = state.last_sustain_start + self.params.patch_samples
        if end_sample is not None:
            end = max(state.start_sample, min(end, end_sample))
        event = self._event(label, state, end_seconds=end / self.params.sample_rate_hz)
        logger.debug("event ended: %s", event)
        state.clear()
        return event
