"""Where the assets come from (train.assets, train.yamnet's lookup, scripts/bench.py's folders):
flags before environment variables before ../shared/assets before the user cache; a location
given that lacks the asset is an error naming it; the ESC-50 download and TF Hub's cache.

No network and no TensorFlow: the downloads come from a local http.server, TF Hub is a fake
``tensorflow_hub`` module, and the weights files are stand-ins (only their presence matters).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
import socket
import sys
import threading
import time
import types
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from train import assets as assets_module
from train import yamnet as yamnet_module
from train.assets import AssetError, find_esc50, is_esc50_dir
from train.yamnet import WEIGHTS_FILE_NAME, find_audioset_classes, load_yamnet

REPO = Path(__file__).resolve().parent.parent
ESC50_CSV_HEADER = "filename,fold,target,category,esc10,src_file,take\n"
CLASS_NAMES = ("Speech", "Music", "Silence")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OIDO_* or TFHUB_CACHE_DIR variables, the repository at tmp_path/repo (so no
    ../shared/assets), the working directory tmp_path/work, the user cache tmp_path/xdg/oido."""
    for name in ("OIDO_ESC50", "OIDO_YAMNET_TFLITE", "OIDO_ASSETS", "TFHUB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(assets_module, "repo_root", lambda: tmp_path / "repo")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def _weights(folder: Path) -> Path:
    """A stand-in weights file in `folder` (the lookup only checks that it is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE_NAME
    path.write_bytes(b"stand-in")
    return path


def _class_map(path: Path, names: tuple[str, ...] = CLASS_NAMES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([index, f"/m/{index}", name] for index, name in enumerate(names))
    return path


# --- the YAMNet weights file: order, and a wrong location ------------------------------------


def test_yamnet_weights_search_order_flags_then_env_then_shared_then_cache(tmp_path: Path) -> None:
    flag_file = _weights(tmp_path / "flag")
    flag_assets = _weights(tmp_path / "flag-assets" / "yamnet").parent.parent
    env_file = _weights(tmp_path / "env")
    env_assets = _weights(tmp_path / "env-assets" / "yamnet").parent.parent
    shared = _weights(tmp_path / "shared" / "assets" / "yamnet")
    cached = _weights(tmp_path / "cache" / "yamnet")
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "repo", "cache_dir": tmp_path / "cache"}
    every_variable = {"OIDO_YAMNET_TFLITE": str(env_file), "OIDO_ASSETS": str(env_assets)}

    find = assets_module.find_yamnet_weights
    assert find(weights_path=flag_file, assets_dir=flag_assets, env=every_variable, **where) == flag_file
    # --assets beats both variables: every flag first
    assert find(assets_dir=flag_assets, env=every_variable, **where) == flag_assets / "yamnet" / WEIGHTS_FILE_NAME
    assert find(env=every_variable, **where) == env_file
    assert find(env={"OIDO_ASSETS": str(env_assets)}, **where) == env_assets / "yamnet" / WEIGHTS_FILE_NAME
    assert find(env={}, **where) == shared.resolve()
    assert find(env={}, **(where | {"root": tmp_path / "x" / "repo"})) == shared.resolve()  # beside the cwd
    nowhere = {"root": tmp_path / "x" / "repo", "cwd": tmp_path / "x" / "y"}
    assert find(env={}, **(where | nowhere)) == cached
    assert find(env={}, **(where | nowhere | {"cache_dir": tmp_path / "none"})) is None


@pytest.mark.parametrize("origin", ["--yamnet-weights", "--assets", "OIDO_YAMNET_TFLITE", "OIDO_ASSETS"])
def test_a_yamnet_location_given_that_lacks_the_file_is_an_error_naming_it(tmp_path: Path, origin: str) -> None:
    _weights(tmp_path / "shared" / "assets" / "yamnet")  # a good copy that must NOT be used instead
    _weights(tmp_path / "cache" / "yamnet")
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "repo", "cache_dir": tmp_path / "cache"}
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong_file = tmp_path / "nonexist" / "yamnet.tflite"
    given: dict[str, Any] = {
        "--yamnet-weights": {"weights_path": wrong_file, "env": {}},
        "--assets": {"assets_dir": empty, "env": {}},
        "OIDO_YAMNET_TFLITE": {"env": {"OIDO_YAMNET_TFLITE": str(wrong_file)}},
        "OIDO_ASSETS": {"env": {"OIDO_ASSETS": str(empty)}},
    }[origin]
    with pytest.raises(AssetError) as raised:
        assets_module.find_yamnet_weights(**given, **where)
    message = str(raised.value)
    if origin in ("--yamnet-weights", "OIDO_YAMNET_TFLITE"):
        assert f"YAMNet weights file {wrong_file} (from {origin}) does not exist: point {origin} at " in message
    else:
        assert f"YAMNet weights not found at {empty / 'yamnet' / WEIGHTS_FILE_NAME} (from {origin})" in message
        assert f"point {origin} at the folder holding yamnet/{WEIGHTS_FILE_NAME}" in message
    missing_folder = tmp_path / "no-such-assets"
    if origin in ("--assets", "OIDO_ASSETS"):
        with pytest.raises(AssetError, match=f"assets folder {missing_folder} \\(from {origin}\\) does not exist"):
            assets_module.find_yamnet_weights(**({"assets_dir": missing_folder, "env": {}} if origin == "--assets"
                                   else {"env": {"OIDO_ASSETS": str(missing_folder)}}), **where)  # fmt: skip


def test_oido_train_embed_with_a_wrong_yamnet_weights_path_exits_2_naming_it(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_train_cli import one_error_line, write_tiny_dataset
    from train.cli import EXIT_USAGE, main

    data = isolated / "data"
    write_tiny_dataset(data)
    wrong = Path("/nonexist/yamnet.tflite")
    argv = ["embed", "--yamnet-weights", str(wrong), "--data-dir", str(data), "--threads", "0"]
    assert main(argv) == EXIT_USAGE
    assert f"YAMNet weights file {wrong} (from --yamnet-weights) does not exist" in one_error_line(capsys)
    assert not (data / "cache").exists()  # nothing embedded with some other YAMNet


def test_the_embedder_and_load_yamnet_refuse_a_wrong_oido_yamnet_tflite(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from train.core import load_embedder

    cached = _weights(isolated / "xdg" / "oido" / "yamnet")
    assert load_embedder().weights_path == cached  # nothing given: the user cache's copy
    monkeypatch.setenv("OIDO_YAMNET_TFLITE", str(isolated / "typo.tflite"))
    with pytest.raises(AssetError, match=r"typo\.tflite \(from OIDO_YAMNET_TFLITE\) does not exist"):
        load_embedder()
    with pytest.raises(AssetError, match=r"typo\.tflite \(from OIDO_YAMNET_TFLITE\) does not exist"):
        load_yamnet()  # oido-convert's path: the same lookup, the same message
    # a flag beats the variable
    assets = _weights(isolated / "assets" / "yamnet").parent.parent
    assert load_embedder(assets_dir=assets).weights_path == assets / "yamnet" / WEIGHTS_FILE_NAME


# --- TF Hub: its cache, a damaged copy, the class map -----------------------------------------


def _fake_tensorflow_hub(monkeypatch: pytest.MonkeyPatch, load: Any) -> None:
    fake = types.ModuleType("tensorflow_hub")
    fake.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow_hub", fake)


def test_tf_hub_downloads_into_the_user_cache_unless_tfhub_cache_dir_is_set(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def load(handle: str) -> Any:
        seen.append(os.environ.get("TFHUB_CACHE_DIR"))
        raise OSError("offline")

    _fake_tensorflow_hub(monkeypatch, load)
    with pytest.raises(AssetError):
        load_yamnet(source="hub")
    assert seen == [str(isolated / "xdg" / "oido" / "tfhub")]  # not tensorflow_hub's /tmp/tfhub_modules
    assert "TFHUB_CACHE_DIR" not in os.environ  # set only while loading

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(isolated / "mine"))
    with pytest.raises(AssetError):
        load_yamnet(source="hub")
    assert seen[-1] == str(isolated / "mine")
    assert yamnet_module.hub_module_dir().parent == isolated / "mine"


def test_a_damaged_tf_hub_cache_names_the_folder_to_delete_and_keeps_the_cause(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = isolated / "xdg" / "oido" / "tfhub" / hashlib.sha1(yamnet_module.HUB_HANDLE.encode()).hexdigest()
    assert yamnet_module.hub_module_dir() == module_dir
    (module_dir / "variables").mkdir(parents=True)  # what tensorflow/hub#896 leaves: no saved_model.pb
    cause = f"SavedModel file does not exist at: {module_dir}/{{saved_model.pbtxt|saved_model.pb}}"

    def load(handle: str) -> Any:
        raise OSError(cause)

    _fake_tensorflow_hub(monkeypatch, load)
    with pytest.raises(AssetError) as raised:
        load_yamnet()  # auto: no weights file anywhere -> TF Hub
    message = str(raised.value)
    assert f"TF Hub's cached YAMNet in {module_dir} does not load ({cause}): delete that folder" in message
    assert "unreachable" not in message and "\n" not in message


def test_offline_tf_hub_keeps_the_cause_and_names_the_flags_in_one_sentence(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load(handle: str) -> Any:
        raise OSError(f"no network: cannot fetch {handle}")

    _fake_tensorflow_hub(monkeypatch, load)
    with pytest.raises(AssetError) as raised:
        load_yamnet()
    message = str(raised.value)
    assert message.startswith("YAMNet weights not found and TF Hub's YAMNet (https://tfhub.dev/google/yamnet/1) "
                              "could not be loaded (no network: cannot fetch https://tfhub.dev/google/yamnet/1): ")  # fmt: skip
    assert f"put {WEIGHTS_FILE_NAME} in " in message and str(isolated / "xdg" / "oido" / "yamnet") in message
    assert "--yamnet-weights FILE" in message and "--assets DIR" in message
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message


class _StringTensor:
    """What a tf.function returning a tf.string gives: .numpy() -> bytes."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def numpy(self) -> bytes:
        return self.value


class _FakeHubModel:
    """TF Hub YAMNet's class_map_path(): the path of the CSV asset inside the SavedModel."""

    def __init__(self, class_map: Path) -> None:
        self.class_map = class_map

    def class_map_path(self) -> _StringTensor:
        return _StringTensor(str(self.class_map).encode())


def test_the_tf_hub_models_class_map_gives_the_names_and_is_found_later(isolated: Path) -> None:
    hub_asset = _class_map(isolated / "xdg" / "oido" / "tfhub" / "abc" / "assets" / "yamnet_class_map.csv")
    assert find_audioset_classes() == ()  # hub weights and no class map kept: the veto would be lost

    assert yamnet_module.hub_class_names(_FakeHubModel(hub_asset)) == CLASS_NAMES
    kept = isolated / "xdg" / "oido" / "yamnet" / "yamnet_class_map.csv"
    assert kept.read_bytes() == hub_asset.read_bytes()
    assert find_audioset_classes() == CLASS_NAMES  # what train.openset asks, weights_path None
    assert find_audioset_classes(assets_dir=None) == CLASS_NAMES
    assert sorted(path.name for path in kept.parent.iterdir()) == ["yamnet_class_map.csv"]  # no partial file left


def test_a_hub_model_without_a_class_map_gives_no_names_and_keeps_nothing(isolated: Path) -> None:
    assert yamnet_module.hub_class_names(object()) == ()
    assert not (isolated / "xdg" / "oido" / "yamnet").exists()


# --- the ESC-50 download, from a local server -------------------------------------------------


@pytest.fixture
def archive_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, tuple[bytes, int]]]]:
    """(base URL, routes): routes[path] = (body, Content-Length it declares) on 127.0.0.1."""
    routes: dict[str, tuple[bytes, int]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path not in routes:
                self.send_error(404)
                return
            body, declared = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)  # fewer bytes than declared: the connection then closes

        def log_message(self, *args: Any) -> None:
            pass

    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _esc50_zip(*, padding_bytes: int = 0) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        zipped.writestr("ESC-50-master/meta/esc50.csv", ESC50_CSV_HEADER)
        zipped.writestr("ESC-50-master/audio/1-1-A-0.wav", np.random.default_rng(0).bytes(padding_bytes) or b"RIFF")
    return archive.getvalue()


