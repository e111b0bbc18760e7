"""The model registry: immutable version folders and an atomically switched champion pointer.

Layout under ``root``::

    versions/<version>/       HF weights + tokenizer + metadata.json (never changed after register,
                              except metadata.json, which is replaced atomically, and the ONNX
                              cache of model.onnx_runtime)
    champion.json             {"champion": <version>, "history": [{"version", "promoted_at"}, ...],
                               "sequence": <int>, "registry_id": <hex>}
    .lock                     flock taken by writers (register, promote, rollback, update, prune)

A version folder is assembled in a temporary folder and renamed into place, and the pointer is
written to a temporary file and ``os.replace``-d, so a reader that resolves ``champion`` always
gets a complete folder. ``prune`` renames a version out of ``versions/`` before deleting it, so
a version is either whole or gone (which versions go: :mod:`model.retention`), and leaves a
version that a running worker scores with (:class:`VersionHold`); ``discard`` deletes a single
version the same way (a retrain's challenger that was never judged). Both check for a hold with an exclusive flock on
the version's config.json that they keep until it is renamed out, so a hold taken meanwhile waits, then finds the
version gone (:class:`VersionGone`), instead of holding a folder about to be deleted. Metadata is mirrored to the
``finsent-models`` index when an Elasticsearch client is given; a mirror failure is logged, never
fatal (the files are the truth).

Each champion move (a promotion that changes the champion, the first one included, and a rollback) adds one to
``sequence`` under the lock, so the numbers order the moves of this registry as they happened, whatever the clocks
say; a control message carries the move's number and ``registry_id`` (:class:`Pointer`), and a worker ignores one
that is not newer than the last it applied from the same registry (:class:`stream.control.MoveOrder`). The id is
minted with the first move; a copy of the folder keeps it, so a copy that only follows this registry is ordered
with it, but moves made on a copy are not (its numbers run on from the copy's own). A pointer an older release
wrote has neither: its sequence counts as 0, and the next move mints the id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from model import requirements

log = logging.getLogger(__name__)

CHAMPION = "champion"
METADATA = "metadata.json"
_VERSION = re.compile(r"^v\d{8}-\d{6}-[0-9a-f]{4}$")
REGISTRY_ID = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")  # minted as 16 hex digits; ControlMessage.registry_id: the same


class RegistryError(LookupError):
    """A version or reference the registry does not know, or an impossible operation."""


class VersionInUse(RegistryError):
    """:meth:`Registry.discard` of a version that is or was champion, or that a worker holds: it stays."""


class ChampionChanged(RegistryError):
    """:meth:`Registry.promote` with ``expected``: the champion is another version by now."""

    def __init__(self, expected: str, actual: str | None) -> None:
        super().__init__(f"the champion is {actual or 'none'} now, not {expected}")
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class Pointer:
    """The champion, the sequence number of the move that made it champion (0: none yet, or a pointer an older
    release wrote) and the registry's identity (None until the first move of this release)."""

    champion: str | None
    sequence: int
    registry_id: str | None

    def control_fields(self) -> dict[str, Any]:
        """``sequence`` and ``registry_id`` of the control message that announces this champion (none before the
        registry's first move of this release: then workers apply the message as it comes)."""
        if not self.sequence or self.registry_id is None:
            return {}
        return {"sequence": self.sequence, "registry_id": self.registry_id}

    @classmethod
    def of(cls, pointer: dict[str, Any]) -> Pointer:
        """The pointer as ``champion.json`` holds it (checked by :meth:`Registry._pointer`)."""
        return cls(pointer.get("champion"), pointer.get("sequence", 0), pointer.get("registry_id"))


def new_version(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"v{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class VersionGone(FileNotFoundError):
    """:class:`VersionHold` of a version that a prune or discard deleted while the hold was being taken."""


class VersionHold:
    """A shared flock on a model folder's config.json (never rewritten after register) while a
    worker scores with it: :meth:`Registry.prune` leaves a held version, so a worker pinned to an
    old version can still start its scorer process again. The lock ends with the process.

    Taken while a prune or discard deletes the version, it waits for their exclusive lock (:func:`_unless_held`),
    then finds the folder gone: :class:`VersionGone`. Before, a hold taken between their check and the rename held a
    deleted folder."""

    def __init__(self, folder: Path | str) -> None:
        config = Path(folder) / "config.json"
        self._file = open(config, "rb")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self._file, fcntl.LOCK_SH)
            if not _same_file(self._file, config):
                raise VersionGone(f"{folder} was deleted (a prune or discard of the model registry) as it was held")
        except BaseException:
            self._file.close()
            raise

    def release(self) -> None:
        self._file.close()


