"""The run folder's records: setup and model hashes, the names of what a run writes, the
set-up stages' stamps (`RunFolder`), each model's folder and its records (`ModelFolders`),
and the writing of a measured protocol (`write_measurement`).

What a resumed run may reuse is decided by these hashes (`setup_hash` for the data, split
and evaluation, `data_hash` for the data set alone, `model_hash` for a ``[[models]]``
entry) and by the sha256 of every file (`recarena._artifacts`):

- `RunFolder`: ``dataset/`` and ``split/`` are reused when their ``stage.json`` carries
  the current configuration's hash and every file it records is intact
  (`RunFolder.reusable_stage`), and stamped once written (`RunFolder.stamp_stage`); a
  damaged ``run.json`` is recovered from the split's stamp; the temporaries an
  interrupted run left are removed.
- `ModelFolders`: ``models/LABEL/``: whether a model is done (`ModelFolders.done_status`:
  its ``DONE.json`` of the current entry, every file it records intact), what a damaged
  model leaves (its intact ``tuning.json``), the final model saved before its lists
  (``checkpoints/fitted/``), a first stage's candidates in ``split/``, and the model's
  last records: ``cost.json``, ``training_log.json``, then ``DONE.json``
  (`ModelFolders.record_done`).

Nothing here imports the runner: each class takes the paths and records it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recarena import _faults
from recarena._artifacts import (
    describe_damage,
    file_checksums,
    find_damage,
    folder_files,
    json_or_damage,
    read_errors,
    unreadable,
)
from recarena._io import atomic_path, jsonable, remove_stale_temporaries, write_json
from recarena._progress import quiet_library_progress
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig
from recarena.errors import DamagedArtifactError
from recarena.experiment.measuring import Measurement
from recarena.splits import CandidateSet

if TYPE_CHECKING:
    from recarena.experiment.seeds import SeedRun
    from recarena.experiment.stages import Fitted, Measured, ModelJob, Tuning
    from recarena.models.base import Recommender
    from recarena.ranking import RankedLists

#: written into ``dataset/`` and ``split/`` last: the hash of the configuration that made
#: them and the sha256 of every file in them
STAGE_FILE = "stage.json"
#: the names of the first-stage candidate files a first-stage model writes into ``split/``
FIRST_STAGE_PREFIX = "first_stage__"
#: what a model folder holds that its DONE.json does not record: itself, a failure record,
#: the checkpoints of long trainings (removed once the model is done)
MODEL_FOLDER_EXCLUDE = ("DONE.json", "FAILED.json", "checkpoints")


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: ``[data]`` options added after run folders were saved, at the values that mean what the
#: folders saved without them meant: left out of the hashes there, so those folders resume
DATA_OPTIONS_NEUTRAL: dict[str, Any] = {"ties": "hash"}


def _hashed_dump(config: ExperimentConfig) -> dict[str, Any]:
    dump = config.model_dump(mode="json")
    for key, neutral in DATA_OPTIONS_NEUTRAL.items():
        if dump["data"].get(key) == neutral:
            del dump["data"][key]
    return dump


def setup_hash(config: ExperimentConfig) -> str:
    """Hash of everything that makes two runs comparable: data, split, evaluation, seed."""
    dump = _hashed_dump(config)
    return _hash({k: dump[k] for k in ("data", "split", "evaluation", "seed")})


def data_hash(config: ExperimentConfig) -> str:
    """Hash of what the preprocessed data set depends on: the ``[data]`` table."""
    return _hash({"data": _hashed_dump(config)["data"]})


def model_hash(model_config: ModelConfig) -> str:
    fields = model_config.model_dump(mode="json")
    if fields.get("refit") is None:
        # the option came later: a model that leaves it unset keeps its earlier hash, so
        # runs made before it still resume
        fields.pop("refit", None)
    if fields.get("seeds") is None:
        # the same for the per-model seeds: an entry without them keeps its earlier hash
        fields.pop("seeds", None)
    return _hash(fields)


def write_measurement(folder: Path, measurement: Measurement) -> None:
    """A measured protocol's ``per_user.parquet``, then its ``metrics.json``, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "per_user.parquet") as tmp:
        measurement.per_user.to_parquet(tmp, index=False)
    write_json(folder / "metrics.json", measurement.record)


