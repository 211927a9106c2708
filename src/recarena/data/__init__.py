"""Data: the `Dataset`, item text, loaders for real formats, the catalog, preprocessing.

`load_dataset` is the one entry point an experiment uses: it reads ``[data]`` (a catalog
``name``, or local files with a ``format`` and ``path``), then applies the preprocessing
steps of ``[data.preprocess]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recarena.config import DataConfig, PreprocessConfig
from recarena.data.catalog import (
    dataset_info,
    fetch_dataset,
    list_catalog,
    load_catalog_dataset,
)
from recarena.data.dataset import Dataset, interactions_csr, tie_order
from recarena.data.loaders import FORMATS, get_format_loader, register_format
from recarena.data.preprocess import deduplicate, k_core, rating_threshold
from recarena.data.text import ItemTextTemplate

log = logging.getLogger(__name__)

# DataConfig keys that describe local files: a catalog data set has its own loader
_FILE_SETTINGS = {
    "format", "items_path", "users_path", "columns", "item_columns", "user_columns",
    "list_columns", "list_separator", "separator", "encoding", "timestamp_unit",
}  # fmt: skip


def load_dataset(config: DataConfig, cache_dir: Path | None = None) -> Dataset:
    """Load the data an experiment names, then preprocess it.

    Parameters
    ----------
    config
        ``config.name`` names a catalog data set (fetched into the cache when missing);
        otherwise ``config.format`` picks a loader from `FORMATS` for ``config.path``.
        ``config.ties`` decides how the loader's `Dataset.from_raw` orders equal
        timestamps (`recarena.data.dataset.tie_order`).
        Relative paths (``path``, ``items_path``, ``users_path``) are relative to the
        current directory.
    cache_dir
        Cache root for catalog data sets; None uses the default cache folder
        (`recarena.cache.resolve_cache_dir`: ``$RECARENA_CACHE`` or ``~/.cache/recarena``).

    Returns
    -------
    Dataset
        With every preprocessing step recorded in ``info["preprocessing"]``; a
        ``text_template`` given in the configuration is checked against the item fields
        and recorded as ``info["text_template"]``.

    Raises
    ------
    DataError
        For files that cannot be read, an unknown format (the message lists the formats),
        or no interactions left after a preprocessing step.
    ConfigError
        For a text template that names fields the items do not have.
    """
    if config.name is not None:
        from recarena.cache import resolve_cache_dir

        ignored = sorted(set(config.model_fields_set) & _FILE_SETTINGS)
        if ignored:
            log.warning(
                "data.%s apply to local files and are ignored for catalog data set %r",
                ", data.".join(ignored),
                config.name,
            )
        with tie_order(config.ties):
            dataset = load_catalog_dataset(config.name, resolve_cache_dir(cache_dir))
    else:
        assert config.path is not None and config.format is not None  # DataConfig checks this
        loader = get_format_loader(config.format)
        with tie_order(config.ties):
            dataset = loader(Path(config.path).expanduser(), config)
    dataset = preprocess(dataset, config.preprocess)
    if config.text_template:
        ItemTextTemplate(config.text_template, config.text_max_chars).validate(
            list(dataset.items.columns)
        )
        dataset.info["text_template"] = config.text_template
    return dataset


def preprocess(dataset: Dataset, settings: PreprocessConfig) -> Dataset:
    """Apply, in this order, the rating threshold, de-duplication and the k-core filter.

    Each step that runs appends its record (parameters, sizes before and after) to
    ``dataset.info["preprocessing"]``.
    """
    if settings.min_rating is not None:
        dataset = rating_threshold(dataset, settings.min_rating)
    if settings.dedup != "none":
        dataset = deduplicate(dataset, keep=settings.dedup)
    if settings.user_core > 0 or settings.item_core > 0:
        dataset = k_core(dataset, settings.user_core, settings.item_core)
    for step in dataset.info.get("preprocessing", []):
        log.info(
            "%s: %s kept %d of %d interactions",
            dataset.name,
            step["step"],
            step["interactions_after"],
            step["interactions_before"],
        )
    return dataset


__all__ = [
    "FORMATS",
    "Dataset",
    "ItemTextTemplate",
    "dataset_info",
    "fetch_dataset",
    "interactions_csr",
    "list_catalog",
    "load_catalog_dataset",
    "load_dataset",
    "preprocess",
    "register_format",
]
