"""The models of an experiment as tasks on a Ray cluster (``recarena run --executor ray``).

The units of work are a model's validation trials and its run. A run is one ``[[models]]``
entry, or one training seed of it (`recarena.experiment.seeds`): its validation trials,
final fit and measurement, exactly as `ExperimentRunner.run_model` does them in process (a
task *is* that call, in a scratch copy of the run folder's set-up on the node that runs
it). A model with more than one validation trial left first runs each trial as a task of
its own (`ExperimentRunner.run_trial`), in parallel; the driver saves them in the model's
``tuning.json`` in grid order, and the run task then finds them saved, as a resumed run
does, and goes on to the final fit.

The driver (the process of ``recarena run``) keeps the run folder and its lock:

- it loads the data set and builds the split once (`ExperimentRunner.prepare`), and puts
  the files of the run's set-up (``config.toml``, ``run.json``, ``dataset/``, ``split/``)
  into Ray's object store once per wave of tasks;
- each task also gets the files its model folder already holds (the validation trials of
  ``tuning.json``, the checkpoints of a stopped training), so it resumes where a run, local
  or distributed, stopped;
- a task returns every file its model wrote, and the driver writes them into the run
  folder: first-stage candidates into ``split/``, then the model folder, swapped in whole
  by a rename once complete (``DONE.json`` with it), so resume, ``recarena report`` and the
  run folder work as in process, and nodes need no shared file system.

A task whose worker dies (its node lost, its process killed) is run again by Ray
(``execution.max_retries``); a model that raises, or whose retries are spent, is recorded
as FAILED with its error and the others go on. First stages run (as a first wave) before
the models that re-rank their candidates. Each task asks for the resources its model
declares (`recarena.models.base.Recommender.task_resources`; ``execution.resources``
overrides them per label); on a cluster without GPUs, GPU requests are dropped (and said).
Progress: one line per finished task with the counts done / running / queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recarena._artifacts import json_or_damage
from recarena._io import atomic_path, write_json
from recarena._progress import progress_bars
from recarena.config import ExperimentConfig, ModelConfig
from recarena.errors import ConfigError, RecArenaError
from recarena.experiment.artifacts import remove_task_leftovers

if TYPE_CHECKING:
    from recarena.experiment.runner import ExperimentRunner

log = logging.getLogger(__name__)

#: folders and files of the run folder every task needs (the set-up)
SETUP_ENTRIES = ("config.toml", "run.json", "dataset", "split")
#: what a task leaves out of what it returns: checkpoints go once the model is done
_DONE_EXCLUDE = ("checkpoints",)


def _files(root: Path, base: Path, exclude: tuple[str, ...] = ()) -> dict[str, bytes]:
    """``{path relative to base: bytes}`` of every file under ``root`` (a file or a folder)."""
    if root.is_file():
        return {root.relative_to(base).as_posix(): root.read_bytes()}
    out: dict[str, bytes] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not (rel.parts and rel.parts[0] in exclude):
            out[path.relative_to(base).as_posix()] = path.read_bytes()
    return out


def _unpack(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def setup_files(run_dir: Path) -> dict[str, bytes]:
    """The files of the run's set-up that every task unpacks (`SETUP_ENTRIES`)."""
    out: dict[str, bytes] = {}
    for name in SETUP_ENTRIES:
        out.update(_files(run_dir / name, run_dir))
    return out


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """BLAS and torch threads of a task: the CPUs it asked for."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    before = {k: os.environ.get(k) for k in names}
    for k in names:
        os.environ[k] = str(n)
    torch_before = None
    try:
        import torch

        torch_before = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch_before is not None:
            import torch

            torch.set_num_threads(torch_before)


def _in_scratch(
    config: dict[str, Any],
    setup: dict[str, bytes],
    model_files: dict[str, bytes],
    cache_dir: str | None,
    threads: int,
    work: Callable[[ExperimentRunner, Path, dict[str, Any]], None],
) -> dict[str, Any]:
    """``work(runner, root, result)`` on a runner over a scratch copy of the run folder (the
    set-up and the model's files), its data and split prepared; returns ``result``, the
    record a task returns: ``events``, ``node``, ``version``, ``seconds``, what ``work``
    put there, and for a failure (preparing or in ``work``) ``status = "failed"``,
    ``error`` and ``traceback``: the driver records it, so nothing is raised."""
    import socket

    from recarena.cache import resolve_cache_dir
    from recarena.experiment.runner import ExperimentRunner

    start = time.perf_counter()
    cfg = ExperimentConfig.model_validate(config)
    events: list[str] = []
    result: dict[str, Any] = {
        "events": events,
        "node": _node_address(socket.gethostname()),
        "version": recarena_version(),
    }
    cache = Path(cache_dir) if cache_dir and Path(cache_dir).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="recarena-task-") as tmp, _threads(threads):
        root = Path(tmp) / "run"
        _unpack(root, setup)
        _unpack(root, model_files)
        runner = ExperimentRunner(
            cfg,
            root,
            cache if cache is not None else resolve_cache_dir(cfg.cache_dir),
            progress=False,
            on_event=events.append,
        )
        try:
            runner.prepare()
            with progress_bars(False):  # no bars in a task's log
                work(runner, root, result)
            result["status"] = "done"
        except Exception as exc:  # noqa: BLE001 - the driver records it as FAILED
            result["status"] = "failed"
            result["error"] = (
                str(exc) if isinstance(exc, RecArenaError) else f"{type(exc).__name__}: {exc}"
            )
            result["traceback"] = traceback.format_exc()
    result["seconds"] = time.perf_counter() - start
    return result


def run_task(
    config: dict[str, Any],
    setup: dict[str, bytes],
    label: str,
    model_files: dict[str, bytes],
    cache_dir: str | None,
    threads: int,
) -> dict[str, Any]:
    """One run of one model in a scratch folder (what a Ray task runs; callable directly).

    Returns ``status`` (``"done"`` or ``"failed"``), ``files`` (path relative to the run
    folder -> bytes: the model folder, and the first-stage candidates it wrote into
    ``split/``), ``events`` (what it said), ``node`` (the host it ran on), ``version``,
    ``seconds``; a failed run also ``error`` and ``traceback``, and its files keep its
    saved trials and checkpoints, so the next run resumes them.
    """
    from recarena.experiment.artifacts import FIRST_STAGE_PREFIX

    def work(runner: ExperimentRunner, root: Path, result: dict[str, Any]) -> None:
        pattern = f"{FIRST_STAGE_PREFIX}*"
        before = {path.name for path in (root / "split").glob(pattern)}
        done = False
        try:
            runner.run_model(runner.runs[label].config)
            done = True
        finally:
            # done: the checkpoints go; failed: they come back, so the next run resumes
            files = _files(root / "models" / label, root, exclude=_DONE_EXCLUDE if done else ())
            files.pop(f"models/{label}/FAILED.json", None)
            for path in sorted((root / "split").glob(pattern)):
                if path.name not in before or path.read_bytes() != setup.get(f"split/{path.name}"):
                    files[path.relative_to(root).as_posix()] = path.read_bytes()
            result["files"] = files

    return _in_scratch(config, setup, model_files, cache_dir, threads, work)


def run_trial_task(
    config: dict[str, Any],
    setup: dict[str, bytes],
    label: str,
    index: int,
    model_files: dict[str, bytes],
    cache_dir: str | None,
    threads: int,
) -> dict[str, Any]:
    """One validation trial of one model (grid point ``index``) in a scratch folder.

    Returns ``status``, ``trial`` (the record `ExperimentRunner.run_trial` makes, which
    the driver saves in the model's ``tuning.json``), ``events``, ``node``, ``version``,
    ``seconds``; a failed trial ``error`` and ``traceback``.
    """

    def work(runner: ExperimentRunner, _root: Path, result: dict[str, Any]) -> None:
        result["trial"] = runner.run_trial(runner.runs[label].config, index)

    return _in_scratch(config, setup, model_files, cache_dir, threads, work)


def save_trials(run_dir: Path, label: str, trials: list[dict[str, Any]]) -> None:
    """Add trials (in grid order) after the ones ``tuning.json`` holds, as a run in process
    appends them."""
    path = run_dir / "models" / label / "tuning.json"
    saved: list[dict[str, Any]] = []
    if path.exists():
        content, damage = json_or_damage(path)
        if damage is None and isinstance(content, dict):
            saved = list(content.get("trials", []))
    write_json(path, {"trials": saved + trials})


def recarena_version() -> str:
    """The installed RecArena's version ("unknown" when not installed as a package)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("recarena")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _node_address(default: str) -> str:
    """The address of the Ray node running this task (``default`` outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except ImportError:
        pass
    return default


def write_task_files(run_dir: Path, label: str, files: dict[str, bytes]) -> None:
    """A task's files into the run folder: ``split/`` files atomically, then the model
    folder, written aside and swapped in by a rename (its ``DONE.json`` with it)."""
    mdir = run_dir / "models" / label
    incoming = mdir.with_name(f".{label}.incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    prefix = f"models/{label}/"
    for rel, data in files.items():
        if rel.startswith(prefix):
            path = incoming / rel[len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        elif rel.startswith("split/") and "/" not in rel[len("split/") :]:
            with atomic_path(run_dir / rel) as tmp:
                Path(tmp).write_bytes(data)
        else:
            raise RecArenaError(f"task of {label!r} returned {rel!r}, outside its folders")
    incoming.mkdir(parents=True, exist_ok=True)
    old = mdir.with_name(f".{label}.old")
    shutil.rmtree(old, ignore_errors=True)
    if mdir.exists():
        mdir.rename(old)
    incoming.rename(mdir)
    shutil.rmtree(old, ignore_errors=True)


def task_options(runner: ExperimentRunner, mc: ModelConfig, has_gpu: bool) -> dict[str, Any]:
    """The Ray options of a model's task: its resources and retries."""
    from recarena.models.registry import create_model

    execution = runner.config.execution
    wanted = execution.resources.get(mc.display_name)
    if wanted is None:
        run = runner.runs.get(mc.display_name)
        group = run.group if run is not None else mc.display_name
        wanted = execution.resources.get(group)
    if wanted is None:
        wanted = create_model(mc.name, mc.params).task_resources()
    options: dict[str, Any] = {k: v for k, v in wanted.items() if v}
    if not has_gpu:
        options.pop("num_gpus", None)
    if "memory" in options:
        options["memory"] = int(options["memory"])
    options["num_cpus"] = options.get("num_cpus", 1)
    options["max_retries"] = execution.max_retries
    options["retry_exceptions"] = False
    return options


def _connect(config: ExperimentConfig, on_event: Callable[[str], None]) -> bool:
    """Join (or start) the cluster; True when this call connected (and must disconnect)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "execution.executor = 'ray' needs Ray: pip install 'recarena[cluster]'"
        ) from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    execution = config.execution
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if execution.address:
        kwargs["address"] = execution.address
    else:
        kwargs["include_dashboard"] = False
    if execution.node_ip_address:
        kwargs["_node_ip_address"] = execution.node_ip_address
    ray.init(**kwargs)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    on_event(
        f"ray: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPU(s), "
        f"{ray.cluster_resources().get('GPU', 0):g} GPU(s)"
        + (f" at {execution.address}" if execution.address else " (started here)")
    )
    return True


class _Wave:
    """The tasks of one wave (first stages, then the rest) and what each is for."""

    def __init__(self, runner: ExperimentRunner, remote: Any, trial_remote: Any, ray: Any):
        self.runner = runner
        self.remote = remote
        self.trial_remote = trial_remote
        self.ray = ray
        self.setup = ray.put(setup_files(runner.run_dir))
        self.config = runner.config.model_dump(mode="json")
        #: ref -> (model config, grid point index or None for the model's run, CPUs)
        self.pending: dict[Any, tuple[ModelConfig, int | None, float]] = {}
        #: label -> {grid point index: trial record}, while a model's trials run
        self.trials: dict[str, dict[int, dict[str, Any] | None]] = {}
        self.options: dict[str, dict[str, Any]] = {}

    def _folder_files(self, label: str) -> dict[str, bytes]:
        mdir = self.runner.run_dir / "models" / label
        return _files(mdir, self.runner.run_dir, exclude=("DONE.json", "FAILED.json"))

    def submit_model(self, mc: ModelConfig) -> None:
        label, options = mc.display_name, self.options[mc.display_name]
        ref = self.remote.options(name=f"recarena:{label}", **options).remote(
            self.config,
            self.setup,
            label,
            self._folder_files(label),
            str(self.runner.cache_dir),
            max(1, int(options["num_cpus"])),
        )
        self.pending[ref] = (mc, None, float(options["num_cpus"]))

    def submit_trials(self, mc: ModelConfig, indices: list[int]) -> None:
        label, options = mc.display_name, self.options[mc.display_name]
        files = self._folder_files(label)
        self.trials[label] = dict.fromkeys(indices)
        for index in indices:
            ref = self.trial_remote.options(
                name=f"recarena:{label}:trial{index + 1}", **options
            ).remote(
                self.config,
                self.setup,
                label,
                index,
                files,
                str(self.runner.cache_dir),
                max(1, int(options["num_cpus"])),
            )
            self.pending[ref] = (mc, index, float(options["num_cpus"]))

    def cancel(self, label: str) -> None:
        """Stop the other trials of a model whose trial failed; save those that finished
        (the next run resumes them)."""
        for ref, (mc, index, _) in list(self.pending.items()):
            if mc.display_name == label and index is not None:
                self.ray.cancel(ref, force=True)
                del self.pending[ref]
        got = self.trials.pop(label, {})
        finished = [got[i] for i in sorted(got) if got[i] is not None]
        if finished:
            save_trials(self.runner.run_dir, label, finished)


def run_on_ray(
    runner: ExperimentRunner,
    order: list[ModelConfig],
    record_failure: Callable[[str, str, str | None], None],
) -> None:
    """Run ``order`` (first stages first) as Ray tasks; failures go to ``record_failure``
    (label, error, traceback).

    A model with more than one validation trial left runs them as tasks of their own, in
    parallel; once all are back (saved in its ``tuning.json``, in grid order), its run
    task finds them saved and goes on to the final fit and the measurement.
    """
    import ray

    connected = _connect(runner.config, runner.on_event)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        cpus = float(ray.cluster_resources().get("CPU", 1))
        version = recarena_version()
        remote, trial_remote = ray.remote(run_task), ray.remote(run_trial_task)
        first = [mc for mc in order if runner.is_first_stage(mc.display_name)]
        rest = [mc for mc in order if not runner.is_first_stage(mc.display_name)]
        total = len(order)
        finished = 0
        dropped_gpu = False
        for models in (first, rest):
            todo = [mc for mc in models if runner.reuse_finished(mc) is None]
            finished += len(models) - len(todo)
            if not todo:
                continue
            wave = _Wave(runner, remote, trial_remote, ray)
            n_trials = 0
            for mc in todo:
                label = mc.display_name
                try:
                    wave.options[label] = task_options(runner, mc, has_gpu)
                    trials = runner.pending_trials(mc)
                except RecArenaError as exc:  # as a run in process records them
                    record_failure(label, str(exc), None)
                    finished += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - a model bug: the others go on
                    record_failure(label, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                    finished += 1
                    continue
                wanted = runner.config.execution.resources.get(label)
                if not has_gpu and not dropped_gpu and (wanted or {}).get("num_gpus"):
                    runner.on_event("ray: the cluster has no GPU; GPU requests are dropped")
                    dropped_gpu = True
                if len(trials) > 1:
                    wave.submit_trials(mc, trials)
                    n_trials += len(trials)
                else:
                    wave.submit_model(mc)
            runner.on_event(
                f"ray: {len(wave.pending)} task(s) submitted"
                + (f", {n_trials} of them validation trials" if n_trials else "")
                + f" ({finished}/{total} models done earlier)"
            )
            while wave.pending:
                ready, _ = ray.wait(list(wave.pending), num_returns=1)
                mc, index, _ = wave.pending.pop(ready[0])
                label = mc.display_name
                what = label if index is None else f"{label} trial {index + 1}"
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - retries spent, node lost
                    result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                    result["node"], result["seconds"], result["version"] = "?", 0.0, version
                if result.get("version") != version:
                    # another version may measure otherwise: its numbers are not written
                    result = {
                        **result,
                        "status": "failed",
                        "error": f"the node {result.get('node')} runs RecArena "
                        f"{result.get('version')} and this machine {version}: install the "
                        "same version on every node",
                        "traceback": None,
                        "files": {},
                    }
                if index is not None:
                    if result["status"] != "done":
                        wave.cancel(label)
                        record_failure(label, f"{what}: {result['error']}", result.get("traceback"))
                        finished += 1
                    elif label in wave.trials:
                        wave.trials[label][index] = result["trial"]
                        if all(t is not None for t in wave.trials[label].values()):
                            got = wave.trials.pop(label)
                            save_trials(runner.run_dir, label, [got[i] for i in sorted(got)])
                            wave.submit_model(mc)
                else:
                    finished += 1
                    if result.get("files"):
                        write_task_files(runner.run_dir, label, result["files"])
                    if result["status"] != "done":
                        record_failure(label, result["error"], result.get("traceback"))
                    else:
                        runner.forget_done_check(label)
                for event in result.get("events", []):
                    # what the model said on its node (the set-up's lines are the driver's)
                    if not event.startswith(("data:", "split:")):
                        runner.on_event(f"  {event}")
                status = "done" if result["status"] == "done" else "FAILED"
                running = _running(wave.pending, cpus)
                runner.on_event(
                    f"ray: {what} {status} on {result['node']} in {result['seconds']:.1f} s "
                    f"({finished}/{total} models done, {running} task(s) running, "
                    f"{len(wave.pending) - running} queued)"
                )
    finally:
        if connected:
            ray.shutdown()


def _running(pending: dict[Any, tuple[ModelConfig, int | None, float]], cpus: float) -> int:
    """How many pending tasks the cluster's CPUs hold at once, in the order submitted
    (Ray starts them in that order as CPUs free up; the rest wait)."""
    used, running = 0.0, 0
    for _, _, need in pending.values():
        if used + need > cpus + 1e-9:
            break
        used += need
        running += 1
    return running


__all__ = [
    "remove_task_leftovers",
    "run_on_ray",
    "run_task",
    "run_trial_task",
    "save_trials",
    "setup_files",
    "task_options",
    "write_task_files",
]
