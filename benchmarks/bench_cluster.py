"""The quickstart at three training seeds, in process and on a two-node local Ray cluster.

One script, side by side on the same machine:

1. **In process, one thread**: the built-in quickstart (ML-100k, leave-one-out, nine
   classical models, each tuned on validation) with ``seeds = [42, 43, 44]``: the models
   that take a seed (Random, ALS, BPR, SASRec) run once per seed, the others once. BLAS and
   torch on one thread (ALS's own ``num_threads = 1``), so that each run uses one core.
2. **On a two-node local cluster**: ``ray start --head`` on 127.0.0.2 and a second node on
   127.0.0.3, one CPU each (loopback addresses of their own: Ray would otherwise use the
   machine's address), the same experiment with ``--executor ray``: one task per (model,
   seed), one CPU and one thread each.

Printed: both wall times and the speed-up; that the per-user metric files of every model
are byte-identical between the two; the scheduling overhead of one task (the round trip of
a MostPopular task through Ray against the same call in process, median of ``--probes``);
and the seed table of the run (per model: NDCG@10 at each seed, the standard deviation
across seeds beside the half-width of the interval over users; SASRec's is the figure this
script exists for).

Usage::

    python benchmarks/bench_cluster.py --out cluster.json      # about 15 minutes on 2 cores
    python benchmarks/bench_cluster.py --parts local           # the seeds table alone
"""

from __future__ import annotations

import os

# one thread for BLAS in this process (the in-process run); set before numpy loads
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from recarena._logs import quiet_libraries  # noqa: E402
from recarena.config import builtin_config_path, load_config  # noqa: E402
from recarena.experiment.local_cluster import local_cluster  # noqa: E402
from recarena.runner import run_experiment  # noqa: E402


def experiment(output_dir: str, seeds: list[int]):
    config = load_config(builtin_config_path("quickstart"))
    models = []
    for mc in config.models:
        if mc.name == "als":  # implicit's ALS: every core unless told
            mc = mc.model_copy(update={"params": {**mc.params, "num_threads": 1}})
        models.append(mc)
    return config.model_copy(
        update={"seeds": seeds, "output_dir": output_dir, "name": "bench-cluster", "models": models}
    )


def measured_files(run: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted((run / "models").rglob("*")):
        if path.is_file() and path.name in ("per_user.parquet", "metrics.json"):
            out[path.relative_to(run).as_posix()] = path.read_bytes()
    return out


def task_overhead(run_dir: Path, probes: int) -> dict[str, float]:
    """Median seconds of a MostPopular task: in process, and through Ray (round trip)."""
    import ray

    from recarena.experiment.distributed import run_task, setup_files

    config = json.loads(json.dumps(load_config(run_dir / "config.toml").model_dump(mode="json")))
    setup = setup_files(run_dir)
    here, remote = [], []
    task = ray.remote(run_task).options(num_cpus=1)
    ref = ray.put(setup)
    for _ in range(probes):
        t = time.perf_counter()
        run_task(config, setup, "most_popular", {}, None, 1)
        here.append(time.perf_counter() - t)
        t = time.perf_counter()
        ray.get(task.remote(config, ref, "most_popular", {}, None, 1))
        remote.append(time.perf_counter() - t)
    return {
        "in_process_s": statistics.median(here),
        "through_ray_s": statistics.median(remote),
        "overhead_s": statistics.median(remote) - statistics.median(here),
    }


def seed_table(run: Path) -> list[dict]:
    table = pd.read_csv(run / "summary_seeds.csv")
    table = table[(table["segment"] == "all") & (table["metric"] == "ndcg@10")]
    summary = pd.read_csv(run / "summary.csv")
    per_run = summary[(summary["segment"] == "all") & (summary["metric"] == "ndcg@10")]
    per_run = per_run.set_index("model")["mean"]
    rows = []
    for _, r in table.sort_values("mean", ascending=False).iterrows():
        model = str(r["model"])
        labels = [m for m in per_run.index if m == model or m.startswith(model + "@seed")]
        sd = None if pd.isna(r["seed_sd"]) else float(r["seed_sd"])
        rows.append(
            {
                "model": model,
                "per_seed": [round(float(per_run[m]), 4) for m in labels],
                "mean": round(float(r["mean"]), 4),
                "ci_users_and_seeds": [round(float(r["ci_low"]), 4), round(float(r["ci_high"]), 4)],
                "seed_sd": None if sd is None else round(sd, 4),
                "user_half_width": round(float(r["user_half_width"]), 4),
                "deterministic": bool(r["deterministic"]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=os.environ.get("RECARENA_CACHE"))
    parser.add_argument("--output-dir", default="/tmp/recarena-bench-cluster")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--parts", default="local,cluster")
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    parts = set(args.parts.split(","))
    out: dict = {
        "seeds": args.seeds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    root = Path(args.output_dir)
    shutil.rmtree(root, ignore_errors=True)

    import torch

    torch.set_num_threads(1)

    def printer(start: float):
        return lambda msg: print(f"[{time.perf_counter() - start:7.1f} s] {msg}", flush=True)

    local_run = None
    if "local" in parts:
        start = time.perf_counter()
        result = run_experiment(
            experiment(str(root / "local"), args.seeds),
            cache_dir=args.cache_dir,
            progress=False,
            on_event=printer(start),
        )
        out["in_process_seconds"] = round(time.perf_counter() - start, 1)
        local_run = result.run_dir
        out["seed_table"] = seed_table(local_run)
        out["failed_in_process"] = result.failed
    if "cluster" in parts:
        import ray

        with local_cluster(root / "ray", nodes=2) as cluster:
            print(f"cluster: nodes {cluster.node_addresses}", flush=True)
            config = experiment(str(root / "cluster"), args.seeds)
            config = config.model_copy(
                update={
                    "execution": config.execution.model_copy(
                        update={
                            "executor": "ray",
                            "address": cluster.address,
                            "node_ip_address": cluster.node_addresses[0],
                        }
                    )
                }
            )
            events: list[str] = []
            start = time.perf_counter()
            log = printer(start)
            result = run_experiment(
                config,
                cache_dir=args.cache_dir,
                progress=False,
                on_event=lambda msg: (events.append(msg), log(msg)),
            )
            out["cluster_seconds"] = round(time.perf_counter() - start, 1)
            out["failed_on_cluster"] = result.failed
            out["tasks"] = sum(e.startswith("ray: ") and (" done on " in e) for e in events)
            ray.init(
                address=cluster.address,
                _node_ip_address=cluster.node_addresses[0],
                logging_level="ERROR",
            )
            out["task_overhead"] = {
                k: round(v, 3) for k, v in task_overhead(result.run_dir, args.probes).items()
            }
            ray.shutdown()
            if local_run is not None:
                a, b = measured_files(local_run), measured_files(result.run_dir)
                out["identical_metric_files"] = a == b
                out["metric_files_compared"] = len(a)
                out["speed_up"] = round(out["in_process_seconds"] / out["cluster_seconds"], 2)
    print(json.dumps({k: v for k, v in out.items() if k != "seed_table"}, indent=2))
    for row in out.get("seed_table", []):
        per_seed = ", ".join(f"{v:.4f}" for v in row["per_seed"])
        sd = "-" if row["seed_sd"] is None else f"{row['seed_sd']:.4f}"
        print(
            f"{row['model']:<14} {per_seed:<26} mean {row['mean']:.4f} "
            f"[{row['ci_users_and_seeds'][0]:.4f}, {row['ci_users_and_seeds'][1]:.4f}] "
            f"sd {sd} user± {row['user_half_width']:.4f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
