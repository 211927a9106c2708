"""The membership audit of every finished model of a run (`recarena audit RUN_DIR`).

For each model with a ``DONE.json``, the audit rebuilds the model with the parameters it
was measured with (its class and ``params`` from the record), fits it again on the run's
training data without the non-members (`recarena.privacy.membership`) exactly as the run
fit it (on train + validation after a refit; on train, stopping early on the members'
validation items, when the model was kept from validation), and attacks it. A model that
cannot score users it was not trained on is listed as not audited, with the reason.

Each result is kept in ``models/LABEL/membership.json`` with the model's hash and the
audit's settings, so a second audit reuses it; ``membership.csv`` in the run folder lists
them all. The run's artifacts are read, never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recarena._io import atomic_path, read_json, write_json

#: columns of ``membership.csv``
MEMBERSHIP_COLUMNS = [
    "model",
    "family",
    "attack_auc",
    "ci_low",
    "ci_high",
    "member_percentile_mean",
    "non_member_percentile_mean",
    "n_members",
    "n_non_members",
    "dp_epsilon",
    "status",
]


def audit_run(
    run_dir: Path,
    *,
    fraction: float = 0.1,
    seed: int | None = None,
    labels: list[str] | None = None,
    n_boot: int = 1000,
    cache_dir: Path | None = None,
    on_event: Callable[[str], None] = lambda msg: None,
) -> pd.DataFrame:
    """Audit the finished models of ``run_dir`` (all, or ``labels``); returns the table
    written to ``membership.csv``. ``seed`` (default: the run's) draws the non-members."""
    from recarena._classes import resolve_class
    from recarena._rundir import RunLock, check_run_folder
    from recarena.cache import resolve_cache_dir
    from recarena.experiment.runner import ExperimentRunner
    from recarena.privacy.membership import audit_model
    from recarena.summary import load_model_records

    config = check_run_folder(run_dir)
    seed = config.seed if seed is None else seed
    cache = resolve_cache_dir(cache_dir if cache_dir is not None else config.cache_dir)
    rows: list[dict[str, Any]] = []
    with RunLock(run_dir, purpose="audit", on_event=on_event):
        runner = ExperimentRunner(config, run_dir, cache, progress=False, on_event=on_event)
        runner.prepare()
        records, _ = load_model_records(run_dir)
        for rec in records:
            label = rec["label"]
            if labels is not None and label not in labels:
                continue
            settings = {
                "model_hash": rec.get("model_hash"),
                "fraction": fraction,
                "seed": seed,
                "n_boot": n_boot,
            }
            path = run_dir / "models" / label / "membership.json"
            if path.exists():
                saved = read_json(path)
                if saved.get("settings") == settings:
                    on_event(f"{label}: audited earlier, reusing its result")
                    rows.append(_row(rec, saved))
                    continue
            klass = resolve_class(rec["class"])
            params = dict(rec["params"])
            if not klass.scores_full_catalog:
                result: dict[str, Any] = {
                    "status": f"not audited: {klass.__name__} re-ranks candidates; the attack "
                    "ranks the whole catalog"
                }
            elif not klass.updates_history():
                result = {
                    "status": f"not audited: {klass.__name__} cannot score users it was not "
                    f"trained on (history_use = {klass.history_use!r})"
                }
            else:
                refit = bool(rec.get("refit", True))
                stage = "test" if refit else "valid"
                data = runner.training_data(stage)
                valid = None if refit else runner.split.valid
                on_event(f"{label}: membership audit (fit without {fraction:.0%} of the users)")
                audit = audit_model(
                    lambda klass=klass, params=params: klass(**params),
                    data,
                    fraction=fraction,
                    seed=seed,
                    n_boot=n_boot,
                    valid=valid,
                )
                result = {**audit.as_dict(), "status": "audited"}
                on_event(
                    f"{label}: attack AUC {audit.auc:.3f} [{audit.ci_low:.3f}, {audit.ci_high:.3f}]"
                )
            result["settings"] = settings
            write_json(path, result)
            rows.append(_row(rec, result))
    table = pd.DataFrame(rows, columns=MEMBERSHIP_COLUMNS)
    with atomic_path(run_dir / "membership.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def _row(rec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    params = rec.get("params") or {}
    dp = (rec.get("cost") or {}).get("dp") or {}
    return {
        "model": rec["label"],
        "family": rec.get("family", "?"),
        **{c: result.get(c) for c in MEMBERSHIP_COLUMNS if c in result},
        "dp_epsilon": dp.get("epsilon_spent", params.get("dp_epsilon")),
        "status": result.get("status"),
    }
