"""model/manifest.json: what an exported model is, checked before the edge runs it.

The convert step writes it (Manifest(...).write(model_dir)); the edge reads it with
load_manifest(model_dir), which refuses a model whose files, hashes, labels, shapes
or parameters disagree, naming the file and what disagrees.

Schema ("format": "oido-model/1"):
  labels [str] in head output order; background_label str|null; params Params.to_dict();
  thresholds {label: float}; detector {DetectorConfig fields}; yamnet / head:
  {file, sha256, quantization, source_weights_sha256 (yamnet) | source_sha256 (head),
   input {name, index, shape}, outputs {role: {name, index, shape}}};
  audioset_classes [str] (YAMNet's 521 class names in score order, for detector.veto; optional);
  versions {}; evaluation {}; created_utc str.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from edge.detect import DetectorConfig
from edge.errors import ConfigError, ManifestError
from edge.params import Params

logger = logging.getLogger(__name__)

FORMAT = "oido-model/1"
MANIFEST_NAME = "manifest.json"
YAMNET_OUTPUT_ROLES = ("embeddings", "scores", "log_mel")
HEAD_OUTPUT_ROLE = "probabilities"
_SOURCE_KEY = {"yamnet": "source_weights_sha256", "head": "source_sha256"}
_HASH_CHUNK_BYTES = 1 << 20
_FILE_MODE = 0o644

PathArg = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathArg) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One model tensor: its name, its index in the interpreter, its shape (-1: any)."""

    name: str
    index: int
    shape: Tuple[int, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "index": self.index, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, values: Any, *, where: str) -> "TensorSpec":
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be an object with name, index, shape")
        missing = [key for key in ("name", "index", "shape") if key not in values]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        name, index, shape = values["name"], values["index"], values["shape"]
        if not isinstance(name, str) or not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"{where}: name must be a string and index a tensor index >= 0")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise ValueError(f"{where}: shape must be a list of integers")
        return cls(name=name, index=index, shape=tuple(shape))

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> "TensorSpec":
        """From an interpreter tensor detail (shape_signature if present: -1 for any batch)."""
        shape = detail.get("shape_signature")
        if shape is None or len(shape) == 0:
            shape = detail["shape"]
        return cls(name=str(detail["name"]), index=int(detail["index"]), shape=tuple(int(d) for d in shape))

    @property
    def last_dim(self) -> int:
        return self.shape[-1] if self.shape else 1


@dataclass(frozen=True, eq=False)
class ModelFile:
    """One exported .tflite file and the tensors the edge reads."""

    file: str
    """File name, relative to the model directory."""
    sha256: str
    quantization: str
    """How it was quantized, e.g. "float32", "dynamic_int8", "int8"."""
    source_sha256: str
    """sha256 of what it was made from (YAMNet weights / the Keras head)."""
    input: TensorSpec
    outputs: Mapping[str, TensorSpec]

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", MappingProxyType(dict(self.outputs)))

    def to_dict(self, role: str) -> Dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "quantization": self.quantization,
            _SOURCE_KEY[role]: self.source_sha256,
            "input": self.input.to_dict(),
            "outputs": {name: spec.to_dict() for name, spec in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, values: Any, *, role: str) -> "ModelFile":
        if not isinstance(values, Mapping):
            raise ValueError(f'"{role}" must be an object')
        required = ("file", "sha256", "quantization", _SOURCE_KEY[role], "input", "outputs")
        missing = [key for key in required if key not in values]
        if missing:
            raise ValueError(f'"{role}" lacks {missing}')
        for key in ("file", "sha256", "quantization", _SOURCE_KEY[role]):
            if not isinstance(values[key], str):
                raise ValueError(f'"{role}.{key}" must be a string')
        if not isinstance(values["outputs"], Mapping):
            raise ValueError(f'"{role}.outputs" must be an object {{role: tensor}}')
        return cls(
            file=values["file"],
            sha256=values["sha256"],
            quantization=values["quantization"],
            source_sha256=values[_SOURCE_KEY[role]],
            input=TensorSpec.from_dict(values["input"], where=f'"{role}.input"'),
            outputs={
                name: TensorSpec.from_dict(spec, where=f'"{role}.outputs.{name}"')
                for name, spec in values["outputs"].items()
            },
        )


