"""The cross-encoder's data: token pairs (candidate, then the history) as the tokenizer
lays them out (`PairEncoder`, built from a tokenizer by `pair_encoder`), and the training
positives and negatives (`sample_positives`, `sample_negatives`) in token batches
(`training_loader`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recarena.errors import ConfigError


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair of token sequences.

    Found by probing the tokenizer (see `pair_template`): BERT gives
    ``[CLS] A [SEP] B [SEP]`` with token types 0 for A and 1 for B, RoBERTa/MPNet
    ``<s> A </s></s> B </s>``.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    a_type: int
    b_type: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
        """Token ids and token type ids of the pair (``a``, ``b``)."""
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = [
            *self.prefix_types,
            *([self.a_type] * len(a)),
            *self.middle_types,
            *([self.b_type] * len(b)),
            *self.suffix_types,
        ]
        return ids, types


def pair_template(tokenizer: Any) -> PairTemplate:
    """The special-token layout of ``tokenizer`` for text pairs.

    transformers 5 tokenizers no longer expose ``build_inputs_with_special_tokens``, so the
    layout is read from the encoding of a probe pair and checked on a second one.
    """

    def plain(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def pair(a: str, b: str) -> tuple[list[int], list[int]]:
        enc = tokenizer(a, b, add_special_tokens=True, return_token_type_ids=True)
        ids = list(enc["input_ids"])
        types = enc.get("token_type_ids")
        return ids, list(types) if types is not None else [0] * len(ids)

    probe_a, probe_b = "first words", "second words here"
    a, b = plain(probe_a), plain(probe_b)
    ids, types = pair(probe_a, probe_b)
    template = None
    for i in range(len(ids) - len(a) + 1):
        if ids[i : i + len(a)] != a:
            continue
        for j in range(i + len(a), len(ids) - len(b) + 1):
            if ids[j : j + len(b)] == b:
                template = PairTemplate(
                    prefix=tuple(ids[:i]),
                    middle=tuple(ids[i + len(a) : j]),
                    suffix=tuple(ids[j + len(b) :]),
                    prefix_types=tuple(types[:i]),
                    middle_types=tuple(types[i + len(a) : j]),
                    suffix_types=tuple(types[j + len(b) :]),
                    a_type=int(types[i]),
                    b_type=int(types[j]),
                )
                break
        if template is not None:
            break
    check_a, check_b = "a longer first text, with punctuation", "and another one"
    if template is None or template.build(plain(check_a), plain(check_b)) != pair(check_a, check_b):
        raise ConfigError(
            f"cannot tell how the tokenizer {type(tokenizer).__name__} joins a text pair; "
            "the cross-encoder needs an encoder tokenizer that takes sentence pairs (BERT, "
            "RoBERTa, MPNet...)"
        )
    return template


class PairEncoder:
    """Token ids of (candidate, history) pairs, built from item texts tokenized once.

    Parameters
    ----------
    template
        The tokenizer's pair layout (`pair_template`).
    item_tokens
        Token ids of every item's text, without special tokens, in item-id order.
    separator
        Token ids put between two history items.
    max_length
        Most tokens in a pair, special tokens included.
    pad_id
        Padding token id.
    use_type_ids
        Whether the model takes ``token_type_ids``.
    """

    def __init__(
        self,
        template: PairTemplate,
        item_tokens: list[list[int]],
        separator: list[int],
        max_length: int,
        pad_id: int,
        use_type_ids: bool,
    ) -> None:
        self.template = template
        self.max_length = int(max_length)
        self.room = self.max_length - template.n_special
        if self.room < 1:
            raise ConfigError(
                f"max_length {max_length} leaves no room for text next to the "
                f"{template.n_special} special tokens"
            )
        # an item text longer than the whole pair is the only text ever cut at its end
        self.item_tokens = [t[: self.room] for t in item_tokens]
        self.n_cut_items = sum(len(t) > self.room for t in item_tokens)
        self.separator = list(separator)
        self.pad_id = int(pad_id)
        self.use_type_ids = use_type_ids

    def history(self, items_newest_first: Sequence[int], prefix: Sequence[int] = ()) -> list[int]:
        """History tokens: ``prefix`` (text about the user, kept whole), then the item texts
        newest first, joined by the separator.

        Stops once no pair could hold more (the exact cut depends on the candidate and is
        made in `pair`).
        """
        out: list[int] = list(prefix)
        for n, item in enumerate(items_newest_first):
            if n:
                out.extend(self.separator)
            out.extend(self.item_tokens[int(item)])
            if len(out) >= self.room:
                break
        return out

    def pair(self, history: list[int], item: int) -> tuple[list[int], list[int]]:
        """(ids, type ids) of one pair: the candidate whole and first, then the history,
        cut from its old (right) end to fit."""
        candidate = self.item_tokens[int(item)]
        return self.template.build(candidate, history[: self.room - len(candidate)])

    def collate(self, rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
        """Right-padded ``input_ids``, ``attention_mask`` (and ``token_type_ids``) tensors,
        as wide as the longest pair of the batch (dynamic padding)."""
        import torch

        width = max(len(ids) for ids, _ in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for r, (ids, tt) in enumerate(rows):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
            types[r, : len(tt)] = tt
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self.use_type_ids:
            batch["token_type_ids"] = torch.from_numpy(types)
        return batch


def effective_max_length(tokenizer: Any, config: Any, max_length: int) -> int:
    """``max_length`` capped at what the model's position embeddings and its tokenizer take."""
    limit = int(max_length)
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if getattr(config, "model_type", "") in {
            "roberta",
            "xlm-roberta",
            "camembert",
            "mpnet",
        }:
            positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
        limit = min(limit, int(positions))
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max and model_max < 1_000_000:
        limit = min(limit, int(model_max))
    return limit