def _status(damaged: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    return ("damaged", damaged) if damaged else ("done", [])


def run_directory_for(
    config: ExperimentConfig, output_dir: str | os.PathLike[str] | None = None
) -> Path:
    base = Path(output_dir if output_dir is not None else config.output_dir)
    return base / config.name


def first_stage_path(run_dir: Path, proto: ProtocolConfig, stage: str) -> Path:
    """Where the first stage of ``proto`` keeps its candidates of ``stage``."""
    return run_dir / "split" / f"{FIRST_STAGE_PREFIX}{proto.label}__{stage}.npz"


def remove_entries(folder: Path, keep: Callable[[Path], bool]) -> None:
    """Delete every file and folder in ``folder`` for which ``keep`` is false (a link is
    removed, never followed)."""
    for entry in folder.iterdir():
        if keep(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_task_leftovers(run_dir: Path) -> list[Path]:
    """The half-written model folders (``.LABEL.incoming``, ``.LABEL.old``) a driver
    killed while writing a task's files left."""
    models = run_dir / "models"
    if not models.is_dir():
        return []
    found = [
        p
        for p in models.iterdir()
        if p.is_dir() and p.name.startswith(".") and p.name.endswith((".incoming", ".old"))
    ]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


# ---------------------------------------------------------------------- the run folder
class RunFolder:
    """The run folder's set-up stages, ``dataset/`` and ``split/``: whether one can be
    reused, its stamp (``stage.json``), and the clean-up of a folder before a run.

    ``on_event`` receives the messages (a stage recomputed and why, leftovers removed).
    """

    def __init__(self, run_dir: Path, on_event: Callable[[str], None]) -> None:
        self.run_dir = run_dir
        self.on_event = on_event
        # the checksums of the dataset/split files verified by `reusable_stage`
        self.stage_checksums: dict[Path, dict[str, str] | None] = {}

    def remove_leftovers(self) -> None:
        """Remove the temporary files that writers killed mid-write left in the run folder.

        Only with the folder's lock held: no other run is writing there.
        """
        removed = remove_stale_temporaries(self.run_dir) + remove_task_leftovers(self.run_dir)
        if removed:
            names = ", ".join(str(p.relative_to(self.run_dir)) for p in removed[:5])
            more = f" and {len(removed) - 5} more" if len(removed) > 5 else ""
            self.on_event(
                f"removed {len(removed)} temporary file(s) an interrupted run left: {names}{more}"
            )

    def clear(self, keep: str) -> None:
        """Delete everything the run folder holds but the entry named ``keep`` (its lock
        file: ``overwrite``)."""
        remove_entries(self.run_dir, keep=lambda entry: entry.name == keep)

    def reusable_stage(
        self, folder: Path, marker: str, what: str, digest: str, vouched: bool
    ) -> bool:
        """True when ``folder`` holds a complete, undamaged stage made by this configuration.

        ``marker`` is the file the stage writes last. The stage's ``stage.json`` must carry
        ``digest``, and every file whose checksum it records must still have it; a folder
        saved before stamps existed is trusted only when ``run.json`` (written after the
        data and the split) vouches for it, and one stamped before stamps held checksums is
        trusted as it is. A folder that does not pass is deleted, with a message naming the
        reason (a damaged file by name), so that the stage is recomputed.
        """
        if not folder.exists():
            return False
        stamp_path = folder / STAGE_FILE
        stamp, why = None, None
        if stamp_path.exists():
            stamp, damage = json_or_damage(stamp_path)
            if damage is not None or not isinstance(stamp, dict):
                stamp = None
                why = describe_damage(stamp_path, damage or "not a JSON object")
        if why is None and (folder / marker).exists():
            if stamp is not None and stamp.get("config_hash") == digest:
                recorded = stamp.get("files")
                damaged = find_damage(folder, recorded or {}, f"{folder.name}/{STAGE_FILE}")
                if not damaged:
                    self.stage_checksums[folder] = dict(recorded) if recorded else None
                    return True
                why = describe_damage(folder / damaged[0][0], damaged[0][1])
            elif not stamp_path.exists() and vouched:
                self.stage_checksums[folder] = None
                return True
        if why is None:
            why = f"{folder} " + (
                f"was made by another {what} configuration"
                if stamp_path.exists()
                else "has no record of the configuration that made it (an interrupted run)"
            )
        self.on_event(f"{what}: {why}: recomputing it")
        shutil.rmtree(folder)
        return False

    def load_stage(self, folder: Path, what: str, load: Callable[[Path], Any]) -> Any:
        """``load(folder)``, or None (the folder deleted, with a message) when it cannot be
        read: a folder written before stages recorded checksums may hold a damaged file."""
        try:
            return load(folder)
        except read_errors() as exc:
            damaged = [(p, why) for p in folder_files(folder) if (why := unreadable(p))]
            if damaged:
                why = describe_damage(*damaged[0])
            else:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                why = f"{folder} cannot be read ({type(exc).__name__}: {detail})"
            self.on_event(f"{what}: {why}: recomputing it")
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def recover_run_state(self, state_path: Path, damage: str, digest: str) -> None:
        """Go on past a damaged ``run.json`` when the split's stamp vouches for the setup.

        ``run.json`` holds the setup hash a resumed run must match. The split's
        ``stage.json`` records the same hash (both are written by one set-up), so when it
        is intact and matches, the folder holds this setup and ``run.json`` is rewritten at
        the end of the set-up. Otherwise the setup that made the folder cannot be told.
        """
        stamp_path = self.run_dir / "split" / STAGE_FILE
        stamp, stamp_damage = (None, "missing")
        if stamp_path.exists():
            stamp, stamp_damage = json_or_damage(stamp_path)
        if stamp_damage is None and isinstance(stamp, dict) and stamp.get("config_hash") == digest:
            self.on_event(
                f"{state_path} is damaged ({damage}); {stamp_path} records this setup: rewriting it"
            )
            return
        raise DamagedArtifactError(
            f"{state_path} is damaged ({damage}): it records the setup that made the run "
            f"folder, and {stamp_path} does not record this experiment's either, so the folder "
            "cannot be resumed; start over (--overwrite) or choose another output folder "
            "(--output-dir)",
            path=state_path,
            reason=damage,
        )

    def stamp_stage(
        self, folder: Path, stage: str, digest: str, settings: dict[str, Any], reused: bool
    ) -> None:
        """Write ``stage.json``: the hash (and the settings) of the configuration behind it,
        and the sha256 of every file the stage wrote (the checksums verified when it was
        ``reused``, else those of the files just written)."""
        files = self.stage_checksums.get(folder) if reused else None
        if files is None:
            # the first-stage candidates in split/ are a model's: its DONE.json records them
            paths = [
                p
                for p in folder_files(folder, exclude=(STAGE_FILE,))
                if not p.name.startswith(FIRST_STAGE_PREFIX)
            ]
            files = file_checksums(folder, paths)
        write_json(
            folder / STAGE_FILE,
            {"stage": stage, "config_hash": digest, "settings": settings, "files": files},
        )


# ---------------------------------------------------------------------- the model folders
class ModelFolders:
    """The run folder's ``models/``: each model's ``DONE.json`` check, its saved fitted
    model, its first-stage candidates and its last records.

    ``protocols`` are the experiment's (a first stage's candidate files are its model's),
    ``runs`` the runs by label (`recarena.experiment.seeds`: a seed's run records its
    seeds), ``on_event`` receives the messages.
    """

    def __init__(
        self,
        run_dir: Path,
        protocols: list[ProtocolConfig],
        runs: Mapping[str, SeedRun],
        on_event: Callable[[str], None],
    ) -> None:
        self.run_dir = run_dir
        self.protocols = protocols
        self.runs = runs
        self.on_event = on_event
        # label -> (DONE.json's mtime, size, inode) and what `done_status` found
        self.done_checks: dict[str, tuple[tuple[int, int, int], Any]] = {}

    def folder(self, label: str) -> Path:
        return self.run_dir / "models" / label

    # ------------------------------------------------------------ DONE.json
    def finished(self, mc: ModelConfig) -> bool:
        """The model has a ``DONE.json`` written for its current configuration, and the
        files it records are undamaged (`done_status`)."""
        return self.done_status(mc)[0] == "done"

    def done_status(self, mc: ModelConfig) -> tuple[str, list[tuple[str, str]]]:
        """Whether the model finished earlier, and whether what it left can be reused.

        Returns
        -------
        tuple of (str, list of (str, str))
            ``"done"`` (reuse it), ``"absent"`` (no ``DONE.json``), ``"changed"`` (made
            by another configuration of the model) or ``"damaged"``, with the damaged files
            (path relative to the run folder, what is wrong). ``DONE.json`` records the
            sha256 of every file the model wrote (``artifacts``); a ``DONE.json`` written
            before it did is trusted as before, its files only checked for being readable
            (`recarena._artifacts.unreadable`). Each check is made once per ``DONE.json``.
        """
        done = self.folder(mc.display_name) / "DONE.json"
        try:
            st = done.stat()
        except OSError:  # not there, or the run folder is not a folder (said when locking)
            return "absent", []
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self.done_checks.get(mc.display_name)
        if cached is None or cached[0] != key:
            cached = (key, self.check_done(mc, done))
            self.done_checks[mc.display_name] = cached
        return cached[1]

    def forget(self, label: str) -> None:
        """Check ``label``'s ``DONE.json`` again when next asked."""
        self.done_checks.pop(label, None)

    def check_done(self, mc: ModelConfig, done: Path) -> tuple[str, list[tuple[str, str]]]:
        """`done_status` of ``done`` (the model's ``DONE.json``), uncached."""
        rel = done.relative_to(self.run_dir).as_posix()
        record, damage = json_or_damage(done)
        if damage is not None or not isinstance(record, dict):
            return "damaged", [(rel, damage or "not a JSON object")]
        if record.get("model_hash") != model_hash(mc):
            return "changed", []
        recorded = record.get("artifacts")
        if isinstance(recorded, dict):
            return _status(find_damage(self.run_dir, recorded, rel))
        # written before DONE.json recorded checksums: trusted, if its files can be read
        # (and a first stage's test candidates are there: a recomputed split drops them)
        paths = folder_files(done.parent, exclude=MODEL_FOLDER_EXCLUDE, recursive=True)
        paths += self.first_stage_files(mc.display_name, required=("test",))
        found = [(p.relative_to(self.run_dir).as_posix(), unreadable(p)) for p in paths]
        return _status([(p, why) for p, why in found if why is not None])

    def discard_damaged(self, mdir: Path, damaged: list[tuple[str, str]]) -> None:
        """Delete what a damaged model left but its validation trials, when they are intact.

        Each saved trial carries the key it is reused under (`tuning.saved_trials`), so an
        intact ``tuning.json`` spares the grid search; it goes too when it is one of the
        damaged.
        """
        names = {self.run_dir / rel for rel, _ in damaged}
        keep = mdir / "tuning.json"
        if keep in names or (keep.exists() and unreadable(keep) is not None):
            keep = None
        # first: a report reading the folder meanwhile must not see a DONE.json without files
        (mdir / "DONE.json").unlink(missing_ok=True)
        remove_entries(mdir, keep=lambda entry: entry == keep)

    # ------------------------------------------------------------ first-stage candidates
    def first_stage_files(self, label: str, required: tuple[str, ...] = ()) -> list[Path]:
        """The candidate files ``label`` wrote as the first stage of some protocol (those
        of the ``required`` stages whether they exist or not)."""
        return [
            path
            for proto in self.protocols
            if proto.kind == "first_stage" and proto.first_stage == label
            for stage in ("valid", "test")
            if (path := first_stage_path(self.run_dir, proto, stage)).exists() or stage in required
        ]

    def save_first_stage(self, label: str, stage: str, lists: RankedLists) -> None:
        """The top-N of ``lists`` as the candidates of every protocol ``label`` is the
        first stage of."""
        for proto in self.protocols:
            if proto.kind == "first_stage" and proto.first_stage == label:
                items = lists.items[:, : proto.top_n]
                cand = CandidateSet(lists.users, items, "first_stage", proto.description)
                cand.save(first_stage_path(self.run_dir, proto, stage))

    # ------------------------------------------------------------ the fitted model
    def save_fitted(
        self,
        label: str,
        model: Recommender,
        folder: Path,
        key: str,
        fit_seconds: float,
        history_refreshed: bool | None,
        peak_bytes: int,
    ) -> None:
        """Save the final model before its lists are ranked (`load_fitted` reads it back).

        It lives under the model's ``checkpoints/``, which goes once ``DONE.json`` is
        written. A model that cannot be saved is fitted again after a stop, and says so.
        """
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with quiet_library_progress():
                model.save(tmp)
            write_json(
                tmp / "fitted.json",
                {
                    "key": key,
                    "fit_seconds": fit_seconds,
                    "history_refreshed": history_refreshed,
                    "peak_bytes": int(peak_bytes),
                },
            )
        except Exception as exc:  # noqa: BLE001 - saving is a convenience, never a failure
            shutil.rmtree(tmp, ignore_errors=True)
            self.on_event(
                f"{label}: could not save the fitted model ({type(exc).__name__}: {exc}); "
                "a stopped run fits it again"
            )
            return
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def load_fitted(
        self, label: str, template: Recommender, folder: Path, key: str
    ) -> tuple[Recommender, dict[str, Any]] | None:
        """The final model saved by a run that stopped before it finished, when it was
        fitted with the current parameters and setup (``key``); else None."""
        record_path = folder / "fitted.json"
        if not record_path.exists():
            return None
        record, damage = json_or_damage(record_path)
        if damage is not None or not isinstance(record, dict) or record.get("key") != key:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            model = type(template).load(folder)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be read is refitted
            self.on_event(
                f"{label}: the fitted model saved in {folder} cannot be loaded "
                f"({type(exc).__name__}: {exc}): fitting it again"
            )
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self.on_event(f"{label}: reusing the model fitted before the run stopped")
        return model, record

    # ------------------------------------------------------------ the last records
    def model_artifacts(self, label: str, mdir: Path) -> dict[str, str]:
        """``{path relative to the run folder: sha256}`` of every file the model wrote."""
        paths = folder_files(mdir, exclude=MODEL_FOLDER_EXCLUDE, recursive=True)
        return file_checksums(self.run_dir, paths + self.first_stage_files(label))

    def seed_record(self, label: str) -> dict[str, Any]:
        """``{"training_seeds": ...}`` for the run of one training seed, else empty."""
        run = self.runs.get(label)
        record = None if run is None else run.record()
        return {} if record is None else {"training_seeds": record}

    def record_done(
        self,
        job: ModelJob,
        tuning: Tuning,
        fitted: Fitted,
        measured: Measured,
        cost: dict[str, Any],
        all_test_users: int,
    ) -> dict[str, Any]:
        """Write ``cost.json``, the learning curve and, last, ``DONE.json``; remove the
        checkpoints. ``all_test_users``: how many test users the split has."""
        mc, label, mdir, final = job.mc, job.label, job.mdir, fitted.model
        write_json(mdir / "cost.json", cost)
        if log := final.training_log():
            write_json(mdir / "training_log.json", log)
        record = {
            "label": label,
            "model": mc.name,
            "model_hash": model_hash(mc),
            # the [[models]] entry, so that a report can name what differs from config.toml
            "model_config": mc.model_dump(mode="json", exclude_none=True),
            "family": job.template.family,
            "fusion": job.template.fusion,
            "class": f"{type(job.template).__module__}:{type(job.template).__qualname__}",
            "params": jsonable(final.get_params()),
            # the entry's parameters as the model resolved them, every default written
            # out: a default changed since is named when the model is reused
            "entry_params": jsonable(job.template.get_params()),
            "chosen_on_validation": tuning.needs_validation,
            "refit": bool(fitted.refitted),
            "history_use": type(final).history_use,
            # False: not refit and unable to read the validation interactions (stale)
            "history_refreshed": fitted.history_refreshed,
            # the model's [[models]] label and the seeds asked for (absent without seeds)
            **self.seed_record(label),
            "protocols": list(measured.results),
            "skipped_protocols": job.skipped,
            "evaluated_users": int(len(measured.test_users)),
            "all_test_users": int(all_test_users),
            "user_sample": job.budget_users is not None
            and len(measured.test_users) < all_test_users,
            "cost": cost,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # verified before the model is reused (done_status) or reported
            "artifacts": self.model_artifacts(label, mdir),
        }
        write_json(mdir / "DONE.json", record)
        _faults.point("model:done")
        shutil.rmtree(job.checkpoints, ignore_errors=True)
        return record
