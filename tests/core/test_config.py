from __future__ import annotations

import tomllib

import pytest

from recarena.config import builtin_config_path, dump_config, load_config, parse_config
from recarena.errors import ConfigError


def _minimal(**extra):
    return {"data": {"name": "ml-100k"}, "models": [{"name": "ease"}], **extra}


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[data]\nname = "ml-100k"\nmin_ratign = 4\n[[models]]\nname = "ease"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "unknown key 'data.min_ratign'" in str(err.value)
    assert str(path) in str(err.value)


def test_missing_models_and_bad_values():
    with pytest.raises(ConfigError, match="missing required key 'models'"):
        parse_config({"data": {"name": "ml-100k"}})
    with pytest.raises(ConfigError, match="ks"):
        parse_config(_minimal(evaluation={"ks": [0]}))
    with pytest.raises(ConfigError, match="exactly one of data.name"):
        parse_config({"data": {}, "models": [{"name": "ease"}]})


def test_duplicate_labels_and_unknown_first_stage():
    with pytest.raises(ConfigError, match="unique label"):
        parse_config({"data": {"name": "x"}, "models": [{"name": "ease"}, {"name": "ease"}]})
    with pytest.raises(ConfigError, match="first_stage model 'bm25'"):
        parse_config(
            _minimal(evaluation={"protocols": [{"kind": "first_stage", "first_stage": "bm25"}]})
        )


def test_not_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_dump_roundtrip():
    cfg = parse_config(
        _minimal(
            evaluation={"protocols": [{"kind": "full"}, {"kind": "sampled", "n_negatives": 19}]},
            models=[{"name": "ease", "grid": {"l2": [1.0, 2.0]}, "params": {"l2": 3.0}}],
        )
    )
    again = parse_config(tomllib.loads(dump_config(cfg)))
    assert again == cfg
    assert [p.label for p in again.evaluation.protocols] == ["full", "sampled-19"]


def test_builtin_quickstart_is_valid():
    cfg = load_config(builtin_config_path("quickstart"))
    assert cfg.data.name == "ml-100k"
    assert {m.name for m in cfg.models} >= {
        "ease",
        "sasrec",
        "itemknn",
        "als",
        "bpr",
        "most_popular",
    }


def test_metric_names_are_checked_and_case_insensitive():
    cfg = parse_config(_minimal(evaluation={"tune_metric": "NDCG@10", "metrics": ["HR", "ndcg"]}))
    assert cfg.evaluation.tune_metric == "ndcg@10" and cfg.evaluation.metrics == ["hr", "ndcg"]
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_config(_minimal(evaluation={"metrics": ["ndgc"]}))
    with pytest.raises(ConfigError, match="tune_metric"):
        parse_config(_minimal(evaluation={"tune_metric": "coverage@10"}))


def test_dump_leaves_out_none_parameters():
    cfg = parse_config(
        _minimal(models=[{"name": "sasrec", "params": {"eval_every": None, "hidden": 32}}])
    )
    text = dump_config(cfg)
    again = tomllib.loads(text)
    assert again["models"][0]["params"] == {"hidden": 32}
