"""The checks made before a run reads data, as functions of the experiment alone
(`recarena.experiment.preflight`, `recarena.experiment.tuning`): no runner, no folder."""

from __future__ import annotations

from recarena.config import parse_config
from recarena.experiment import preflight
from recarena.experiment.protocols import protocols_for
from recarena.experiment.tuning import grid_points, trial_key
from recarena.models.registry import create_model


def _config(models, **evaluation):
    return parse_config(
        {
            "name": "t",
            "data": {"name": "ml-100k"},
            "split": {"method": "random", "valid_ratio": 0.1, "test_ratio": 0.2},
            "evaluation": evaluation,
            "models": models,
        }
    )


def test_every_problem_is_listed_at_once():
    config = _config(
        [
            {"name": "no-such-model"},
            {"name": "ease", "params": {"l2": -1.0}},
            {"name": "itemknn", "grid": {"k": [10, 0]}},
            {"name": "lm-generative", "label": "decoder"},
        ],
        protocols=[{"kind": "full"}, {"kind": "full"}],
    )
    problems = preflight.config_problems(config, config.models)
    text = "\n".join(problems)
    assert "unknown model 'no-such-model'" in text
    assert "model 'ease' (params in the experiment)" in text and "l2" in text
    assert "model 'itemknn' (grid point" in text and '"k": 0' in text
    assert "protocol 'full' is given 2 times" in text
    # a re-ranker in a full-ranking experiment measures nothing
    assert "model 'decoder' fits none of the experiment's protocols" in text
    assert len(problems) == 5


def test_protocols_for_a_re_ranker_and_a_first_stage():
    config = _config(
        [{"name": "ease"}, {"name": "lm-generative"}],
        protocols=[
            {"kind": "full"},
            {"kind": "first_stage", "first_stage": "ease", "top_n": 20},
        ],
    )
    ease, decoder = config.models
    chosen, skipped = protocols_for(config, ease, create_model("ease"))
    assert [p.label for p in chosen] == ["full"] and list(skipped) == ["first-stage-ease-20"]
    chosen, skipped = protocols_for(config, decoder, create_model("lm-generative"))
    assert [p.label for p in chosen] == ["first-stage-ease-20"] and list(skipped) == ["full"]


def test_grid_points_leave_out_fixed_params_and_trial_keys_follow_the_setup():
    config = _config([{"name": "ease", "params": {"l2": 100.0}}, {"name": "most_popular"}])
    ease, popular = config.models
    grid, points = grid_points(ease, create_model("ease", ease.params), config.seed)
    assert grid == {} and points == [{}]  # l2 is fixed: the default grid has nothing left
    grid, points = grid_points(popular, create_model("most_popular"), config.seed)
    assert grid == {"recent_days": [None, 30, 180]} and len(points) == 3
    proto = config.evaluation.protocols[0]
    key = trial_key(config, popular, {"recent_days": 30}, proto)
    assert key == trial_key(config, popular, {"recent_days": 30}, proto)
    assert key != trial_key(config, popular, {"recent_days": 180}, proto)
    other_seed = config.model_copy(update={"seed": config.seed + 1})
    assert key != trial_key(other_seed, popular, {"recent_days": 30}, proto)
