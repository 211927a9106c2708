"""What is checked before a run reads any data or writes anything: model names, the split's
settings, the protocols, every model's parameters and grid points, and whether the
language models the experiment names are here. Each check returns messages, so one error
lists every problem; `ExperimentRunner.check_config` and `check_language_models` raise it.
"""

from __future__ import annotations

import logging
import os

from recarena.config import ExperimentConfig, ModelConfig
from recarena.experiment.protocols import is_first_stage, protocols_for, split_problems
from recarena.experiment.seeds import seed_problems
from recarena.experiment.tuning import grid_points, parameter_problems
from recarena.models.base import Recommender
from recarena.models.registry import create_model, get_model_class, model_name_problem

log = logging.getLogger(__name__)


def config_problems(config: ExperimentConfig, models: list[ModelConfig]) -> list[str]:
    """What is wrong with the experiment, told without its data (as messages).

    ``models`` are those still to run (finished models are not checked again):

    - every one names a registry entry or a ``module:Class`` Recommender
      (`recarena.models.registry.model_name_problem`; a model whose optional extra is not
      installed passes here, and running it says what is missing);
    - the split's ratios leave training data (`split_problems`);
    - no first stage is trained once per seed (`recarena.experiment.seeds.seed_problems`);
    - no two protocols are the same, every model fits one of the protocols, and a
      protocol's first stage can score the full catalog;
    - every model's parameters and grid points (`model_parameter_problems`).
    """
    problems: list[str] = []
    named = []
    for mc in models:
        problem = model_name_problem(mc.name)
        if problem is None:
            named.append(mc)
        else:  # the problem names the model; a label is named as well
            problems.append(f"model {mc.label!r}: {problem}" if mc.label else problem)
    problems.extend(split_problems(config))
    problems.extend(seed_problems(config))
    problems.extend(protocol_problems(config, named))
    problems.extend(model_parameter_problems(config, named))
    return problems


def protocol_problems(config: ExperimentConfig, models: list[ModelConfig]) -> list[str]:
    """Protocols given twice, models that fit none, first stages that cannot rank all."""
    protocols = config.evaluation.protocols
    problems: list[str] = []
    labels = [p.label for p in protocols]
    for label in dict.fromkeys(x for x in labels if labels.count(x) > 1):
        problems.append(
            f"evaluation.protocols: protocol {label!r} is given {labels.count(label)} "
            "times; expected each protocol once"
        )
    for mc in models:
        model = template(mc)
        if model is None:
            continue
        label = mc.display_name
        chosen, skipped = protocols_for(config, mc, model)
        if not chosen and not is_first_stage(config, label):
            why = "; ".join(f"{p}: {reason}" for p, reason in skipped.items())
            problems.append(
                f"model {label!r} fits none of the experiment's protocols"
                + (f" ({why})" if why else "")
            )
        if is_first_stage(config, label) and not model.scores_full_catalog:
            problems.append(
                f"model {label!r} cannot score the full catalog, so it cannot be the "
                "first stage of protocol "
                + ", ".join(
                    repr(p.label)
                    for p in protocols
                    if p.kind == "first_stage" and p.first_stage == label
                )
            )
    return problems


def template(mc: ModelConfig) -> Recommender | None:
    """The model with its ``params``; None when it cannot be made (`run_model` says why)."""
    try:
        return create_model(mc.name, mc.params)
    except Exception:  # noqa: BLE001 - run_model reports it for this model alone
        return None


def model_parameter_problems(config: ExperimentConfig, models: list[ModelConfig]) -> list[str]:
    """What is wrong with the parameters and grid points of ``models``, as messages.

    Each model's ``params`` and each grid point it would try are checked by its
    `Recommender.check_params` (`parameter_problems`), naming the model and the
    parameter. A model whose name or parameter names do not resolve is left to
    `run_model`, which reports it for that model alone.
    """
    problems: list[str] = []
    for mc in models:
        model = template(mc)
        if model is None:
            continue
        try:
            _, points = grid_points(mc, model, config.seed)
        except ValueError as exc:
            problems.append(f"model {mc.display_name!r}: {exc}")
            continue
        problems.extend(parameter_problems(mc, model, points))
    return problems


def language_model_problems(
    models: list[ModelConfig], cache_dir: str | os.PathLike[str] | None
) -> list[str]:
    """The language models that ``models`` name and that are not here, as messages.

    Every model whose class declares parameters naming a language model
    (``Recommender.language_model_params``, ``("model",)`` for the LM recommenders) has
    each of them (given, in its grid, or the class default) resolved by
    `recarena.lm.zoo.resolve_model`, which downloads nothing; each message says which
    command fetches the missing model.
    """
    from recarena.errors import ModelNotAvailableError

    problems: list[str] = []
    for mc in models:
        try:
            cls = get_model_class(mc.name)
        except Exception:  # noqa: BLE001 - run_model reports it for this model alone
            continue
        if not cls.language_model_params:
            continue
        names = [
            name
            for param in cls.language_model_params
            for name in (
                *(mc.grid or {}).get(param, []),
                mc.params.get(param, cls.param_default(param)),
            )
        ]
        try:
            from recarena.lm.zoo import resolve_model
        except ImportError as exc:  # the [lm] extra is missing: run_model says so
            log.debug("cannot check %s: %s", mc.display_name, exc)
            continue
        for name in dict.fromkeys(n for n in names if isinstance(n, str)):
            try:
                resolve_model(name, cache_dir)
            except ModelNotAvailableError as exc:
                problems.append(f"model {mc.display_name!r}: {exc}")
    return problems
