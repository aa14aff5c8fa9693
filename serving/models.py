"""Which model versions exist, which are loaded, and which one answers a request.

Mirrors TF Serving's defaults for a file-system model source:
- a model is a directory of numbered version directories (`<model>/<version>/saved_model.pb`);
  other entries (e.g. a Pusher's temporary directory) are ignored;
- the latest version is served (`--num-versions N` keeps the latest N, like
  `model_version_policy { latest { num_versions: N } }`);
- the directory is polled, so a newly pushed version is picked up without a restart, and the
  previous version keeps answering until the new one is AVAILABLE (TF Serving's
  availability-preserving policy);
- a version that fails to load is reported (state END with the error) and never served.

TFX's Pusher copies a model straight into its final directory, writing saved_model.pb last, so a
version is loaded only once saved_model.pb exists and the directory listing (names, sizes,
mtimes) is unchanged between two polls. A load that fails anyway is retried when the directory
changes again, so a copy caught half-way costs one failed attempt, never the served version.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from serving import confine, errors

log = logging.getLogger(__name__)


class State(enum.Enum):
    """ModelVersionStatus.State of TF Serving's GetModelStatus API."""

    START = "START"  # found, waiting until its directory is complete
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"  # unloaded, or failed to load (then `error` says why)


@dataclass
class VersionRecord:
    version: int
    path: str
    state: State = State.START
    error: errors.ServingError | None = None
    servable: object | None = None
    tried_fingerprint: tuple | None = None  # the directory as it was at the last load attempt


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error_code: errors.Code
    error_message: str


Fingerprint = tuple[tuple[str, int, int], ...]
Loader = Callable[[str, int, str], object]


def fingerprint(path: str) -> Fingerprint:
    """Every file under `path` with its size and mtime: equal twice means nothing is writing."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we looked: the directory is changing
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


_INT64 = (-(2**63), 2**63 - 1)


def version_number(name: str) -> int | None:
    """A directory name as a version, as TF Serving parses it (absl::SimpleAtoi): surrounding
    whitespace, a sign and leading zeros are accepted ("007" is version 7); anything else,
    such as a Pusher's ".tmp-..." directory, is not a version."""
    text = name.strip(" \t\n\v\f\r")
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    value = int(text)
    return value if _INT64[0] <= value <= _INT64[1] else None


def _is_version(name: str) -> bool:
    return version_number(name) is not None


@dataclass(frozen=True)
class VersionPolicy:
    """model_version_policy of TF Serving's ModelConfig: which versions are served."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1  # latest: how many (TF Serving serves at least 1)
    versions: tuple[int, ...] = ()  # specific: exactly these, those that exist

    def aspired(self, found: Iterable[int]) -> list[int]:
        found = sorted(set(found))
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-max(self.num_versions, 1) :]


@dataclass(frozen=True)
class ModelSource:
    """One model to serve: its directory of versions, policy and version labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: tuple[tuple[str, int], ...] = ()


def has_saved_model(path: str) -> bool:
    return any(
        os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")
    )


def parse_version_labels(specs: Iterable[str]) -> dict[str, dict[str, int]]:
    """`name:label=version` strings (the --version-labels option) as {name: {label: version}}."""
    labels: dict[str, dict[str, int]] = {}
    for spec in specs:
        try:
            name, assignment = spec.split(":", 1)
            label, version = assignment.split("=", 1)
            labels.setdefault(name, {})[label] = int(version)
        except ValueError:
            raise ValueError(f"expected MODEL:LABEL=VERSION, got {spec!r}") from None
    return labels


