"""Run directories for the report tests, made by real (tiny) experiments on a local CSV.

Nothing here touches the network or the cache: the data set is written by the fixture and
loaded with ``data.format = "csv"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.runner import run_experiment

WORDS = (
    "space rocket galaxy orbit",
    "cooking recipe kitchen baking",
    "football match goal league",
    "piano concert symphony violin",
)


def write_csv_dataset(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Users who mostly read items of their own cluster; a few popular items everyone sees.

    Some users have a short history (cold users) and some items appear only once (tail).
    """
    rng = np.random.default_rng(seed)
    n_clusters, items_per_cluster, users_per_cluster = 4, 15, 20
    rows = []
    t = 1_600_000_000
    for c in range(n_clusters):
        for u in range(users_per_cluster):
            history = 3 if u < 3 else int(rng.integers(8, 13))
            picks = rng.choice(items_per_cluster, size=history, replace=False)
            for p in picks:
                t += int(rng.integers(30, 90))
                item = f"i{c}_{p}" if rng.random() > 0.15 else f"pop{int(rng.integers(0, 3))}"
                rows.append((f"u{c}_{u}", item, t, float(rng.integers(3, 6))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    inter = inter.drop_duplicates(["user_id", "item_id"])
    items = {
        f"i{c}_{p}": (f"{WORDS[c]} story {p}", f"genre{c}")
        for c in range(n_clusters)
        for p in range(items_per_cluster)
    }
    items.update({f"pop{j}": (f"blockbuster {j}", "genre0|genre1") for j in range(3)})
    item_frame = pd.DataFrame(
        [(k, v[0], v[1]) for k, v in items.items()], columns=["item_id", "title", "genres"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    inter_path, items_path = folder / "interactions.csv", folder / "items.csv"
    inter.to_csv(inter_path, index=False)
    item_frame.to_csv(items_path, index=False)
    return inter_path, items_path


def experiment(
    name: str,
    data_dir: Path,
    models: list[dict[str, Any]],
    *,
    split: dict[str, Any] | None = None,
    protocols: list[dict[str, Any]] | None = None,
    **evaluation: Any,
) -> dict[str, Any]:
    inter, items = data_dir / "interactions.csv", data_dir / "items.csv"
    return {
        "name": name,
        "seed": 7,
        "data": {
            "format": "csv",
            "path": str(inter),
            "items_path": str(items),
            "item_columns": {"item": "item_id", "title": "title", "genres": "genres"},
            "list_columns": ["genres"],
        },
        "split": split or {"method": "leave_one_out"},
        "evaluation": {
            "ks": [5, 10],
            "protocols": protocols or [{"kind": "full"}, {"kind": "sampled", "n_negatives": 9}],
            "bootstrap": 200,
            "latency_users": 5,
            "refit": False,
            **evaluation,
        },
        "models": models,
    }


SASREC = {
    "name": "sasrec",
    "params": {
        "epochs": 3,
        "hidden": 16,
        "max_len": 16,
        "n_blocks": 1,
        "batch_size": 64,
        "device": "cpu",
        "num_threads": 1,
        "mixed_precision": False,
    },
    "grid": {},
    "max_eval_users": 40,
}


@pytest.fixture(scope="session")
def report_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report-data")
    write_csv_dataset(folder)
    return folder


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report-runs")


def _run(config: dict[str, Any], out: Path, cache: Path) -> Path:
    cfg = parse_config(config)
    result = run_experiment(cfg, output_dir=out, cache_dir=cache, progress=False)
    return result.run_dir


@pytest.fixture(scope="session")
def main_run(report_data_dir: Path, runs_dir: Path) -> Path:
    """Classical models, a content model, SASRec on a user sample and one failing model."""
    models = [
        {"name": "random"},
        {"name": "most_popular"},
        {"name": "ease", "grid": {"l2": [1.0, 10.0]}},
        {"name": "tfidf", "grid": {}},
        SASREC,
        {"name": "itemknn", "label": "broken", "params": {"no_such_parameter": 1}},
    ]
    cfg = experiment("main", report_data_dir, models)
    return _run(cfg, runs_dir / "a", runs_dir / "cache")


@pytest.fixture(scope="session")
def second_run(report_data_dir: Path, runs_dir: Path) -> Path:
    """The same data, split and candidates; a label shared with the main run."""
    models = [{"name": "ease", "grid": {}, "params": {"l2": 50.0}}, {"name": "itemknn", "grid": {}}]
    cfg = experiment("second", report_data_dir, models)
    return _run(cfg, runs_dir / "b", runs_dir / "cache")


@pytest.fixture(scope="session")
def other_split_run(report_data_dir: Path, runs_dir: Path) -> Path:
    """The same data with a random split: must not merge with the others."""
    cfg = experiment(
        "other-split",
        report_data_dir,
        [{"name": "most_popular"}],
        split={"method": "random", "valid_ratio": 0.1, "test_ratio": 0.2},
    )
    return _run(cfg, runs_dir / "c", runs_dir / "cache")


@pytest.fixture(scope="session")
def other_seed_run(report_data_dir: Path, runs_dir: Path) -> Path:
    """Same data and leave-one-out split, but sampled candidates drawn from another seed."""
    cfg = experiment("other-seed", report_data_dir, [{"name": "most_popular"}])
    cfg["seed"] = 8
    return _run(cfg, runs_dir / "d", runs_dir / "cache")