def _age(folder: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (stamp, stamp))


def test_a_download_removes_what_killed_downloads_left_and_spares_a_live_one(
    tmp_path: Path, archive_server: tuple[str, dict[str, tuple[bytes, int]]]
) -> None:
    base, routes = archive_server
    payload = _esc50_zip()
    routes["/esc50.zip"] = (payload, len(payload))
    cache = tmp_path / "cache"
    killed = cache / ".esc50-download-killed"
    killed.mkdir(parents=True)
    (killed / "esc50.zip").write_bytes(b"PK" * 1000)  # a SIGKILL'd download's partial archive
    _age(killed, 2 * 24 * 3600)
    live = cache / ".esc50-download-live"
    live.mkdir()
    (live / "esc50.zip").write_bytes(b"PK")  # being written right now by another process
    _age(live, 25 * 3600)
    os.utime(live / "esc50.zip")  # ... its archive was written a moment ago

    found = find_esc50(env={}, root=tmp_path / "repo", cwd=tmp_path / "repo", cache_dir=cache, progress=False,
                       url=f"{base}/esc50.zip")  # fmt: skip

    assert found == cache / "esc50" and is_esc50_dir(found)
    assert sorted(os.listdir(cache)) == [".esc50-download-live", "esc50"]


def test_a_download_cut_short_says_interrupted_after_x_of_y_mb(
    tmp_path: Path, archive_server: tuple[str, dict[str, tuple[bytes, int]]]
) -> None:
    base, routes = archive_server
    payload = _esc50_zip(padding_bytes=3_000_000)
    half = len(payload) // 2
    routes["/esc50.zip"] = (payload[:half], len(payload))
    cache = tmp_path / "cache"
    with pytest.raises(AssetError) as raised:
        find_esc50(env={}, root=tmp_path / "repo", cwd=tmp_path / "repo", cache_dir=cache, progress=False,
                   url=f"{base}/esc50.zip")  # fmt: skip
    message = str(raised.value)
    assert f"interrupted after {half / 1e6:.1f} of {len(payload) / 1e6:.1f} MB" in message
    assert "zip file" not in message
    assert os.listdir(cache) == []  # the scratch folder went with the failure


