"""The worked examples at the end of DEVELOPERS.md run as written.

Each fenced Python block there that starts with ``# src/recarena/...`` is loaded as that
module (under its dotted name, for this test process only); the model's test block runs
the conformance suite on it; the registry line names the model's module and class; the
loader reads a good file and names the line of a bad one.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from recarena.config import DataConfig
from recarena.errors import DataError

GUIDE = Path(__file__).resolve().parents[1] / "DEVELOPERS.md"
EXAMPLES = GUIDE.read_text(encoding="utf-8").split("## Worked examples", 1)[1]
BLOCKS = re.findall(r"```python\n(.*?)```", EXAMPLES, flags=re.S)


def _block(first_line: str) -> str:
    found = [b for b in BLOCKS if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"DEVELOPERS.md: no single block starting {first_line!r}"
    return found[0]


def _module_from_block(path: str) -> Any:
    """The block that starts ``# <path>`` as the module ``path`` names."""
    name = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    if name in sys.modules:
        return sys.modules[name]
    source = _block(f"# {path}")
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"DEVELOPERS.md:{path}", "exec"), module.__dict__)  # noqa: S102
    return module


MODEL_FILE = "src/recarena/models/classical/cooccurrence.py"
cooccurrence = _module_from_block(MODEL_FILE)

# the model's test block, as written: defines TestCoOccurrence (the conformance suite)
_test_block = next(b for b in BLOCKS if "RecommenderConformance" in b)
exec(compile(_test_block, "DEVELOPERS.md:test_cooccurrence.py", "exec"))  # noqa: S102


def test_the_registry_line_names_the_example_model():
    calls: list[tuple[Any, ...]] = []
    registry_block = next(b for b in BLOCKS if b.lstrip().startswith("_add("))
    exec(registry_block, {"_add": lambda *args: calls.append(args)})  # noqa: S102
    ((name, target, family, _summary),) = calls
    module, _, cls = target.partition(":")
    assert module == MODEL_FILE.removeprefix("src/").removesuffix(".py").replace("/", ".")
    assert getattr(cooccurrence, cls).__name__ == cls and family == "classical"


def test_the_example_loader_reads_a_file_and_names_a_bad_line(tmp_path):
    loader = _module_from_block("src/recarena/data/loaders/jsonl_books.py")
    good = tmp_path / "books.jsonl"
    records = [
        {"user": "u1", "book": "b1", "time": 10, "title": "Dune"},
        {"user": "u1", "book": "b2", "time": 20, "title": "Emma"},
        {"user": "u2", "book": "b1", "time": 15, "title": "Dune"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    config = DataConfig(format="jsonl-books", path=str(good))
    dataset = loader.jsonl_books_format(good, config)
    assert (dataset.n_users, dataset.n_items, len(dataset.interactions)) == (2, 2, 3)
    assert sorted(dataset.items["title"]) == ["Dune", "Emma"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n" + json.dumps({"user": "u3", "book": "b9"}))
    with pytest.raises(DataError, match="missing field") as err:
        loader.jsonl_books_format(bad, config)
    assert (err.value.path, err.value.line) == (str(bad), 2)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="not a JSON object") as err:
        loader.jsonl_books_format(bad, config)
    assert err.value.line == 1