@dataclass(frozen=True, eq=False)
class Manifest:
    """An exported model: labels, parameters, thresholds and its two .tflite files."""

    labels: Tuple[str, ...]
    """Class names in head output order."""
    background_label: Optional[str]
    params: Params
    thresholds: Mapping[str, float]
    yamnet: ModelFile
    head: ModelFile
    detector: Mapping[str, Any] = field(default_factory=dict)
    """DetectorConfig fields other than thresholds/background_label (optional)."""
    audioset_classes: Tuple[str, ...] = ()
    """YAMNet's AudioSet class names in score order (the detector's veto names them); () if unknown."""
    versions: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    format: str = FORMAT
    model_dir: Optional[Path] = None
    """Directory the manifest was loaded from (not serialized)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "audioset_classes", tuple(self.audioset_classes))
        for name in ("thresholds", "detector", "versions", "evaluation"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    # --- paths ---
    @property
    def path(self) -> Path:
        return (self.model_dir or Path(".")) / MANIFEST_NAME

    @property
    def yamnet_path(self) -> Path:
        return (self.model_dir or Path(".")) / self.yamnet.file

    @property
    def head_path(self) -> Path:
        return (self.model_dir or Path(".")) / self.head.file

    # --- detection ---
    def detector_config(self, overrides: Optional[Mapping[str, Any]] = None) -> DetectorConfig:
        """DetectorConfig from the manifest, with `overrides` (DetectorConfig fields) on top.

        Threshold overrides are merged per label over the manifest's thresholds.
        """
        values: Dict[str, Any] = dict(self.detector)
        values.setdefault("background_label", self.background_label)
        thresholds = dict(self.thresholds)
        thresholds.update(values.pop("thresholds", {}) or {})
        extra = dict(overrides or {})
        thresholds.update(extra.pop("thresholds", {}) or {})
        values.update(extra)
        values["thresholds"] = thresholds
        config = DetectorConfig.from_dict(values, source=f"{self.path} detector settings (with overrides)")
        config.check_labels(self.labels)
        try:
            config.veto_indices(self.audioset_classes)
        except ConfigError as error:
            raise ConfigError(f"{self.path} detector settings (with overrides): {error}") from None
        return config

    # --- serialization ---
    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": self.format,
            "labels": list(self.labels),
            "background_label": self.background_label,
            "params": self.params.to_dict(),
            "thresholds": dict(self.thresholds),
            "detector": dict(self.detector),
            **({"audioset_classes": list(self.audioset_classes)} if self.audioset_classes else {}),
            "yamnet": self.yamnet.to_dict("yamnet"),
            "head": self.head.to_dict("head"),
            "versions": dict(self.versions),
            "evaluation": dict(self.evaluation),
            "created_utc": self.created_utc,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, model_dir: PathArg) -> Path:
        """Write model_dir/manifest.json atomically (temp file + os.replace); returns its path."""
        directory = Path(model_dir)
        target = directory / MANIFEST_NAME
        descriptor, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(self.to_json())
            os.chmod(temp_name, _FILE_MODE)  # mkstemp makes it owner-only
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def from_dict(cls, values: Any, *, model_dir: Optional[Path] = None) -> "Manifest":
        """Parse (structure only; load_manifest also checks files and consistency). Raises ValueError."""
        if not isinstance(values, Mapping):
            raise ValueError("the top level must be a JSON object")
        if values.get("format") != FORMAT:
            raise ValueError(f'"format" is {values.get("format")!r}, expected {FORMAT!r}: re-export the model')
        missing = [k for k in ("labels", "params", "yamnet", "head") if k not in values]
        if missing:
            raise ValueError(f"missing {missing}")
        labels = values["labels"]
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ValueError('"labels" must be a list of strings')
        if not isinstance(values["params"], Mapping):
            raise ValueError('"params" must be an object of Params fields')
        try:
            params = Params.from_dict(dict(values["params"]))
        except (TypeError, ValueError) as error:
            raise ValueError(f'"params": {error}') from None
        thresholds = values.get("thresholds") or {}
        if not isinstance(thresholds, Mapping):
            raise ValueError('"thresholds" must be an object {label: probability}')
        detector = values.get("detector") or {}
        if not isinstance(detector, Mapping):
            raise ValueError('"detector" must be an object of detector settings')
        background = values.get("background_label")
        if background is not None and not isinstance(background, str):
            raise ValueError('"background_label" must be a label or null')
        for key in ("versions", "evaluation"):
            if not isinstance(values.get(key) or {}, Mapping):
                raise ValueError(f'"{key}" must be an object')
        audioset_classes = values.get("audioset_classes") or []
        if not isinstance(audioset_classes, list) or not all(isinstance(name, str) for name in audioset_classes):
            raise ValueError('"audioset_classes" must be a list of YAMNet\'s class names')
        return cls(
            labels=tuple(labels),
            background_label=background,
            params=params,
            thresholds=dict(thresholds),
            yamnet=ModelFile.from_dict(values["yamnet"], role="yamnet"),
            head=ModelFile.from_dict(values["head"], role="head"),
            detector=dict(detector),
            audioset_classes=tuple(audioset_classes),
            versions=dict(values.get("versions") or {}),
            evaluation=dict(values.get("evaluation") or {}),
            created_utc=str(values.get("created_utc", "")),
            format=values["format"],
            model_dir=model_dir,
        )

    def with_changes(self, **changes: Any) -> "Manifest":
        return replace(self, **changes)

    # --- checks ---
    def check(self) -> None:
        """Check labels, thresholds, detector settings and declared tensor shapes agree.

        Raises ManifestError naming the manifest file and what disagrees.
        """
        where = self.path
        if not self.labels:
            raise ManifestError(f'{where}: "labels" is empty; the head must have at least one class', path=where)
        if len(set(self.labels)) != len(self.labels):
            duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
            raise ManifestError(f'{where}: "labels" repeats {duplicates}; labels must be unique', path=where)
        if self.background_label is not None and self.background_label not in self.labels:
            raise ManifestError(
                f'{where}: background_label {self.background_label!r} is not in "labels" {list(self.labels)}',
                path=where,
            )
        unknown = sorted(set(self.thresholds) - set(self.labels))
        if unknown:
            raise ManifestError(
                f'{where}: "thresholds" names unknown label(s) {unknown}; labels are {list(self.labels)}', path=where
            )
        try:
            self.detector_config()
        except ConfigError as error:
            raise ManifestError(f"{where}: {error}", path=where) from None
        params = self.params
        if self.audioset_classes and len(self.audioset_classes) != params.yamnet_classes:
            raise ManifestError(
                f'{where}: "audioset_classes" has {len(self.audioset_classes)} names but YAMNet scores '
                f"{params.yamnet_classes} classes; re-export the model",
                path=where,
            )
        expectations = [
            ("yamnet.input", self.yamnet.input, params.patch_samples, "patch_samples"),
            ("head.input", self.head.input, params.embedding_size, "params.embedding_size"),
        ]
        for role in ("embeddings", "scores"):
            if role not in self.yamnet.outputs:
                raise ManifestError(f'{where}: "yamnet.outputs" lacks "{role}"', path=where)
        expectations.append(
            ("yamnet.outputs.embeddings", self.yamnet.outputs["embeddings"], params.embedding_size, "params.embedding_size")
        )
        expectations.append(
            ("yamnet.outputs.scores", self.yamnet.outputs["scores"], params.yamnet_classes, "params.yamnet_classes")
        )
        if HEAD_OUTPUT_ROLE not in self.head.outputs:
            raise ManifestError(f'{where}: "head.outputs" lacks "{HEAD_OUTPUT_ROLE}"', path=where)
        expectations.append(
            ("head.outputs.probabilities", self.head.outputs[HEAD_OUTPUT_ROLE], len(self.labels), "the number of labels")
        )
        for name, spec, size, meaning in expectations:
            if spec.last_dim != size:
                raise ManifestError(
                    f"{where}: {name} has shape {list(spec.shape)} but {meaning} is {size}: "
                    f"the model and the manifest disagree; re-export the model",
                    path=where,
                )
        if "log_mel" in self.yamnet.outputs:
            shape = self.yamnet.outputs["log_mel"].shape
            if tuple(shape[-2:]) != (params.patch_frames, params.mel_bands):
                raise ManifestError(
                    f"{where}: yamnet.outputs.log_mel has shape {list(shape)}, expected "
                    f"[{params.patch_frames}, {params.mel_bands}] from params; re-export the model",
                    path=where,
                )

    def check_files(self, *, verify_hashes: bool = True) -> None:
        """Check both model files exist and (verify_hashes) match their sha256."""
        for role, entry in (("yamnet", self.yamnet), ("head", self.head)):
            file_path = (self.model_dir or Path(".")) / entry.file
            if not file_path.is_file():
                raise ManifestError(
                    f"{file_path}: missing; {self.path} lists it as the {role} model. Copy the whole "
                    f"model directory or re-run `oido-convert`",
                    path=file_path,
                )
            if verify_hashes:
                actual = sha256_file(file_path)
                if actual != entry.sha256:
                    raise ManifestError(
                        f"{file_path}: sha256 {actual[:16]}... does not match {self.path} "
                        f"({entry.sha256[:16]}...): the file changed after export; re-run `oido-convert` "
                        f"or restore the file",
                        path=file_path,
                    )

    def check_interpreter(self, role: str, interpreter: Any) -> None:
        """Check the manifest's tensor specs for `role` ("yamnet"/"head") against a loaded interpreter."""
        entry = self.yamnet if role == "yamnet" else self.head
        file_path = (self.model_dir or Path(".")) / entry.file
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        for name, spec in [("input", entry.input)] + [(f"outputs.{k}", v) for k, v in entry.outputs.items()]:
            detail = details.get(spec.index)
            if detail is None:
                raise ManifestError(
                    f"{file_path}: has no tensor {spec.index}, which {self.path} names as {role}.{name}; "
                    f"the manifest belongs to another model: re-export",
                    path=file_path,
                )
            from edge.runtime import tensor_names

            if spec.name not in tensor_names(detail) and spec.name != detail["name"]:
                raise ManifestError(
                    f"{file_path}: tensor {spec.index} is {detail['name']!r}, but {self.path} names "
                    f"{role}.{name} {spec.name!r}; the manifest belongs to another model: re-export",
                    path=file_path,
                )
            actual = [int(d) for d in detail.get("shape_signature", detail["shape"])]
            if not _shapes_agree(actual, list(spec.shape)):
                raise ManifestError(
                    f"{file_path}: {role}.{name} has shape {actual}, {self.path} says {list(spec.shape)}; "
                    f"the manifest belongs to another model: re-export",
                    path=file_path,
                )