def _same_file(fh: Any, path: Path) -> bool:
    """Whether ``path`` still names the file ``fh`` opened (a folder renamed out of versions/ does not)."""
    opened = os.fstat(fh.fileno())
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


@contextlib.contextmanager
def _unless_held(folder: Path) -> Iterator[bool]:
    """Whether no process holds a :class:`VersionHold` on the folder; if none does, an exclusive flock on its
    config.json for the block, so that a hold taken meanwhile waits for the block's end (the version renamed out)."""
    try:
        fh = open(folder / "config.json", "rb")  # noqa: SIM115 - closed below, which releases the lock
    except FileNotFoundError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        yield free


def is_held(folder: Path) -> bool:
    """Whether some process holds a :class:`VersionHold` on the folder."""
    with _unless_held(folder) as free:
        return not free


def is_model_folder(folder: Path | str) -> bool:
    """Whether a saved model folder (HF weights and tokenizer) is at this path on this host."""
    return (Path(folder).expanduser() / "config.json").is_file()


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Registry:
    def __init__(self, root: Path | str, es: Any = None, *, index: str = "finsent-models") -> None:
        self.root = Path(root).expanduser().resolve()
        self.es = es
        self.index = index

    # --- paths and locking -------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def pointer_file(self) -> Path:
        return self.root / "champion.json"

    def _ensure(self) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _pointer(self) -> dict[str, Any]:
        """``champion.json`` as it is written, its ``sequence`` and ``registry_id`` checked; writers keep the dict
        (its history) and :meth:`pointer` gives readers a :class:`Pointer`."""
        try:
            pointer = json.loads(self.pointer_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"champion": None, "history": []}
        if not isinstance(pointer, dict):
            raise RegistryError(f"unreadable champion pointer {self.pointer_file}: a {type(pointer).__name__}, "
                                "not an object")
        sequence = pointer.get("sequence", 0)  # 0: written by a release before sequence numbers
        if type(sequence) is not int or sequence < 0:  # noqa: E721 - a bool is no sequence
            raise RegistryError(f"unreadable champion pointer {self.pointer_file}: sequence is {sequence!r}, "
                                "not a whole number >= 0")
        registry_id = pointer.get("registry_id")
        if registry_id is not None and not (isinstance(registry_id, str) and REGISTRY_ID.fullmatch(registry_id)):
            raise RegistryError(f"unreadable champion pointer {self.pointer_file}: registry_id is {registry_id!r}, "
                                f"not text matching {REGISTRY_ID.pattern}")
        return pointer

    def _move(self, pointer: dict[str, Any], champion: str, history: list[dict[str, Any]]) -> Pointer:
        """Write the pointer of a champion move, numbered after the one ``pointer`` (read under the lock) holds."""
        moved = Pointer(champion, pointer.get("sequence", 0) + 1, pointer.get("registry_id") or secrets.token_hex(8))
        _write_json_atomic(self.pointer_file, {"champion": champion, "history": history,
                                               "sequence": moved.sequence, "registry_id": moved.registry_id})
        return moved

    # --- reading -----------------------------------------------------------------------
    def champion(self) -> str | None:
        return self._pointer().get("champion")

    def pointer(self) -> Pointer:
        """The champion with its move's sequence number, read at once (a worker starts from it)."""
        return Pointer.of(self._pointer())

    def history(self) -> list[dict[str, Any]]:
        return list(self._pointer().get("history", []))

    def exists(self, version: str) -> bool:
        return bool(_VERSION.match(version)) and (self.versions_dir / version / METADATA).is_file()

    def get(self, version: str) -> dict[str, Any]:
        if version == CHAMPION:
            version = self._require_champion()
        if not self.exists(version):
            raise RegistryError(f"no model version {version!r} in {self.root}")
        meta = self._metadata(version)
        meta["champion"] = version == self.champion()
        return meta

    def _metadata(self, version: str) -> dict[str, Any]:
        """A version's metadata.json; RegistryError naming the file when it is unreadable (cut short, edited)."""
        meta_file = self.versions_dir / version / METADATA
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RegistryError(f"unreadable metadata of {version}: {meta_file}: {exc}") from None
        if not isinstance(meta, dict):
            raise RegistryError(f"unreadable metadata of {version}: {meta_file} holds a {type(meta).__name__}, "
                                "not an object")
        return meta

    def list(self) -> list[dict[str, Any]]:
        """Metadata of every version, oldest first; a version whose metadata is unreadable is left out, with a
        warning (:meth:`scan` gives the reasons)."""
        versions, problems = self.scan()
        for problem in problems:
            log.warning("left out of the list: %s", problem)
        return versions

    def scan(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The metadata of every version whose metadata is readable, oldest first, and why each other one is not."""
        if not self.versions_dir.is_dir():
            return [], []
        versions, problems = [], []
        for folder in sorted(self.versions_dir.iterdir()):
            if not self.exists(folder.name):
                continue
            try:
                versions.append(self.get(folder.name))
            except RegistryError as exc:
                problems.append(str(exc))
        return versions, problems

    def path(self, ref: str | Path) -> Path:
        """The folder of a version, of ``champion``, or of a folder path given as is."""
        text = str(ref)
        if text == CHAMPION:
            return self.versions_dir / self._require_champion()
        if _VERSION.match(text):
            if not self.exists(text):
                raise RegistryError(f"no model version {text!r} in {self.root}")
            return self.versions_dir / text
        if is_model_folder(text):
            return Path(text).expanduser().resolve()
        raise RegistryError(f"{text!r} is neither a version in {self.root}, 'champion', nor a model folder")

    def _require_champion(self) -> str:
        version = self.champion()
        if version is None:
            raise RegistryError(f"no champion model in {self.root}: train one and promote it")
        return version

    # --- writing -----------------------------------------------------------------------
    def register(self, src_dir: Path | str, metadata: dict[str, Any]) -> str:
        """Copy a saved HF model folder in as a new version; returns the version."""
        src = Path(src_dir)
        if not (src / "config.json").is_file():
            raise RegistryError(f"{src} is not a saved model folder (no config.json)")
        try:
            config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RegistryError(f"{src} is not a saved model folder: unreadable config.json ({exc})") from None
        self._ensure()
        version = metadata.get("version") or new_version()
        meta = {
            "base_model": None, "labels": None, "metrics": {}, "data_fingerprint": None,
            "parent_version": None, "status": "registered",
        } | dict(metadata) | {"version": version, "created_at": datetime.now(UTC).isoformat(),
                              # what a scorer must know to score it (model.requirements), from the weights' own config
                              requirements.FIELD: requirements.required_by(config)}
        meta.pop("champion", None)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.versions_dir))
        try:
            shutil.copytree(src, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(METADATA))
            _write_json_atomic(staging / METADATA, meta)
            with self._locked():
                if (self.versions_dir / version).exists():
                    raise RegistryError(f"version {version} already exists")
                os.rename(staging, self.versions_dir / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._mirror(version)
        return version

    def update_metadata(self, version: str, **fields: Any) -> dict[str, Any]:
        with self._locked():
            meta = self.get(version)
            meta.pop("champion", None)
            meta.update(fields)
            _write_json_atomic(self.versions_dir / version / METADATA, meta)
        self._mirror(version)
        return self.get(version)

    def promote(self, version: str, *, expected: str | None = None) -> Pointer:
        """Make ``version`` the champion; the previous one stays in the history for rollback. Returns the pointer
        after the move, with its sequence number (for the control message); promoting the champion moves nothing
        and returns the pointer as it is.

        With ``expected``, only while the champion is still that version (compare-and-set: a retrain
        must not replace a champion promoted while it trained, which it was never compared with);
        otherwise :class:`ChampionChanged` and the champion stays."""
        now = datetime.now(UTC).isoformat()
        with self._locked():
            # Checked under the lock: a prune in between could delete it and leave the pointer on nothing.
            if not self.exists(version):
                raise RegistryError(f"no model version {version!r} in {self.root}")
            pointer = self._pointer()
            previous = pointer.get("champion")
            if expected is not None and previous != expected:
                raise ChampionChanged(expected, previous)
            if previous == version:
                return Pointer.of(pointer)
            # Both read before the pointer moves: unreadable metadata, or a model this code cannot score, stops the
            # promotion with nothing changed.
            updates = self._status_updates({version: {"status": "champion", "promoted_at": now}} | (
                {previous: {"status": "retired"}} if previous and self.exists(previous) else {}))
            self._require_scorable(updates[version], "not promoted")
            history = pointer.get("history", []) + [{"version": version, "promoted_at": now}]
            moved = self._move(pointer, version, history)
            self._write_statuses(updates)
        self._mirror(version, previous)
        return moved

    def rollback(self) -> Pointer:
        """Make the previous champion the champion again; returns the pointer after the move (its champion and
        sequence number)."""
        now = datetime.now(UTC).isoformat()
        with self._locked():
            pointer = self._pointer()
            history = list(pointer.get("history", []))
            current = pointer.get("champion")
            if current is None:
                raise RegistryError("no champion to roll back from")
            # Drop the current reign, then any entries for the same version right before it.
            while history and history[-1]["version"] == current:
                history.pop()
            if not history:
                raise RegistryError(f"{current} has no previous champion to roll back to")
            target = history[-1]["version"]
            if not self.exists(target):
                raise RegistryError(f"the previous champion {target} was pruned from {self.root}; "
                                    "promote a version that is still there")
            updates = self._status_updates({target: {"status": "champion", "promoted_at": now}} | (
                {current: {"status": "rolled_back"}} if self.exists(current) else {}))
            self._require_scorable(updates[target], "not rolled back to")
            moved = self._move(pointer, target, history)
            self._write_statuses(updates)
        self._mirror(target, current)
        return moved

    def prune(self, keep: int, *, dry_run: bool = False) -> list[str]:
        """Delete the versions :func:`model.retention.versions_to_prune` gives up, and the stale
        ONNX exports of the others; returns the versions deleted (or, with ``dry_run``, that would be)."""
        from model.onnx_runtime import stale_cache_files
        from model.retention import versions_to_prune

        if not self.versions_dir.is_dir():
            return []
        with self._locked(), contextlib.ExitStack() as unheld:
            pointer = self._pointer()
            versions = [p.name for p in sorted(self.versions_dir.iterdir()) if self.exists(p.name)]
            doomed = versions_to_prune(versions, pointer.get("champion"),
                                       [entry["version"] for entry in pointer.get("history", [])], keep)
            # The versions no worker holds stay locked until renamed out: a worker's hold waits, then finds them gone.
            held = [version for version in doomed
                    if not unheld.enter_context(_unless_held(self.versions_dir / version))]
            if held:
                log.info("keeping %s: a running worker scores with %s", ", ".join(held),
                         "it" if len(held) == 1 else "them")
                doomed = [version for version in doomed if version not in held]
            if dry_run:
                return doomed
            for version in doomed:
                self._rename_out(version)
        self._remove_renamed()
        for version in versions:
            if version not in doomed:
                for stale in stale_cache_files(self.versions_dir / version):
                    stale.unlink(missing_ok=True)
        self._unmirror(doomed)
        if doomed:
            log.info("pruned %d model version(s) from %s: %s", len(doomed), self.root, ", ".join(doomed))
        return doomed

    def discard(self, version: str) -> None:
        """Delete one version now, as a prune would: a retrain's challenger stopped before it was judged.
        :class:`VersionInUse` (and it stays) when it is the champion or was one (promoted by hand meanwhile: a
        rollback target), or a running worker holds it (:class:`VersionHold`)."""
        with self._locked():
            if not self.exists(version):
                raise RegistryError(f"no model version {version!r} in {self.root}")
            pointer = self._pointer()
            if version == pointer.get("champion") or version in {e["version"] for e in pointer.get("history", [])}:
                raise VersionInUse(f"{version} is or was the champion (promoted meanwhile)")
            with _unless_held(self.versions_dir / version) as free:  # locked until renamed out, as in prune
                if not free:
                    raise VersionInUse(f"a running worker scores with {version}")
                self._rename_out(version)
        self._remove_renamed()
        self._unmirror([version])
        log.info("deleted model version %s from %s", version, self.root)

    def _rename_out(self, version: str) -> None:
        """Out of versions/ first (under the lock): a reader never finds half a deleted folder."""
        os.rename(self.versions_dir / version, self.versions_dir / f".pruned-{version}-{secrets.token_hex(2)}")

    def _remove_renamed(self) -> None:
        """Delete what :meth:`_rename_out` set aside, and what an interrupted prune or discard left behind."""
        for renamed in self.versions_dir.glob(".pruned-*"):
            shutil.rmtree(renamed, ignore_errors=True)

    def _status_updates(self, fields: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each version's metadata with ``fields`` applied, read (and so checked) before anything is written."""
        return {version: self._metadata(version) | changes for version, changes in fields.items()}

    @staticmethod
    def _require_scorable(meta: dict[str, Any], what: str) -> None:
        """RegistryError when this code cannot score the model (model.requirements): a champion the workers would
        refuse to load (a worker that starts would stop)."""
        try:
            requirements.check(meta)
        except requirements.UnscorableModel as exc:
            raise RegistryError(f"{meta.get('version')} {what}: {exc}") from None

    def _write_statuses(self, updates: dict[str, dict[str, Any]]) -> None:
        for version, meta in updates.items():
            _write_json_atomic(self.versions_dir / version / METADATA, meta)

    # --- Elasticsearch mirror ----------------------------------------------------------
    def _mirror(self, *versions: str | None) -> None:
        for version in versions:
            if version:
                self._mirror_one(version)

    def _unmirror(self, versions: list[str]) -> None:
        if self.es is None:
            return
        for version in versions:
            try:
                self.es.options(ignore_status=404).delete(index=self.index, id=version)
            except Exception as exc:  # the registry folder is the truth; ES is a view of it
                log.warning("could not remove pruned model %s from index %s: %s", version, self.index, exc)

    def _mirror_one(self, version: str) -> None:
        if self.es is None:
            return
        meta = self.get(version)
        doc = {k: meta.get(k) for k in (
            "version", "base_model", "parent_version", "created_at", "promoted_at", "status",
            "champion", "data_fingerprint", "metrics", "labels", requirements.FIELD,
        )} | {"temperature": meta.get("calibration", {}).get("temperature")}  # model.calibration; None before it
        try:
            self.es.index(index=self.index, id=version, document=doc)
        except Exception as exc:  # the registry folder is the truth; ES is a view of it
            log.warning("could not mirror model %s to index %s: %s", version, self.index, exc)


def open_registry(settings: Any, *, mirror: bool = True) -> Registry:
    """The registry of ``settings.models_path``, mirrored to ``finsent-models`` when Elasticsearch answers.

    An unreachable or misconfigured Elasticsearch is a logged warning, never an error: the files
    are the truth and training or promotion must not depend on the mirror.
    """
    if mirror:
        from finsent import clients

        try:
            client = clients.elasticsearch(settings, request_timeout=5, max_retries=0)
            # Cluster health, not ping: the integration-test distribution answers GET / with 405.
            client.cluster.health()
            return mirrored_registry(settings, client)
        except Exception as exc:
            log.warning("Elasticsearch at %s unavailable (%s); model metadata is not mirrored",
                        settings.elasticsearch_url, exc)
    return Registry(settings.models_path, None, index=settings.index("models"))


def mirrored_registry(settings: Any, es: Any) -> Registry:
    """The registry of ``settings.models_path`` mirrored through ``es``, its index's mapping first given this
    release's new fields (``requires``): the mapping is strict, and every process that mirrors may be the first
    upgraded one (a CLI, the retrain scheduler)."""
    from finsent import topology

    topology.update_mapping(es, settings, "models")
    return Registry(settings.models_path, es, index=settings.index("models"))
