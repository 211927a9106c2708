"""benchmarks/bench_gpu.py: the commands it starts are accepted by the benchmarks they run,
and its budgets reach the models (the CPU smoke run checks the tiny budgets end to end)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_gpu = _module("bench_gpu")
bench_cross_encoder = _module("bench_cross_encoder")
bench_lm_ml100k = _module("bench_lm_ml100k")


def _args(tmp_path: Path, smoke: bool, resume: bool) -> argparse.Namespace:
    return argparse.Namespace(
        out=tmp_path / "out", smoke=smoke, resume=resume, cross_encoder_seconds=90.0
    )


def _parsed(parser: argparse.ArgumentParser, command: list[str]) -> argparse.Namespace:
    assert command[0] == sys.executable
    return parser.parse_args(command[2:])  # after the interpreter and the script


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("resume", [False, True])
def test_the_cross_encoder_stage(tmp_path: Path, smoke: bool, resume: bool):
    encoder, cache, runs = tmp_path / "minilm-l6", tmp_path / "cache", tmp_path / "runs"
    command = bench_gpu.cross_encoder_command(_args(tmp_path, smoke, resume), encoder, cache, runs)
    assert Path(command[1]).name == "bench_cross_encoder.py"
    args = _parsed(bench_cross_encoder.build_parser(), command)
    assert args.model == str(encoder) and args.cache_dir == str(cache)
    assert args.out == str(tmp_path / "out" / "cross_encoder.json") and args.keep is resume
    if smoke:
        assert args.users == 30 and args.max_train_pairs == 64 and args.num_layers == 1
    else:
        # every user, every layer, three epochs inside the budget; the rest as on the CPU
        assert args.users is None and args.num_layers is None and args.max_train_pairs is None
        assert args.epochs == 3 and args.budget_seconds == 90.0
        config = bench_cross_encoder.experiment(args)
        entries = {m.label or m.name: m for m in config.models}
        for label in ("cross-encoder", "cross-encoder-no-history"):
            params = entries[label].params
            assert params["model"] == str(encoder) and params["epochs"] == 3
            assert params["max_train_seconds"] == 90.0


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("resume", [False, True])
def test_the_language_model_stage(tmp_path: Path, smoke: bool, resume: bool):
    encoder, cache, runs = tmp_path / "minilm-l6", tmp_path / "cache", tmp_path / "runs"
    command = bench_gpu.lm_command(_args(tmp_path, smoke, resume), encoder, cache, runs)
    assert Path(command[1]).name == "bench_lm_ml100k.py"
    args = _parsed(bench_lm_ml100k.build_parser(), command)
    assert args.splits == "loo" and args.cache_dir == str(cache)
    assert args.overwrite is not resume and args.quick is smoke
    entries = bench_lm_ml100k.model_entries(
        args.quick, args.threads, args.model, args.two_tower_params
    )
    encoders = {e["params"]["model"] for e in entries if "model" in e.get("params", {})}
    assert encoders == {str(encoder)}  # every LM entry reads the bundle's encoder
    (two_tower,) = [e for e in entries if e["name"] == "lm-two-tower"]
    if smoke:
        assert args.two_tower_params is None
        assert two_tower["params"]["max_train_pairs"] == 128  # --quick's budget
    else:
        assert args.two_tower_params == {"max_train_pairs": 8192, "epochs": 20}
        assert two_tower["params"]["max_train_pairs"] == 8192
        assert two_tower["params"]["epochs"] == 20
        assert json.loads(command[command.index("--two-tower-params") + 1])["epochs"] == 20