def _shapes_agree(actual: Sequence[int], declared: Sequence[int]) -> bool:
    """Same trailing dims; leading batch dims of 1 / -1 may differ."""
    a = [d for d in actual]
    b = [d for d in declared]
    while len(a) > len(b) and a[0] in (1, -1):
        a.pop(0)
    while len(b) > len(a) and b[0] in (1, -1):
        b.pop(0)
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def read_manifest(model_dir: PathArg) -> Manifest:
    """Parse model_dir/manifest.json without touching the model files. Raises ManifestError."""
    given = Path(model_dir)
    path = given if given.name == MANIFEST_NAME and given.is_file() else given / MANIFEST_NAME
    directory = path.parent
    if not path.is_file():
        raise ManifestError(
            f"{path}: not found; point at a model directory made by `oido-convert` (it holds {MANIFEST_NAME})",
            path=path,
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not valid JSON ({error}); re-run `oido-convert`", path=path) from None
    try:
        return Manifest.from_dict(values, model_dir=directory)
    except (ValueError, TypeError) as error:  # TypeError: a value of a type no check foresaw
        raise ManifestError(f"{path}: {error}", path=path) from None


def load_manifest(model_dir: PathArg, *, verify_hashes: bool = True, check_models: bool = False) -> Manifest:
    """Read and validate model_dir/manifest.json.

    Checks structure, params, labels vs thresholds/background, declared shapes (embedding
    size, head output size vs labels), the model files' presence and sha256, and with
    check_models the tensors of the loaded .tflite files. Raises ManifestError naming the file.
    """
    manifest = read_manifest(model_dir)
    manifest.check()
    manifest.check_files(verify_hashes=verify_hashes)
    if check_models:
        from edge.runtime import load_interpreter

        manifest.check_interpreter(
            "yamnet", load_interpreter(manifest.yamnet_path, preserve_all_tensors=True)
        )
        manifest.check_interpreter("head", load_interpreter(manifest.head_path))
    logger.debug("manifest %s: labels %s", manifest.path, list(manifest.labels))
    return manifest
