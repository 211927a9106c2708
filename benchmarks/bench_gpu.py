"""The language-model benchmarks of MovieLens-100k on a GPU machine, as one prepared command.

The CPU figures of the README come from `bench_cross_encoder.py` (the fine-tuned
cross-encoder and its sanity ladder, sampled-19) and `bench_lm_ml100k.py` (the frozen,
frozen-inside-SASRec and jointly trained models, leave-one-out over the full catalog). This
script runs the same two benchmarks, on the same split and candidates, with larger budgets,
on a machine that has a GPU and no network, inside a fixed wall-clock limit, and writes what
it measured where the device call brings files back (``--out``, at most 8 files):

``environment.json``  the GPU, the library versions, the bundle's float16 check
``cross_encoder.json``  the ladder's results (`bench_cross_encoder.py --out`)
``cross_encoder.log``, ``lm_ml100k.log``  each benchmark's whole output
``lm_ml100k_summary.md``, ``lm_ml100k_curves.json``  the runner's table, the learning curves
``summary.json``  per stage: the command, its exit status, its seconds, what stopped it

Budgets (the CPU recipe in brackets): the cross-encoder trains minilm-l6's six layers [three]
for up to three epochs [one] of the same 20,000 sampled positives with the same learning rate,
negatives, loss and validation, each model inside ``--cross-encoder-seconds``; the two-tower
trains 8,192 pairs an epoch [1,024] for up to 20 epochs [10]; the SASRec-based models keep
their early stopping, which the CPU runs already reached. Everything else is the CPU run's.

Prepare on a machine with network (`scripts/device_bundle.py`: the data set, minilm-l6 with
float16 weights, the wheels the GPU machine lacks, in ``.device/``), then::

    python3 benchmarks/bench_gpu.py --bundle .device --out "$OUT"       # on the GPU machine
    python benchmarks/bench_gpu.py --bundle .device --out /tmp/gpu --smoke   # a CPU check

With the device tool: ``run(command='python3 benchmarks/bench_gpu.py --bundle .device --out
"$OUT"', carry=[".device"], timeout_s=450)``; a stage the limit cut short is continued by the
same command with ``--resume`` while the machine is still warm (the runner reuses finished
models). ``--smoke`` runs both stages with tiny budgets (a pipeline check, not a
measurement).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: where the bundle's wheels are installed when the environment lacks them
SITE = Path("/tmp/recarena-site")
#: seconds kept back from the limit for writing the results
MARGIN = 15.0


def cross_encoder_command(
    args: argparse.Namespace, encoder: Path, cache: Path, runs: Path
) -> list[str]:
    command = [sys.executable, str(HERE / "bench_cross_encoder.py"), "--model", str(encoder)]
    command += ["--cache-dir", str(cache), "--output-dir", str(runs / "cross-encoder")]
    command += ["--out", str(args.out / "cross_encoder.json")]
    if args.resume:
        command += ["--keep"]
    if args.smoke:
        command += ["--users", "30", "--num-layers", "1", "--epochs", "1"]
        command += ["--max-train-pairs", "64", "--prior-passes", "1", "--valid-users", "20"]
        command += ["--eval-every", "4", "--latency-users", "2", "--budget-seconds", "60"]
    else:
        command += ["--epochs", "3", "--latency-users", "20"]
        command += ["--budget-seconds", str(args.cross_encoder_seconds)]
    return command


def lm_command(args: argparse.Namespace, encoder: Path, cache: Path, runs: Path) -> list[str]:
    command = [sys.executable, str(HERE / "bench_lm_ml100k.py"), "--splits", "loo"]
    command += ["--model", str(encoder), "--cache-dir", str(cache)]
    command += ["--output-dir", str(runs / "lm-ml100k")]
    if not args.resume:
        command += ["--overwrite"]
    if args.smoke:
        command += ["--quick", "--models", "most_popular,lm-frozen,lm-two-tower-lora"]
    else:
        command += ["--two-tower-params", json.dumps({"max_train_pairs": 8192, "epochs": 20})]
    return command


def prepare_environment(bundle: Path) -> dict[str, str]:
    """The children's environment: the repository's sources, the bundle's wheels, no network."""
    env = dict(os.environ)
    paths = [str(REPO / "src")]
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if importlib.util.find_spec("pydantic") is None and wheels:
        SITE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
            + ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE)]
            + [str(w) for w in wheels],
            check=True,
        )
        paths.append(str(SITE))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(
        {
            "RECARENA_CACHE": str(bundle / "cache"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


def describe_environment(env: dict[str, str], bundle: Path) -> dict[str, Any]:
    probe = (
        "import json, platform, torch, transformers, peft, accelerate, pandas, numpy\n"
        "cuda = torch.cuda.is_available()\n"
        "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,\n"
        " 'transformers': transformers.__version__, 'peft': peft.__version__,\n"
        " 'accelerate': accelerate.__version__, 'pandas': pandas.__version__,\n"
        " 'numpy': numpy.__version__, 'cuda': cuda,\n"
        " 'gpu': torch.cuda.get_device_name(0) if cuda else None,\n"
        " 'bf16': bool(cuda and torch.cuda.is_bf16_supported())}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": platform.processor(),
    }
    if done.returncode == 0:
        info.update(json.loads(done.stdout.strip().splitlines()[-1]))
    else:
        info["probe_error"] = done.stderr[-2000:]
    manifest = bundle / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        info["encoder_weights"] = {
            k: data["encoder"][k]
            for k in ("model", "weights_dtype", "max_abs_rounding_error", "float16_check")
        }
    return info


def run_stage(
    name: str, command: list[str], env: dict[str, str], log: Path, deadline: float
) -> dict[str, Any]:
    """Run one benchmark until it ends or the deadline comes; its output goes to ``log``."""
    left = deadline - time.monotonic()
    record: dict[str, Any] = {"stage": name, "command": command}
    if left < 30:
        record.update(status="skipped", why=f"{left:.0f} s left of the time limit")
        print(f"== {name}: skipped ({record['why']})", flush=True)
        return record
    print(f"== {name} ({left:.0f} s left): {' '.join(command)}", flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            rc = process.wait(timeout=left)
            record.update(status="done" if rc == 0 else "failed", returncode=rc)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            record.update(status="stopped", why="the time limit came first")
    record["seconds"] = round(time.monotonic() - start, 1)
    print(f"== {name}: {record['status']} after {record['seconds']} s", flush=True)
    tail = log.read_text(errors="replace").splitlines()[-40:]
    print("\n".join(tail), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / ".device")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-results")))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/recarena-gpu-runs"))
    parser.add_argument(
        "--time-limit", type=float, default=420.0, help="seconds for everything (default 420)"
    )
    parser.add_argument(
        "--cross-encoder-seconds",
        type=float,
        default=90.0,
        help="each cross-encoder's training budget (max_train_seconds)",
    )
    parser.add_argument("--stages", default="cross-encoder,lm-ml100k")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: a pipeline check")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run folders of an earlier call on the same (still warm) machine: "
        "finished models are reused, a stopped training continues",
    )
    args = parser.parse_args()
    deadline = time.monotonic() + args.time_limit - MARGIN
    bundle = args.bundle.resolve()
    encoder = bundle / "minilm-l6"
    if not (bundle / "cache" / "datasets").is_dir() or not encoder.is_dir():
        raise SystemExit(
            f"{bundle}: not a bundle of scripts/device_bundle.py (it needs cache/datasets/ "
            "and minilm-l6/); run that script first, on a machine with network"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        shutil.rmtree(args.runs, ignore_errors=True)
    env = prepare_environment(bundle)
    info = describe_environment(env, bundle)
    (args.out / "environment.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2), flush=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - {"cross-encoder", "lm-ml100k"}
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(sorted(unknown))}")
    records = []
    if "cross-encoder" in stages:
        command = cross_encoder_command(args, encoder, bundle / "cache", args.runs)
        log = args.out / "cross_encoder.log"
        records.append(run_stage("cross-encoder", command, env, log, deadline))
    if "lm-ml100k" in stages:
        command = lm_command(args, encoder, bundle / "cache", args.runs)
        log = args.out / "lm_ml100k.log"
        records.append(run_stage("lm-ml100k", command, env, log, deadline))
        folder = args.runs / "lm-ml100k"
        name = "lm-ml100k-loo" + ("-quick" if args.smoke else "")
        curves = folder / f"{name}-curves.json"
        if curves.exists():
            shutil.copy2(curves, args.out / "lm_ml100k_curves.json")
        summaries = sorted(folder.glob(f"{name}*/summary.md"))
        if summaries:
            shutil.copy2(summaries[-1], args.out / "lm_ml100k_summary.md")
    (args.out / "summary.json").write_text(
        json.dumps({"smoke": args.smoke, "stages": records}, indent=2) + "\n"
    )
    failed = [r["stage"] for r in records if r["status"] != "done"]
    if failed:
        raise SystemExit(f"not done: {', '.join(failed)} (see summary.json and the logs)")


if __name__ == "__main__":
    main()