def test_offline_esc50_names_the_flags_and_the_shared_assets_in_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connection refused, no network
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "cache"
    with pytest.raises(AssetError) as raised:
        find_esc50(env={}, root=tmp_path / "repo", cwd=tmp_path / "repo", cache_dir=cache, progress=False,
                   url=f"http://127.0.0.1:{port}/esc50.zip")  # fmt: skip
    message = str(raised.value)
    shared = (tmp_path / "shared" / "assets" / "esc50").resolve()
    assert message.startswith(f"ESC-50 not found: put the ESC-50 folder (audio/ + meta/esc50.csv) at {shared} "
                              f"or {cache / 'esc50'}, or pass --esc50 PATH or --assets DIR")  # fmt: skip
    assert "download failed: " in message and "\n" not in message


# --- scripts/bench.py's folders ---------------------------------------------------------------


def _bench(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("oido_bench_for_assets", REPO / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_caches_in_the_user_cache_even_with_an_empty_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.chdir(tmp_path)
    assert bench.parse_args([]).cache_dir is None
    assert bench.default_cache_dir() == tmp_path / "home" / ".cache" / "oido" / "bench"  # not ./oido/bench
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bench.default_cache_dir() == tmp_path / "xdg" / "oido" / "bench"


def test_bench_finds_the_assets_as_oido_train_does(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench(monkeypatch)
    from_env = isolated / "env-assets"
    from_flag = isolated / "flag-assets"
    from_env.mkdir()
    from_flag.mkdir()
    monkeypatch.setenv("OIDO_ASSETS", str(from_env))
    assert bench.parse_args([]).assets_dir is None
    assert bench.find_assets(None) == from_env.resolve()
    assert bench.find_assets(from_flag) == from_flag.resolve()
    with pytest.raises(FileNotFoundError, match="from --assets-dir"):
        bench.find_assets(isolated / "missing")


def test_assets_pointed_at_the_esc50_folder_finds_yamnet_beside_it(tmp_path: Path) -> None:
    """--assets accepts the ESC-50 folder itself (data/README.md); YAMNet is then the yamnet/
    folder beside it, as before the lookup was made strict."""
    esc50 = tmp_path / "assets" / "esc50"
    (esc50 / "meta").mkdir(parents=True)
    (esc50 / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n")
    (esc50 / "audio").mkdir()
    beside = _weights(tmp_path / "assets" / "yamnet")
    _weights(tmp_path / "cache" / "yamnet")  # a copy that must not be used instead
    where = {"root": tmp_path / "repo", "cwd": tmp_path / "repo", "cache_dir": tmp_path / "cache", "env": {}}
    assert assets_module.find_yamnet_weights(assets_dir=esc50, **where) == beside
    (beside).unlink()
    with pytest.raises(AssetError, match=f"YAMNet weights not found at {beside} \\(from --assets\\)"):
        assets_module.find_yamnet_weights(assets_dir=esc50, **where)
