"""Privacy against quality on MovieLens-100k: SASRec, a text-SASRec and EASE trained with
differential privacy at several epsilons beside the non-private ones, and a
membership-inference audit of each.

One experiment through the runner (leave-one-out by time, full-catalog ranking, bootstrap
intervals over users): MostPopular, EASE, SASRec, and SASRec with DP-SGD at each
``--epsilons`` (Opacus; the privacy unit is one user's whole sequence, users Poisson-sampled
at rate ``batch_size / n_users``, each user's gradient clipped to norm 1; see
`recarena.privacy.dp`). The language-model family enters as the text-SASRec with ID
embeddings (frozen minilm-l6 item vectors inside SASRec), without DP and with DP-SGD at each
``--text-epsilons`` (default 8): the pretrained encoder and the item texts are public, and
the users' sequences are protected exactly as SASRec's. The jointly trained family enters
as the two-tower (LoRA on minilm-l6's top two layers, at its CPU defaults), without DP and
with user-level DP-SGD at each ``--tower-epsilons`` (default 8; `recarena.models.language
.two_tower.private`: uniform negatives instead of in-batch ones, over its 10-epoch budget).
The SASRec-based models share one
budget: ``max_len`` 50, patience 3 (with ``patience_steps``), at most ``--dp-epochs``
epochs for the private ones (the noise is calibrated to that budget; early stopping can
only spend less). The private EASE at each
``--ease-epsilons`` releases a noisy Gram matrix (the Gaussian mechanism, `recarena.privacy
.gram`; the privacy unit is one user, weighted down to at most ``dp_max_items``, default
50) and chooses ``l2`` on validation from `DP_EASE_GRID` (every point post-processing of
the one release). The refit on train + validation is the private training whose epsilon is
reported (Opacus's RDP accountant, from ``cost.json``).

Then `recarena.privacy.audit.audit_run` refits each model without 10% of the users
(non-members) and attacks it: the rank percentile of each user's last training item given
the rest of the history, members against non-members (attack AUC; .5 is chance).

Prints the privacy-utility table (NDCG@10 with its interval, epsilon spent, attack AUC with
its interval) and writes it to ``<output-dir>/privacy.json``; a stopped run resumes.

Usage::

    python benchmarks/bench_privacy.py --output-dir /tmp/bench-privacy --threads 1
    python benchmarks/bench_privacy.py --epsilons 8 --quick     # pipeline check
    python benchmarks/bench_privacy.py --epsilons 8 --ease-epsilons --text-epsilons \
        --tower-epsilons --dp-recipes default 512:3e-3:80 --skip-audit   # DP-SGD recipes
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from recarena._logs import quiet_libraries
from recarena.config import parse_config
from recarena.privacy.audit import audit_run
from recarena.runner import run_experiment

#: the private EASE's l2 grid: the noise needs far more regularisation than EASE's own grid
DP_EASE_GRID = {"l2": [500.0, 2000.0, 8000.0, 32000.0, 128000.0, 512000.0, 2048000.0]}


def private_twins(
    name: str,
    label: str,
    params: dict[str, Any],
    epsilons: list[float],
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """The model ``name`` with DP-SGD at each epsilon (``<label>-dp-eps<epsilon>``), its
    other parameters ``params``, over an ``epochs`` budget where one is given."""
    budget = {} if epochs is None else {"epochs": epochs}
    return [
        {
            "name": name,
            "label": f"{label}-dp-eps{eps:g}",
            "grid": {},
            "params": {**params, **budget, "dp_epsilon": eps},
        }
        for eps in epsilons
    ]


def _recipe(text: str, default_epochs: int) -> tuple[int, float, int]:
    """``BATCH:LR[:EPOCHS]`` of ``--dp-recipes``, e.g. ``512:3e-3:80``."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--dp-recipes: expected BATCH:LR or BATCH:LR:EPOCHS, got {text!r}")
    try:
        batch, lr = int(parts[0]), float(parts[1])
        epochs = int(parts[2]) if len(parts) == 3 else default_epochs
    except ValueError:
        raise SystemExit(
            f"--dp-recipes: expected BATCH:LR[:EPOCHS] with numbers, got {text!r}"
        ) from None
    return batch, lr, epochs


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    sequential: dict[str, Any] = {"max_len": 50, "patience": 3, "num_threads": args.threads}
    if args.quick:
        sequential.update(patience=1, patience_steps=0)
    models: list[dict[str, Any]] = [
        {"name": "most_popular", "grid": {}},
        {"name": "ease"},
        {"name": "sasrec", "grid": {}, "params": {**sequential}},
    ]
    for recipe in args.dp_recipes:
        if recipe == "default":  # the model's own batch size and learning rate
            models += private_twins("sasrec", "sasrec", sequential, args.epsilons, args.dp_epochs)
            continue
        # another DP-SGD recipe for the private SASRec: more users a step (less noise per
        # user for the same epsilon, fewer steps) and a learning rate to match
        batch, lr, epochs = _recipe(recipe, args.dp_epochs)
        models += private_twins(
            "sasrec",
            f"sasrec-b{batch}-lr{lr:g}-e{epochs}",
            {**sequential, "batch_size": batch, "lr": lr},
            args.epsilons,
            epochs,
        )
    if args.text_epsilons:
        # the language-model family: frozen minilm-l6 item vectors inside SASRec (with ID
        # embeddings), the same budget; the encoder is public, the users' data go through
        # DP-SGD exactly as SASRec's do
        text = {**sequential, "model": "minilm-l6", "id_embedding": True}
        models.append(
            {"name": "lm-text-sasrec", "label": "lm-text-sasrec+id", "grid": {}, "params": text}
        )
        models += private_twins(
            "lm-text-sasrec", "lm-text-sasrec+id", text, args.text_epsilons, args.dp_epochs
        )
    if args.tower_epsilons:
        # the jointly trained language model: the two-tower (LoRA on minilm-l6's top two
        # layers, ID embeddings, attention pooling) at its CPU defaults, without DP and
        # with user-level DP-SGD (uniform negatives instead of in-batch ones)
        tower = {"model": "minilm-l6", "num_threads": args.threads}
        models.append({"name": "lm-two-tower", "grid": {}, "params": tower})
        models += private_twins("lm-two-tower", "lm-two-tower", tower, args.tower_epsilons)
    for eps in args.ease_epsilons:
        models.append(
            {
                "name": "ease",
                "label": f"ease-dp-eps{eps:g}",
                "grid": DP_EASE_GRID,
                "params": {"dp_epsilon": eps},
            }
        )
    return {
        "name": "privacy-ml100k",
        "output_dir": args.output_dir,
        "data": {"name": "ml-100k"},
        "split": {"method": "leave_one_out"},
        "evaluation": {"protocols": [{"kind": "full"}], "bootstrap": 1000},
        "models": models,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output-dir", default="runs/bench_privacy")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--ease-epsilons", type=float, nargs="*", default=[1.0, 4.0, 8.0])
    parser.add_argument(
        "--text-epsilons",
        type=float,
        nargs="*",
        default=[8.0],
        help="epsilons of the private text-SASRec (none: no text-SASRec at all)",
    )
    parser.add_argument(
        "--tower-epsilons",
        type=float,
        nargs="*",
        default=[8.0],
        help="epsilons of the private two-tower (none: no two-tower at all)",
    )
    parser.add_argument("--dp-epochs", type=int, default=40)
    parser.add_argument(
        "--dp-recipes",
        nargs="+",
        default=["default"],
        help="the DP-SGD recipes of the private SASRec at each --epsilons: 'default' (the "
        "model's batch size 128 and learning rate 1e-3, over --dp-epochs; label "
        "sasrec-dp-eps8) or BATCH:LR[:EPOCHS] (e.g. 512:3e-3:80; label "
        "sasrec-b512-lr0.003-e80-dp-eps8)",
    )
    parser.add_argument(
        "--skip-audit",
        action="store_true",
        help="no membership audit (its columns stay empty): for comparing recipes",
    )
    parser.add_argument("--fraction", type=float, default=0.1, help="non-members' share")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (pipeline check)")
    args = parser.parse_args()
    if args.quick:
        args.dp_epochs = 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    config = parse_config(experiment(args))
    if args.quick:
        config.models[2].params["epochs"] = 2
    start = time.perf_counter()
    result = run_experiment(config, cache_dir=args.cache_dir, progress=False, on_event=print)
    run_seconds = time.perf_counter() - start
    start = time.perf_counter()
    audit = None
    if not args.skip_audit:
        audit = audit_run(
            result.run_dir, fraction=args.fraction, cache_dir=args.cache_dir, on_event=print
        )
    audit_seconds = time.perf_counter() - start
    summary = pd.read_csv(result.run_dir / "summary.csv")
    ndcg = summary[
        (summary["protocol"] == "full")
        & (summary["segment"] == "all")
        & (summary["metric"] == "ndcg@10")
    ].set_index("model")
    rows = []
    for label in [m.display_name for m in config.models]:
        done = json.loads((result.run_dir / "models" / label / "DONE.json").read_text())
        dp = (done.get("cost") or {}).get("dp") or {}
        log_path = result.run_dir / "models" / label / "training_log.json"
        log = json.loads(log_path.read_text()) if log_path.exists() else []
        member = (
            audit.set_index("model").loc[label]
            if audit is not None
            else {"attack_auc": None, "ci_low": None, "ci_high": None, "status": "not run"}
        )
        rows.append(
            {
                "model": label,
                "ndcg@10": float(ndcg.loc[label, "mean"]),
                "ci": [float(ndcg.loc[label, "ci_low"]), float(ndcg.loc[label, "ci_high"])],
                "epsilon_spent": dp.get("epsilon_spent"),
                "noise_multiplier": dp.get("noise_multiplier"),
                "steps": dp.get("steps"),
                "epochs": done["params"].get("epochs"),
                "fit_seconds": (done.get("cost") or {}).get("fit_seconds"),
                "attack_auc": None if pd.isna(member["attack_auc"]) else member["attack_auc"],
                "attack_ci": [member["ci_low"], member["ci_high"]],
                "audit": member["status"],
                "final_loss": log[-1].get("loss") if log else None,
            }
        )
    out = {"run_seconds": run_seconds, "audit_seconds": audit_seconds, "rows": rows}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "privacy.json").write_text(json.dumps(out, indent=2, default=str))
    print(f"\nrun {run_seconds:.0f} s, audit {audit_seconds:.0f} s")
    print(f"{'model':<20} {'NDCG@10 [95% CI]':<28} {'epsilon':>8} {'attack AUC [95% CI]':<24}")
    for r in rows:
        eps = "inf" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.2f}"
        auc = (
            "-"
            if r["attack_auc"] is None
            else f"{r['attack_auc']:.3f} [{r['attack_ci'][0]:.3f}, {r['attack_ci'][1]:.3f}]"
        )
        print(
            f"{r['model']:<20} {r['ndcg@10']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
            f"{'':<6} {eps:>8} {auc}"
        )


if __name__ == "__main__":
    main()
