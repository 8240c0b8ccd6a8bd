"""Retraining on the device's false alarms (train.feedback, `oido-train feedback`): false alarms
are cut as the Pi's event saver cuts them, join training as training-only background, and are
never streamed for measuring. numpy + soundfile; no TensorFlow (the heads are stand-ins)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("soundfile")

import soundfile  # noqa: E402

from edge.detect import DetectorConfig  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from test_train_openset import LABELS, RandomEmbedder, toy_task  # noqa: E402, F401  (toy_task is a fixture)
from train.feedback import false_alarm_clips, feedback_loop, with_extra_background  # noqa: E402
from train.openset import EXTRA_CATEGORY, FALSE_ALARM_CATEGORY, StreamFactory, Task  # noqa: E402
from train.openset_cli import folds_arg  # noqa: E402
from train.streams import AudioLibrary  # noqa: E402

RATE = DEFAULT_PARAMS.sample_rate_hz


def head_saying(beep: float) -> SimpleNamespace:
    """A stand-in open-set model whose head gives every patch `beep` for "beep"."""

    def predict(embeddings: np.ndarray) -> np.ndarray:
        return np.tile(np.array([beep, 1.0 - beep], np.float32), (len(embeddings), 1))

    detector = DetectorConfig(background_label="other", thresholds={"beep": 0.5}, min_patches=1, of_patches=1)
    return SimpleNamespace(heads=SimpleNamespace(predict=predict), detector=detector)


def factory_of(task: Task) -> StreamFactory:
    return StreamFactory(task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())


def test_each_false_alarm_is_saved_with_its_pre_roll_like_the_pis_event_clips(toy_task: Task, tmp_path: Path) -> None:
    out = tmp_path / "heard"
    paths = false_alarm_clips(factory_of(toy_task), head_saying(0.9), "hiss", listen_folds=[1, 2], out_dir=out,
                              pre_roll_seconds=0.5, max_clip_seconds=1.6)  # fmt: skip
    assert paths and all(p.parent == out and p.name.endswith("-beep.wav") for p in paths)
    for path in paths:
        info = soundfile.info(str(path))
        assert info.samplerate == RATE and info.channels == 1 and info.subtype == "PCM_16"
        assert DEFAULT_PARAMS.patch_seconds <= info.frames / RATE <= 1.6 + 1e-6  # at least one patch, capped


def test_no_false_alarm_writes_no_clip_and_clears_the_previous_run(toy_task: Task, tmp_path: Path) -> None:
    out = tmp_path / "heard"
    out.mkdir()
    (out / "000-beep.wav").write_bytes(b"stale")
    assert false_alarm_clips(factory_of(toy_task), head_saying(0.1), "hum", listen_folds=[1], out_dir=out) == []
    assert list(out.iterdir()) == []


def test_false_alarm_clips_are_trained_on_as_extra_background_and_never_streamed_for_measuring(toy_task: Task, tmp_path: Path) -> None:
    from train.extra_background import folder_clips

    factory = factory_of(toy_task)
    heard = tmp_path / "heard"
    paths = false_alarm_clips(factory, head_saying(0.9), "hiss", listen_folds=[1], out_dir=heard)
    retrained = with_extra_background(factory, heard, cache_dir=tmp_path / "cut", embeddings_cache=None)
    added = retrained.task.clips[len(toy_task.clips) :]
    as_prepare_cuts_them = folder_clips(heard, toy_task.labels, cache_dir=tmp_path / "cut", test_fold=toy_task.test_fold)
    assert paths and [(c.path, c.fold, c.source) for c in added] == [(c.path, c.fold, c.source) for c in as_prepare_cuts_them]
    assert all(c.train_only and c.fold != toy_task.test_fold for c in added)
    assert {(c.label, c.category) for c in added} == {(LABELS.index("other"), EXTRA_CATEGORY)}
    assert all(len(c.embeddings) == len(c.level_db) == len(c.yamnet_scores) > 0 for c in added)
    assert retrained.task.categories == toy_task.categories
    trained_on = {c.path for c in retrained.task.select(exclude_categories=["hiss"])}
    assert {c.path for c in added} <= trained_on  # the left-out category's own clips are not, its false alarms are
    measured = retrained.fold_stream([1, 2], only_categories=["hiss"], target_folds=[2])
    assert EXTRA_CATEGORY not in {c.category for c in measured.nontargets}


def test_as_false_alarms_they_also_join_the_validation_streams_but_never_a_measuring_stream(
    toy_task: Task, tmp_path: Path
) -> None:
    factory = factory_of(toy_task)
    heard = tmp_path / "heard"
    false_alarm_clips(factory, head_saying(0.9), "hiss", listen_folds=[1], out_dir=heard)
    extra = with_extra_background(factory, heard, cache_dir=tmp_path / "cut", embeddings_cache=None)
    alarms = with_extra_background(factory, heard, cache_dir=tmp_path / "cut", embeddings_cache=None, false_alarms=True)
    added = alarms.task.clips[len(toy_task.clips) :]
    assert added and all(c.train_only and c.false_alarm and c.category == FALSE_ALARM_CATEGORY for c in added)
    assert alarms.task.categories == toy_task.categories  # loco never leaves them out, nor measures on them
    folds = sorted({c.fold for c in alarms.task.clips})

    def nontargets(factory: StreamFactory, **kind: bool) -> set[str]:
        return {c.category for c in factory.fold_stream(folds, exclude_categories=["hiss"], **kind).nontargets}

    assert FALSE_ALARM_CATEGORY in nontargets(alarms, validation=True)
    assert FALSE_ALARM_CATEGORY in nontargets(alarms, training=True)
    assert FALSE_ALARM_CATEGORY not in nontargets(alarms)  # a test stream
    assert EXTRA_CATEGORY not in nontargets(extra, validation=True)  # extra background stays out of validation
    assert nontargets(alarms) == nontargets(extra)


def test_retraining_as_an_unknown_kind_is_refused(toy_task: Task, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retrain_as"):
        feedback_loop(factory_of(toy_task), train_folds=[1], test_fold=3, retrain_as="targets", work_dir=tmp_path)


@pytest.mark.parametrize("listen", [[1, 2], [3]])
def test_listening_folds_must_leave_folds_to_measure_on(toy_task: Task, tmp_path: Path, listen: list[int]) -> None:
    with pytest.raises(ValueError, match="listen-folds"):
        feedback_loop(factory_of(toy_task), train_folds=[1], test_fold=2, listen_folds=listen, work_dir=tmp_path)


def test_listen_folds_flag_parses_fold_numbers() -> None:
    assert folds_arg("2, 1,2") == [1, 2]
    for bad in ("", "one", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            folds_arg(bad)


def test_feedback_checks_every_category_before_training_the_first(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import train.feedback as feedback

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a category trained before every --categories name was checked")

    monkeypatch.setattr(feedback, "fit_openset", no_training)
    with pytest.raises(ValueError, match="--categories: 'hsis' is not a background category .* choose from hiss, hum"):
        feedback_loop(factory_of(toy_task), train_folds=[1], test_fold=2, listen_folds=[1], categories=["hiss", "hsis"],
                      work_dir=tmp_path)  # fmt: skip


def test_feedback_with_categories_writes_a_file_named_after_them_after_its_table(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rerun with --categories (README: "Rerun with --categories clock_tick,sneezing") used to
    overwrite the full run's feedback.json."""
    import train.feedback as feedback
    import train.openset_cli as openset_cli
    from train.cli import main

    monkeypatch.setattr(openset_cli, "_factory", lambda args: SimpleNamespace(task=toy_task))
    monkeypatch.setattr(feedback, "feedback_loop", lambda factory, recipe, *, categories, **kwargs: {"categories": categories})
    monkeypatch.setattr(feedback, "format_feedback", lambda summary: f"TABLE {summary['categories']}")
    folders = ["--threads", "0", "--reports-dir", str(tmp_path), "--data-dir", str(tmp_path / "data")]
    assert main(["feedback", "--categories", "hiss,hum", *folders]) == 0
    assert main(["feedback", *folders]) == 0
    assert json.loads((tmp_path / "openset" / "feedback-hiss,hum.json").read_text()) == {"categories": ["hiss", "hum"]}
    assert json.loads((tmp_path / "openset" / "feedback.json").read_text()) == {"categories": None}
    out = capsys.readouterr().out
    assert out.index("TABLE ['hiss', 'hum']") < out.index("written to")