class Poller:
    """Calls `poll` in a daemon thread every `seconds` until stop(): the model poller and the
    config-file poller (TF Serving's file-system and config-file poll loops)."""

    def __init__(self, name: str, poll: Callable[[], None]):
        self.name = name
        self._poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        def loop() -> None:
            while not self._stop.wait(seconds):
                self._poll()

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class ModelRegistry:
    """Discovers, loads and unloads versions under a base path; answers lookups.

    `poll()` does the file-system work and the loading (blocking; run it off the event loop).
    `resolve()` and `status()` only read state and are cheap.
    """

    def __init__(
        self,
        base_path: str,
        loader: Loader,
        model_names: Iterable[str] = (),
        num_versions: int = 1,
        version_labels: Mapping[str, Mapping[str, int]] | None = None,
        sources: Iterable[ModelSource] | None = None,
        allow_labels_for_unavailable: bool = False,
        warmup: Callable[[str, int, object], None] | None = None,
    ):
        """Either `base_path` (every model below it, latest `num_versions`, static labels) or
        `sources` (a model config file's models; see `reconfigure`)."""
        if num_versions < 1:
            raise ValueError("num_versions must be >= 1")
        self.base_path = os.path.abspath(base_path) if base_path else ""
        # Where a network reload may point (confine.py); the server sets it for a config file.
        self.model_roots = confine.roots_for(self.base_path, [s.base_path for s in sources or ()])
        self.sources: tuple[ModelSource, ...] | None = None
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self._warmup = warmup
        self.model_names = tuple(model_names)
        self.num_versions = num_versions
        self.version_labels = {k: dict(v) for k, v in (version_labels or {}).items()}
        self._loader = loader
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, VersionRecord]] = {n: {} for n in self.model_names}
        self._last_seen: dict[tuple[str, int], Fingerprint] = {}
        self._poller = Poller("model-poller", self.poll)
        self._poll_lock = threading.Lock()  # one scan at a time (poller, config reloads)
        if sources is not None:
            self.reconfigure(sources)

    # ---- discovery and loading (poll thread) ----

    def reconfigure(self, sources: Iterable[ModelSource]) -> None:
        """Serve exactly these models from now on (a model config file, or a reload request).

        As TF Serving's ServerCore::ReloadConfig: every label must name an AVAILABLE version
        (unless allow_labels_for_unavailable), else FAILED_PRECONDITION and nothing changes;
        models left out are unloaded at the next scan. The new models are scanned before this
        returns, so a reload answers once they are loaded.
        """
        sources = tuple(sources)
        with self._lock:
            for source in sources:
                records = self._models.get(source.name, {})
                for _label, version in source.labels:
                    record = records.get(version)
                    if not self.allow_labels_for_unavailable and (
                        record is None or record.state is not State.AVAILABLE
                    ):
                        raise errors.ServingError(
                            errors.Code.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{source.name}, which is not currently available for inference",
                        )
            self.sources = sources
            self.version_labels = {s.name: dict(s.labels) for s in sources}
        self.poll()
        self.poll()  # a version loads once its directory looks the same twice

    def _policies(self) -> dict[str, VersionPolicy]:
        if self.sources is None:
            return {}
        return {source.name: source.policy for source in self.sources}

    def model_dirs(self) -> dict[str, str]:
        """Model name -> directory. With a config: its models. Otherwise the base path is
        either a directory of models (the Pusher's OUTPUT/serving) or, as with TF Serving's
        --model_base_path, one model's directory."""
        if self.sources is not None:
            return {source.name: source.base_path for source in self.sources}
        if not os.path.isdir(self.base_path):
            return {}
        children = sorted(os.listdir(self.base_path))
        if any(_is_version(child) for child in children):
            name = self.model_names[0] if self.model_names else os.path.basename(self.base_path)
            return {name: self.base_path}
        dirs = {
            child: os.path.join(self.base_path, child)
            for child in children
            if os.path.isdir(os.path.join(self.base_path, child)) and not child.startswith(".")
        }
        if self.model_names:
            dirs = {name: path for name, path in dirs.items() if name in self.model_names}
        return dirs

    def poll(self) -> None:
        """One scan: load what became ready, unload what a newer version replaced."""
        with self._poll_lock:
            dirs = self.model_dirs()
            policies = self._policies()
            default = VersionPolicy("latest", self.num_versions)
            for name in sorted(set(dirs) | set(self._models)):
                try:
                    self._poll_model(name, dirs.get(name), policies.get(name, default))
                except Exception:  # one model's trouble must not stop the others or the poller
                    log.exception("Polling model %s failed", name)

    def _poll_model(self, name: str, model_dir: str | None, policy: VersionPolicy) -> None:
        versions: dict[int, str] = {}
        if model_dir is not None and os.path.isdir(model_dir):
            for child in sorted(os.listdir(model_dir)):
                path = os.path.join(model_dir, child)
                number = version_number(child)
                if number is not None and os.path.isdir(path):
                    versions[number] = path  # duplicates ("1", "01"): one wins, as in TF Serving
        aspired = policy.aspired(versions)
        with self._lock:
            records = self._models.setdefault(name, {})
            for version in aspired:
                if version not in records:
                    records[version] = VersionRecord(version, versions[version])
            # A never-loaded version that is no longer aspired (removed, or overtaken) is dropped.
            for version in [v for v, r in records.items() if r.state is State.START]:
                if version not in aspired:
                    del records[version]

        for version in aspired:
            self._maybe_load(name, records[version])

        with self._lock:
            aspired_available = any(
                records[v].state is State.AVAILABLE for v in aspired if v in records
            )
            to_unload = [
                record
                for version, record in records.items()
                if record.state is State.AVAILABLE
                and version not in aspired
                # Availability preserving: keep the old version until a new one is up, unless
                # its files are gone.
                and (aspired_available or version not in versions)
            ]
            for record in to_unload:
                record.state = State.UNLOADING
        for record in to_unload:
            log.info("Unloading %s version %d", name, record.version)
            with self._lock:
                # Requests that already hold the servable finish with it; new ones resolve to
                # the newer version.
                record.servable = None
                record.state = State.END

    def _maybe_load(self, name: str, record: VersionRecord) -> None:
        current = fingerprint(record.path)
        key = (name, record.version)
        stable = self._last_seen.get(key) == current
        self._last_seen[key] = current
        if not (stable and has_saved_model(record.path)):
            return
        retry = record.state is State.END and (
            record.error is None or record.tried_fingerprint != current
        )
        if record.state is not State.START and not retry:
            return
        with self._lock:
            record.state = State.LOADING
            record.tried_fingerprint = current
        log.info("Loading %s version %d from %s", name, record.version, record.path)
        try:
            servable = self._loader(name, record.version, record.path)
            if self._warmup is not None:  # TF Serving warms up before AVAILABLE
                self._warmup(name, record.version, servable)
        except Exception as exc:  # reported in the status, retried when the files change
            error = errors.from_exception(exc)
            log.error("Loading %s version %d failed: %s", name, record.version, error.message)
            with self._lock:
                record.state, record.error, record.servable = State.END, error, None
            return
        with self._lock:
            record.state, record.error, record.servable = State.AVAILABLE, None, servable
        log.info("%s version %d is AVAILABLE", name, record.version)

    def start(self, poll_seconds: float) -> None:
        """Poll in a daemon thread every `poll_seconds` until stop()."""
        self._poller.start(poll_seconds)

    def stop(self) -> None:
        self._poller.stop()

    # ---- lookups (event loop) ----

    def known_models(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def _label_version(self, name: str, label: str) -> int:
        version = self.version_labels.get(name, {}).get(label)
        if version is None:
            raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
        return version

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        """The servable that answers: the given version or label, else the latest AVAILABLE."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            records = self._models.get(name, {})
            if version is None:
                available = [r for r in records.values() if r.state is State.AVAILABLE]
                if not available:
                    raise errors.not_found(f"Servable not found for request: Latest({name})")
                return max(available, key=lambda r: r.version).servable
            record = records.get(version)
            if record is None or record.state is not State.AVAILABLE:
                raise errors.not_found(
                    f"Servable not found for request: Specific({name}, {version})"
                )
            return record.servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: one version, or every version the server knows (newest first)."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            records = dict(self._models.get(name, {}))
            if version is not None:
                if version not in records:
                    raise errors.not_found(f"Could not find version {version} of model {name}")
                records = {version: records[version]}
            elif not records:
                raise errors.not_found(f"Could not find any versions of model {name}")
            return [
                VersionStatus(
                    r.version,
                    r.state,
                    r.error.code if r.error else errors.Code.OK,
                    r.error.message if r.error else "",
                )
                for r in sorted(records.values(), key=lambda r: -r.version)
            ]
