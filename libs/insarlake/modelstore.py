"""One store for every trained model (TSKM, the classifiers, the forecasters) in the lake's file
store (``insarlake.files``), so a model trained on one machine is found by the next run wherever
the lake lives (a local folder, dbfs:/, s3://, abfss://, gs://).

Layout: ``models/<kind>/<dataset>/<name>/<version>/`` holds the model's files (written by the
model class into a local folder, then copied up), and ``models/<kind>/<dataset>/<name>/latest.json``
(``{"version": ...}``) names the newest complete version. A version is whole once its
``_complete.json`` (``{"files": {name: bytes}}``) is written, after every other file of it, and
``latest.json`` only after that; loading checks the version against its ``_complete.json``, so a
save cut short (a crash, a killed job) is never read as a model. A version whose upload fails is
removed. Loading copies a version into a local temporary folder for the model class to read.
With a ``tracker`` (models.mlflow), each version made the newest is also logged to MLflow with
the parameters and metrics given to ``save``.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from insarlake.errors import InputError
from insarlake.files import LakeFiles
from insarlake.reuse import ReusePolicy, Verdict, reuse_verdict
from insarlake.tracking import MlflowTracker

log = logging.getLogger(__name__)

M = TypeVar("M")

# Written last into a version's folder: its files and their sizes (the version is whole).
COMPLETE = "_complete.json"


class IncompleteModel(InputError):
    """A model version whose save did not finish (no or another ``_complete.json``)."""


class OutdatedModel(InputError):
    """A whole model version in a format an older insarlake wrote and this one does not read."""


@contextmanager
def temporary_folder(prefix: str = "insarlake-") -> Iterator[Path]:
    """A local temporary folder, removed when the block ends (also on error)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ModelStore:
    """The saved versions of one model: ``kind`` (tskm, classifier, forecast), ``dataset``, ``name``."""
    files: LakeFiles
    kind: str
    dataset: str
    name: str
    tracker: MlflowTracker | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return ("models", self.kind, self.dataset, self.name)

    def uri(self, version: str | None = None) -> str:
        """The URI of the model's folder, or of one version."""
        return self.files.uri(*self.parts, *([version] if version else []))

    def latest(self) -> str | None:
        """The newest complete version, or None when none is saved."""
        if not self.files.is_file(*self.parts, "latest.json"):
            return None
        pointer = self.files.read_json(*self.parts, "latest.json")
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise InputError(f"model file {self.files.uri(*self.parts, 'latest.json')}: "
                             "not a version pointer ({\"version\": ...})")
        return pointer["version"]

    def save(self, version: str, write: Callable[[Path], object], make_latest: bool = True,
             params: dict | None = None, metrics: dict | None = None) -> str:
        """Save a version: ``write(folder)`` writes the model's files into a local folder, which is
        copied to the version's folder (replacing one of the same name); then, unless
        ``make_latest`` is False, latest.json names it and the tracker (if any) logs it with
        ``params`` and ``metrics``. A failed copy removes the version. Returns the version's URI."""
        with temporary_folder("insarlake-model-") as folder:
            write(folder)
            try:
                self.files.remove_tree(*self.parts, version)
                names = self.files.upload(folder, *self.parts, version)
            except BaseException:
                self.files.discard(*self.parts, version)
                raise
            if not names:
                raise RuntimeError(f"model {self.uri(version)}: the model wrote no file")
            sizes = {name: (folder / name).stat().st_size for name in names}
            self.files.write_json({"files": sizes}, *self.parts, version, COMPLETE)
            if make_latest:
                self.mark_latest(version)
                if self.tracker is not None:
                    self.tracker.log(self.kind, self.dataset, self.name, version, self.uri(version), folder,
                                     params or {}, metrics or {})
        log.info("saved model %s (%d files)", self.uri(version), len(names))
        return self.uri(version)

    def mark_latest(self, version: str) -> None:
        """Name ``version`` (saved already) the newest."""
        self.files.write_json({"version": version}, *self.parts, "latest.json")

    def check_complete(self, version: str) -> None:
        """Raise IncompleteModel unless the version's files are those its ``_complete.json`` lists,
        with their sizes."""
        uri = self.uri(version)
        if not self.files.is_file(*self.parts, version, COMPLETE):
            raise IncompleteModel(f"model {uri}: incomplete (no {COMPLETE}: its save did not finish)")
        listed = self.files.read_json(*self.parts, version, COMPLETE)
        files = listed.get("files") if isinstance(listed, dict) else None
        if not isinstance(files, dict) or not all(isinstance(n, int) for n in files.values()):
            raise IncompleteModel(f"model {uri}: {COMPLETE} is not {{\"files\": {{name: bytes}}}}")
        found = self.files.file_sizes(*self.parts, version)
        found.pop(COMPLETE, None)
        if found != files:
            wrong = sorted(n for n in set(files) | set(found) if files.get(n) != found.get(n))
            raise IncompleteModel(f"model {uri}: files differ from {COMPLETE} ({', '.join(wrong[:5])})")

    def load(self, version: str, read: Callable[[Path], M]) -> M:
        """``read(folder)`` on a local copy of the version's files, once they are checked whole."""
        if not self.files.exists(*self.parts, version):
            raise InputError(f"model {self.uri(version)}: not found")
        self.check_complete(version)
        if self.files.is_local:
            return read(self.files.local_path(*self.parts, version))
        with temporary_folder("insarlake-model-") as folder:
            self.files.download(folder, *self.parts, version)
            try:
                return read(folder)
            except InputError as exc:           # name the file in the lake, not its local copy
                raise InputError(str(exc).replace(str(folder), self.uri(version))) from None

    def load_latest(self, read: Callable[[Path], M]) -> M | None:
        """``read`` on the newest version, or None when none is saved."""
        version = self.latest()
        return None if version is None else self.load(version, read)

    def reusable(self, read: Callable[[Path], M], matches: Callable[[M], bool | str],
                 retrain: bool = False) -> tuple[M, str] | None:
        """(the newest saved model, its version) when one exists, ``retrain`` is off and
        ``matches(model)`` is True; else None. ``matches`` may return a reason string (why it does
        not match), logged."""
        version = None if retrain else self.latest()
        if version is None:
            return None
        try:
            model = self.load(version, read)
        except (IncompleteModel, OutdatedModel) as exc:   # e.g. saved by an older insarlake
            log.warning("%s (trained anew)", exc)
            return None
        verdict = matches(model)
        if verdict is True:
            log.info("%s model %s: reusing %s", self.kind, self.name, self.uri(version))
            return model, version
        why = verdict if isinstance(verdict, str) else "its settings, data or dates differ"
        log.info("%s model %s: saved version %s not reused (%s)", self.kind, self.name, self.uri(version), why)
        return None

    def reusable_by_policy(self, read: Callable[[Path], M], matches: Callable[[M], bool | str],
                           dates_of: Callable[[M], Sequence], dates: Sequence, policy: ReusePolicy,
                           runs_since_fit: int, retrain: bool = False) -> tuple[M, str, Verdict] | None:
        """``reusable`` where the dates follow the model-reuse policy (reuse.py): (model, version,
        the policy's verdict) when ``matches(model)`` (its settings) and the policy both say reuse."""
        verdicts = []

        def both(model: M) -> bool | str:
            settings = matches(model)
            if settings is not True:
                return settings
            verdicts.append(reuse_verdict(dates_of(model), dates, runs_since_fit, policy))
            return True if verdicts[-1].reuse else verdicts[-1].why

        saved = self.reusable(read, both, retrain)
        return None if saved is None else (*saved, verdicts[-1])