def pair_encoder(
    tokenizer: Any,
    item_token_ids: np.ndarray,
    item_token_indptr: np.ndarray,
    separator: str,
    max_length: int,
) -> PairEncoder:
    """The `PairEncoder` of ``tokenizer`` over item tokens kept as one flat array
    (`ragged`), with ``separator`` between history items."""
    ids, indptr = item_token_ids, item_token_indptr
    tokens = [ids[indptr[i] : indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]
    separator_ids = list(tokenizer(separator, add_special_tokens=False)["input_ids"])
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return PairEncoder(
        pair_template(tokenizer),
        tokens,
        separator_ids,
        max_length,
        int(pad),
        "token_type_ids" in getattr(tokenizer, "model_input_names", ()),
    )


def ragged(lists: Sequence[Sequence[int]], dtype: Any = np.int32) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((v for x in lists for v in x), dtype=dtype, count=int(indptr[-1]))
    return flat, indptr


def sample_negatives(
    exclude: sp.csr_matrix, users: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` items per entry of ``users``, uniform over the items not in the user's row.

    Returns an int64 array of shape (len(users), n); -1 where a user has no item left to
    draw (the user interacted with every item).
    """
    exclude = exclude.tocsr()
    n_items = exclude.shape[1]
    users = np.asarray(users, dtype=np.int64)
    out = rng.integers(0, n_items, size=(len(users), n), dtype=np.int64)
    if n == 0 or len(users) == 0:
        return out
    rows = np.repeat(np.arange(exclude.shape[0], dtype=np.int64), np.diff(exclude.indptr))
    keys = np.sort(rows * n_items + exclude.indices.astype(np.int64))

    def excluded(cand: np.ndarray, who: np.ndarray) -> np.ndarray:
        k = who * n_items + cand
        pos = np.minimum(np.searchsorted(keys, k), max(len(keys) - 1, 0))
        return (keys[pos] == k) if len(keys) else np.zeros(k.shape, dtype=bool)

    who = np.broadcast_to(users[:, None], out.shape)
    bad = excluded(out, who)
    for _ in range(50):  # rejection sampling; a user with few items left needs many rounds
        if not bad.any():
            return out
        out[bad] = rng.integers(0, n_items, size=int(bad.sum()), dtype=np.int64)
        bad = excluded(out, who)
    for r in np.unique(np.nonzero(bad)[0]):  # the rest: draw from the explicit complement
        left = np.setdiff1d(
            np.arange(n_items),
            exclude.indices[exclude.indptr[users[r]] : exclude.indptr[users[r] + 1]],
        )
        cols = np.nonzero(bad[r])[0]
        out[r, cols] = rng.choice(left, size=len(cols)) if len(left) else -1
    return out


@dataclass
class TrainingPositives:
    """Held-in positives: (user, position) pairs of the training sequences.

    The history of positive ``e`` is ``flat_items[start[e]:stop[e]]`` (time order; read
    backwards for newest first) and its item ``flat_items[stop[e]]``.
    """

    #: every training item, users one after another, each in time order
    flat_items: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    user: np.ndarray

    @property
    def item(self) -> np.ndarray:
        return self.flat_items[self.stop]

    def __len__(self) -> int:
        return len(self.stop)


def sample_positives(
    sequences: Sequence[np.ndarray],
    *,
    history_len: int,
    max_pairs: int | None,
    rng: np.random.Generator,
) -> TrainingPositives:
    """Held-in positives (user, position) with the ``history_len`` items before them.

    Every position of every user's sequence is a candidate positive (the first one with an
    empty history, as a user without history is scored); at most ``max_pairs`` of them are
    drawn uniformly without replacement, so items come up in proportion to their
    popularity, as held-out items do.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if len(sequences)
        else np.empty(0, np.int64)
    )
    users_all = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    eligible = np.arange(len(flat), dtype=np.int64)
    if max_pairs is not None and len(eligible) > max_pairs:
        eligible = np.sort(rng.choice(eligible, size=int(max_pairs), replace=False))
    users = users_all[eligible]
    start = np.maximum(offsets[users], eligible - history_len)
    return TrainingPositives(flat_items=flat, start=start, stop=eligible, user=users)


def training_loader(
    positives: TrainingPositives,
    seen: sp.csr_matrix,
    encoder: PairEncoder,
    *,
    n_negatives: int,
    batch_size: int,
    seed: int,
    prefix_of: Callable[[int], list[int]] | None = None,
    offsets: np.ndarray | None = None,
) -> Any:
    """Shuffled batches of ``batch_size`` positives, each with ``n_negatives`` negatives.

    A batch holds the token tensors of its pairs (each positive, then its negatives, with
    the positive's history), ``labels`` (1 for the positive) and ``valid`` (False where a
    user who has every item has no negative: the positive stands in, masked out of the
    loss). Negatives are drawn as batches are built, afresh each epoch, from a generator of
    their own (seeded by ``seed``): the data order (the loader's generator, seeded by
    ``seed`` too) does not depend on them. ``prefix_of(user)``: the tokens put before a
    user's history (`PairEncoder.history`). ``offsets``: a fixed logit per item, added to
    the network's (``offset`` in the batch, one per pair).
    """
    import torch

    negative_rng = np.random.default_rng([seed, 4243])

    def collate(indices: list[int]) -> dict[str, Any]:
        idx = np.asarray(indices, dtype=np.int64)
        users = positives.user[idx]
        negatives = sample_negatives(seen, users, n_negatives, negative_rng)
        items = np.concatenate([positives.item[idx][:, None], negatives], axis=1)
        rows = []
        # a user who has every item has no negative (-1): the positive stands in, masked
        # out of the loss
        shown = np.where(items >= 0, items, items[:, :1])
        for r, e in enumerate(idx):
            hist = positives.flat_items[positives.start[e] : positives.stop[e]][::-1]
            tokens = encoder.history(hist, prefix_of(int(users[r])) if prefix_of else ())
            rows.extend(encoder.pair(tokens, int(i)) for i in shown[r])
        batch = encoder.collate(rows)
        if offsets is not None:
            batch["offset"] = torch.from_numpy(offsets[shown].astype(np.float32))
        labels = np.zeros(items.shape, dtype=np.float32)
        labels[:, 0] = 1.0
        batch["labels"] = torch.from_numpy(labels)
        batch["valid"] = torch.from_numpy(items >= 0)
        return batch

    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        range(len(positives)),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collate,
    )
