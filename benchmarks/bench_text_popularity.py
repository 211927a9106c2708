"""How much of an item's popularity can a language model learn from its text?

The first rung of the cross-encoder's sanity ladder (`bench_cross_encoder.py`) asks the
fine-tuned cross-encoder, given no history, to reach about MostPopular's pointwise AUC:
it must learn each item's popularity from its title and genres. This benchmark measures,
per MovieLens data set and on the same sampled-19 test candidates as the runner draws
(leave-one-out by time, seed 42, every test user), what that target takes, as GAUC (the
mean over users of the held-out item's AUC against its 19 negatives):

``MostPopular``
    The reference: training counts (train + validation).
``counts of N sampled positives``
    Popularity counted from N training interactions drawn at random (the cross-encoder's
    ``max_train_pairs`` sample): what a model that memorised its own positives exactly
    would score.
``year + genres, linear``
    Ridge regression of log popularity on release-year bins and genre indicators: what
    generalises from the metadata alone.
``frozen MODEL, linear``
    Ridge regression of log popularity on the frozen sentence vectors of the item texts,
    fitted on every item (in-sample: a linear head memorising) and out-of-fold (5 folds:
    what generalises to items the head never saw).
``fine-tuned MODEL, exact target``
    The cross-encoder's encoder (the bottom ``--num-layers`` layers, mean pooling, a linear
    head, AdamW at ``--lr``, word embeddings frozen, bf16 autocast where the CPU has it)
    regressed on each item's standardised log training count, one pass over the catalog an
    epoch: how many passes the encoder needs to memorise popularity when it is told the
    number instead of inferring it from sampled positive and negative pairs.

Usage::

    python benchmarks/bench_text_popularity.py                  # ml-100k and ml-1m
    python benchmarks/bench_text_popularity.py --datasets ml-1m --epochs 12
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from recarena._logs import quiet_libraries
from recarena.config import DataConfig
from recarena.data import load_dataset
from recarena.data.text import ItemTextTemplate
from recarena.lm.encoder import encode_catalog
from recarena.lm.loading import cpu_supports_bf16
from recarena.lm.zoo import resolve_model
from recarena.metrics.pointwise import per_user_auc
from recarena.splits import leave_one_out_split

TEMPLATE = "{title}. Genres: {genres}."
SEED = 42


def candidate_auc(scores: np.ndarray, candidates: np.ndarray, positives: np.ndarray) -> float:
    """GAUC: the mean over users of the held-out item's AUC against its sampled negatives
    (`recarena.metrics.pointwise.per_user_auc`, ties counted half)."""
    valid = candidates >= 0
    users = np.broadcast_to(np.arange(len(candidates))[:, None], candidates.shape)[valid]
    items = candidates[valid]
    labels = (candidates == positives[:, None])[valid]
    return float(per_user_auc(labels, np.asarray(scores, dtype=float)[items], users).mean())


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def metadata_features(items: Any) -> np.ndarray | None:
    """Release-year bins (two years wide) and genre indicators, or None without them."""
    if "year" not in items or "genres" not in items:
        return None
    year = np.asarray(items["year"], dtype=float)
    year = np.where(np.isfinite(year), year, np.nanmedian(year))
    bins = np.digitize(year, np.arange(1920, 2006, 2))
    years = np.eye(bins.max() + 1)[bins]
    genre_lists = [list(g) if g is not None else [] for g in items["genres"]]
    names = sorted({g for gs in genre_lists for g in gs})
    genres = np.array([[n in gs for n in names] for gs in genre_lists], dtype=float)
    return np.hstack([years, genres, np.ones((len(items), 1))])


def fine_tune_curve(
    texts: list[str],
    target: np.ndarray,
    judge: Any,
    args: argparse.Namespace,
) -> list[dict[str, float]]:
    """Per epoch: the AUC and Pearson correlation of the fine-tuned encoder's scores."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    path = resolve_model(args.model, Path(args.cache_dir)).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, num_hidden_layers=args.num_layers)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    params = [p for n, p in encoder.named_parameters() if "word_embeddings" not in n]
    optimizer = torch.optim.AdamW([*params, *head.parameters()], lr=args.lr, weight_decay=0.01)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    y = torch.tensor((target - target.mean()) / target.std(), dtype=torch.float32)
    bf16 = cpu_supports_bf16()

    def forward(rows: Any) -> Any:
        mask = batch["attention_mask"][rows]
        width = int(mask.sum(1).max())
        mask = mask[:, :width]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = encoder(input_ids=batch["input_ids"][rows][:, :width], attention_mask=mask)
            pooled = (hidden.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, True)
            return head(pooled).float()[:, 0]

    def scores() -> np.ndarray:
        encoder.eval()
        with torch.no_grad():
            out = [
                forward(torch.arange(b, min(b + 256, len(texts))))
                for b in range(0, len(texts), 256)
            ]
        return torch.cat(out).numpy()

    curve = []
    start = time.perf_counter()
    for epoch in range(args.epochs + 1):
        if epoch:
            encoder.train()
            order = torch.randperm(len(texts))
            for b in range(0, len(order), args.batch_size):
                rows = order[b : b + args.batch_size]
                loss = ((forward(rows) - y[rows]) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        s = scores()
        curve.append(
            {
                "epoch": epoch,
                "auc": judge(s),
                "pearson_log_count": float(np.corrcoef(s, target)[0, 1]),
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"  fine-tuned, epoch {epoch}: AUC {curve[-1]['auc']:.3f}, "
            f"Pearson with log count {curve[-1]['pearson_log_count']:.3f} "
            f"({curve[-1]['seconds']:.0f} s)",
            flush=True,
        )
    return curve


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_dataset(DataConfig.model_validate({"name": name}), Path(args.cache_dir))
    split = leave_one_out_split(dataset)
    split.draw_candidates(19, SEED, all_interactions=dataset.interactions)
    cands = split.candidates["test"]
    positives = split.test.set_index("user").loc[cands.users, "item"].to_numpy()

    def judge(scores: np.ndarray) -> float:
        return candidate_auc(np.asarray(scores, dtype=float), cands.items, positives)

    n_items = split.n_items
    train_items = split.train["item"].to_numpy()
    train_counts = np.bincount(train_items, minlength=n_items).astype(float)
    log_count = np.log1p(train_counts)
    fit_counts = np.bincount(split.fit_interactions("test")["item"], minlength=n_items)
    rows: dict[str, float] = {"MostPopular": judge(fit_counts)}
    print(
        f"{name}: {n_items} items, {len(train_items)} training interactions, "
        f"{len(cands.users)} test users"
    )
    print(f"  MostPopular: AUC {rows['MostPopular']:.3f}")
    rng = np.random.default_rng(0)
    for n in args.sampled_positives:
        if n < len(train_items):
            counts = np.bincount(rng.choice(train_items, n, replace=False), minlength=n_items)
            # ties broken at random, as a memorising model's scores would not tie
            key = f"counts of {n} sampled positives"
            rows[key] = judge(counts + rng.random(n_items) * 1e-3)
            print(f"  {key}: AUC {rows[key]:.3f}")
    meta = metadata_features(dataset.items)
    if meta is not None:
        rows["year + genres, linear"] = judge(meta @ ridge(meta, log_count, 1e-2))
        print(f"  year + genres, linear: AUC {rows['year + genres, linear']:.3f}")
    texts = ItemTextTemplate(TEMPLATE).render(dataset.items)
    vectors, _ = encode_catalog(texts, args.model, progress=False, cache_dir=Path(args.cache_dir))
    x = np.hstack([vectors, np.ones((len(vectors), 1))])
    rows[f"frozen {args.model}, linear, in-sample"] = judge(x @ ridge(x, log_count, 1.0))
    folds = np.random.default_rng(0).integers(0, 5, n_items)
    oof = np.zeros(n_items)
    for f in range(5):
        held = folds == f
        oof[held] = x[held] @ ridge(x[~held], log_count[~held], 1.0)
    rows[f"frozen {args.model}, linear, out-of-fold"] = judge(oof)
    for key in list(rows)[-2:]:
        print(f"  {key}: AUC {rows[key]:.3f}")
    curve = fine_tune_curve(texts, log_count, judge, args)
    return {"dataset": name, "n_items": n_items, "auc": rows, "fine_tuned": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    parser.add_argument("--cache-dir", default=os.environ.get("RECARENA_CACHE", "/tmp/rc"))
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sampled-positives", type=int, nargs="*", default=[20_000, 40_000])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    quiet_libraries(False)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = [measure(name, args) for name in args.datasets]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
