"""A small training loop for fine-tuning language models, shared by RecArena's LM models.

Built on Hugging Face Accelerate, so the same code trains on one CPU, one GPU, or several
GPUs started with ``accelerate launch``. A model that fine-tunes a language model supplies
a ``torch`` module, a ``DataLoader`` of batches and a function that turns a batch into a
loss; this module does the rest:

`make_accelerator`
    An ``Accelerator`` for a device (``"auto"``, ``"cpu"``, ``"cuda"``) and a precision
    (``"auto"``: bf16 on GPUs that support it, else fp16; fp32 on CPU).
`adamw`, `linear_warmup`
    AdamW without weight decay on biases and normalisation weights; a linear warm-up then
    linear decay to zero, the usual BERT fine-tuning schedule.
`train_loop`
    Epochs of gradient-accumulated steps with gradient clipping, a progress bar, periodic
    evaluation through a hook, early stopping that keeps (and restores) the best weights,
    and one log record per evaluation and per epoch (`LoopResult.log`).
`seeded`, `torch_threads`
    Context managers: seed Python, NumPy and torch for a fit and give the caller's global
    random states back afterwards; run torch on a given number of CPU threads.

Usage::

    accelerator = make_accelerator(device="auto", mixed_precision="auto")
    with seeded(0):
        model = build_model()
        loader = DataLoader(dataset, batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(0), collate_fn=collate)
        result = train_loop(
            accelerator, model, loader, lambda m, batch: m(**batch).loss,
            LoopConfig(epochs=2, lr=2e-5, patience=2),
            evaluate=lambda m: {"valid_auc": auc_of(m)},
        )
    model = result.model  # unwrapped, best weights restored

Several processes (``accelerate launch --num_processes 4 script.py``): each process sees its
shard of every epoch (the same seeded order is drawn on every process and split), the
learning-rate schedule counts optimizer steps, the evaluation hook runs on every process
(each computes the same numbers, so every process takes the same early-stopping decision
without communication), and the logged training loss is averaged over processes.

This module imports torch and accelerate at import time: import it inside the functions
that train, never at ``recarena`` import time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- set-up
def resolve_mixed_precision(mixed_precision: str, device: str) -> str:
    """Accelerate's precision name for ``mixed_precision`` on ``device``.

    ``"auto"``: ``"bf16"`` on a CUDA device that supports bfloat16, ``"fp16"`` on other CUDA
    devices, ``"no"`` (float32) elsewhere. ``"no"``, ``"fp16"``, ``"bf16"`` (also spelled
    ``"float32"``, ``"float16"``, ``"bfloat16"``) are taken as given.
    """
    aliases = {
        "no": "no",
        "fp32": "no",
        "float32": "no",
        "fp16": "fp16",
        "float16": "fp16",
        "bf16": "bf16",
        "bfloat16": "bf16",
    }
    if mixed_precision != "auto":
        try:
            return aliases[mixed_precision]
        except KeyError:
            raise ValueError(
                f"mixed_precision must be auto, no, fp16 or bf16, not {mixed_precision!r}"
            ) from None
    if not device.startswith("cuda"):
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_training_precision(mixed_precision: str, device: str) -> str:
    """Like `resolve_mixed_precision`, but ``"auto"`` on a CPU is bf16 autocast where the CPU
    has bfloat16 instructions (float32 master weights and optimizer state either way).

    For models whose results were checked to hold under bf16 on CPU (see each model's
    documentation); the others keep `resolve_mixed_precision`'s float32 on CPU.
    """
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if mixed_precision == "auto" and cpu:
        from recarena.lm.loading import cpu_supports_bf16

        return "bf16" if cpu_supports_bf16() else "no"
    return resolve_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")


def make_accelerator(
    device: str = "auto",
    mixed_precision: str = "auto",
    gradient_accumulation_steps: int = 1,
) -> Any:
    """An ``accelerate.Accelerator`` for ``device`` and ``mixed_precision``.

    Parameters
    ----------
    device
        ``"auto"`` (the GPU of this process when there is one, else the CPU), ``"cpu"`` or
        ``"cuda"``. Under ``accelerate launch`` each process gets its own GPU.
    mixed_precision
        See `resolve_mixed_precision`.
    gradient_accumulation_steps
        Batches whose gradients add up to one optimizer step.

    Accelerate keeps one precision per process. A process that trains several models one
    after another (the experiment runner does) may ask for another precision or device than
    the last model: in a single process the old state is dropped and a new one made; under a
    multi-process launch the launch's settings are kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if gradient_accumulation_steps < 1:
        raise ValueError("gradient_accumulation_steps must be at least 1")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    precision: str | None = resolve_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")
    shared = AcceleratorState._shared_state
    if shared.get("_mixed_precision") is not None:
        multi_process = PartialState().num_processes > 1
        changed = shared["_mixed_precision"] != precision or (
            cpu and PartialState().device.type != "cpu"
        )
        if changed and multi_process:
            precision = None  # the launch's precision wins
        elif changed:
            logger.debug("resetting Accelerate's process state for a new device/precision")
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


def adamw(
    model: torch.nn.Module, lr: float, weight_decay: float = 0.01, **kwargs: Any
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights are not decayed.

    A normalisation layer is any module whose class name contains "Norm" (LayerNorm,
    RMSNorm, BatchNorm...); a bias is a parameter named ``bias``.
    """
    decay, no_decay = [], []
    seen: set[int] = set()  # tied weights (shared by two modules) go in once
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name == "bias" else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, **kwargs)


def linear_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly over ``warmup_steps``, then falling linearly to zero."""
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch (CPU and CUDA) with ``accelerate.utils.set_seed``.

    The caller's global random states are put back on exit, so fitting a model does not
    change what the rest of the program draws.
    """
    from accelerate.utils import set_seed

    # set_seed seeds NumPy's legacy global generator: save and restore it
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        set_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` CPU threads inside the block (None: leave torch's setting)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the loop
@dataclass
class LoopConfig:
    """How `train_loop` trains. Steps are optimizer steps (after gradient accumulation).

    Attributes
    ----------
    epochs
        Most passes over the data.
    max_steps
        Most optimizer steps over all epochs (None: ``epochs`` decides); training stops at
        whichever limit comes first.
    lr, weight_decay
        AdamW settings (see `adamw`).
    warmup_ratio
        Share of the planned steps over which the learning rate warms up linearly.
    max_grad_norm
        Gradients are clipped to this global norm (None: no clipping).
    eval_every
        Optimizer steps between evaluations; None evaluates at the end of every epoch. The
        last step is always evaluated, so the final weights compete too.
    patience
        Evaluations in a row without a gain before training stops (None: never early).
    monitor, mode
        The key of the evaluation hook's dict that decides which weights are best, and
        whether higher (``"max"``) or lower (``"min"``) is better. NaN never counts as best.
    keep_best
        Restore the best weights at the end (``"full"``: the whole state dict;
        ``"trainable"``: only parameters that require gradients, cheaper for adapters such as
        LoRA; ``"no"``: keep the last weights).
    max_seconds
        Wall-clock budget: training stops after the first step past it (None: no budget).
    progress
        Show a tqdm progress bar (on the main process only).
    desc
        The progress bar's label.
    """

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    eval_every: int | None = None
    patience: int | None = None
    monitor: str = "valid_auc"
    mode: Literal["max", "min"] = "max"
    keep_best: Literal["full", "trainable", "no"] = "full"
    max_seconds: float | None = None
    progress: bool = True
    desc: str = "training"


@dataclass
class LoopResult:
    """What `train_loop` did.

    Attributes
    ----------
    model
        The trained module, unwrapped from Accelerate, in eval mode; the best weights when
        ``keep_best`` and an evaluation hook were given.
    log
        One record per evaluation and per epoch end: ``epoch`` (1-based epoch of the step),
        ``step`` (optimizer steps so far), ``train_loss`` (mean loss of the batches since the
        previous record), ``lr``, the evaluation hook's values (None where not evaluated),
        ``examples`` (training examples seen, all processes) and ``seconds`` (since training
        began, evaluation included).
    best_step, best_epoch
        Step and epoch of the kept weights (the last ones without evaluation).
    best_value
        The monitored value of the kept weights (None without evaluation).
    steps, epochs
        Optimizer steps taken; epochs begun.
    steps_per_epoch
        Optimizer steps in a full epoch on this process.
    stopped_early
        True when patience (or ``max_seconds``) ended training before the planned steps.
    train_seconds
        Seconds spent in training steps, evaluation excluded.
    examples_per_second
        Training examples per second of ``train_seconds`` (all processes together).
    """

    model: Any
    log: list[dict[str, Any]] = field(default_factory=list)
    best_step: int = 0
    best_epoch: int = 0
    best_value: float | None = None
    steps: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    train_seconds: float = 0.0
    examples: int = 0
    examples_per_second: float = 0.0


def planned_steps(n_batches: int, config: LoopConfig, gradient_accumulation_steps: int) -> int:
    """Optimizer steps `train_loop` plans for ``n_batches`` batches per epoch (this process)."""
    per_epoch = math.ceil(n_batches / max(1, gradient_accumulation_steps))
    total = per_epoch * max(0, config.epochs)
    if config.max_steps is not None:
        total = min(total, max(0, config.max_steps))
    return total


def train_loop(
    accelerator: Any,
    model: torch.nn.Module,
    train_loader: Any,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    config: LoopConfig,
    *,
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    start_metrics: Mapping[str, float] | None = None,
) -> LoopResult:
    """Train ``model`` on ``train_loader`` with ``accelerator``.

    Parameters
    ----------
    accelerator
        From `make_accelerator` (or any ``accelerate.Accelerator``); its gradient
        accumulation steps are used.
    model
        A ``torch.nn.Module`` on the CPU or the accelerator's device.
    train_loader
        A ``torch.utils.data.DataLoader``; seed its sampler's generator for a reproducible
        order. It is prepared here (sharded across processes, batches moved to the device).
    loss_fn
        ``loss_fn(model, batch)``: the mean loss of a batch (a scalar tensor).
    config
        See `LoopConfig`.
    evaluate
        ``evaluate(model)``: a dict of validation numbers, one of them ``config.monitor``.
        Called with the unwrapped model in eval mode, under ``torch.inference_mode`` and
        the accelerator's autocast.
    optimizer, scheduler
        Default: `adamw` with ``config.lr``/``config.weight_decay`` and `linear_warmup` over
        the planned steps. A scheduler given here is stepped as Accelerate steps prepared
        schedulers: once per optimizer step, times the number of processes when
        ``accelerator.step_scheduler_with_optimizer`` (Accelerate's default).
    start_metrics
        ``evaluate``'s numbers for ``model`` as given, measured by the caller before
        training: the untrained weights then compete as step 0, so that a model that starts
        well (a warm start) and only gets worse is kept as it started, and an evaluation
        below them counts toward ``patience``.

    Returns
    -------
    LoopResult
    """
    from tqdm.auto import tqdm

    from recarena._progress import bars_enabled

    if config.mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {config.mode!r}")
    if config.eval_every is not None and config.eval_every < 1:
        raise ValueError("eval_every must be at least 1 or None")
    accum = int(getattr(accelerator, "gradient_accumulation_steps", 1) or 1)
    loader = accelerator.prepare(train_loader)
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = planned_steps(len(loader), config, accum)
    if optimizer is None:
        optimizer = adamw(model, config.lr, config.weight_decay)
    if scheduler is None:
        # Accelerate steps a scheduler prepared "with the optimizer" once per process per
        # optimizer step (the schedule was planned for the whole data set): plan for that
        scale = 1
        if accelerator.step_scheduler_with_optimizer and not _split_batches(accelerator):
            scale = accelerator.num_processes
        warmup = round(config.warmup_ratio * total_steps)
        scheduler = linear_warmup(optimizer, warmup * scale, total_steps * scale)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    raw_model = accelerator.unwrap_model(model)

    result = LoopResult(model=raw_model, steps_per_epoch=steps_per_epoch)
    stopping = EarlyStopping(config.patience, mode=config.mode)
    best_state: dict[str, torch.Tensor] | None = None
    if start_metrics is not None and evaluate is not None:
        value = float(start_metrics[config.monitor])
        if stopping.improves(value):
            result.best_value, result.best_step, result.best_epoch = value, 0, 0
            if config.keep_best != "no":
                best_state = _copy_state(raw_model, trainable_only=config.keep_best == "trainable")
    start = time.perf_counter()
    eval_seconds = 0.0
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_batches = 0
    step = 0
    examples = 0
    last_record_step = -1
    bar = tqdm(
        total=total_steps,
        desc=config.desc,
        unit="step",
        disable=not (config.progress and bars_enabled() and accelerator.is_local_main_process),
        leave=False,
    )

    def record(epoch: int, metrics: Mapping[str, float] | None) -> dict[str, Any]:
        nonlocal loss_sum, loss_batches, last_record_step
        mean = loss_sum / max(loss_batches, 1)
        train_loss = (
            float(accelerator.reduce(mean.detach().clone(), "mean")) if loss_batches else None
        )
        entry: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        if evaluate is not None:
            entry[config.monitor] = None
        entry.update({k: _plain(v) for k, v in (metrics or {}).items()})
        entry["examples"] = examples
        entry["seconds"] = time.perf_counter() - start
        result.log.append(entry)
        loss_sum = torch.zeros((), device=accelerator.device)
        loss_batches = 0
        last_record_step = step
        shown = ", ".join(
            f"{k} {v:.4f}"
            for k, v in entry.items()
            if k not in ("epoch", "step", "examples", "seconds", "lr")
            and isinstance(v, float)
            and not math.isnan(v)  # e.g. a validation metric of a refit without validation
        )
        logger.info(
            "%s: epoch %d step %d: %s (%.1f s)", config.desc, epoch, step, shown, entry["seconds"]
        )
        bar.set_postfix_str(shown, refresh=False)
        return entry

    def run_evaluation(epoch: int) -> bool:
        """Evaluate, log, keep the best weights; True when training should stop."""
        nonlocal best_state, eval_seconds
        began = time.perf_counter()
        metrics = None
        if evaluate is not None:
            raw_model.eval()
            with torch.inference_mode(), accelerator.autocast():
                metrics = dict(evaluate(raw_model))
            raw_model.train()
            if config.monitor not in metrics:
                raise KeyError(
                    f"the evaluation hook returned {sorted(metrics)}, not the monitored "
                    f"{config.monitor!r}"
                )
        eval_seconds += time.perf_counter() - began
        record(epoch, metrics)
        if metrics is None:
            result.best_step, result.best_epoch = step, epoch
            return False
        value = float(metrics[config.monitor])
        if stopping.improves(value):
            result.best_value, result.best_step, result.best_epoch = value, step, epoch
            if config.keep_best != "no":
                best_state = _copy_state(raw_model, trainable_only=config.keep_best == "trainable")
            return False
        if stopping.should_stop:
            logger.info("%s: no gain in %d evaluations, stopping", config.desc, stopping.stale)
            return True
        return False

    model.train()
    stop = total_steps == 0
    epoch = 0
    while not stop and epoch < config.epochs:
        epoch += 1
        result.epochs = epoch
        evaluated_at = -1
        for batch in loader:
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                # a scheduler prepared "with the optimizer" skips accumulation steps itself
                if accelerator.sync_gradients or accelerator.step_scheduler_with_optimizer:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            loss_batches += 1
            examples += _batch_len(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            over_time = (
                config.max_seconds is not None and time.perf_counter() - start > config.max_seconds
            )
            last = step >= total_steps or over_time
            if (config.eval_every is not None and step % config.eval_every == 0) or last:
                evaluated_at = step
                stop = run_evaluation(epoch) or over_time
                result.stopped_early = stop and step < total_steps
            if stop or step >= total_steps:
                stop = True
                break
        if not stop and config.eval_every is None and evaluated_at != step:
            evaluated_at = step
            stop = run_evaluation(epoch)
            result.stopped_early = stop and step < total_steps
        elif evaluated_at != step and last_record_step != step:
            record(epoch, None)
    bar.close()

    if best_state is not None:
        raw_model.load_state_dict(best_state, strict=config.keep_best == "full")
        logger.info(
            "%s: keeping the weights of step %d (%s %.4f)",
            config.desc,
            result.best_step,
            config.monitor,
            result.best_value,
        )
    raw_model.eval()
    result.steps = step
    result.examples = examples
    result.seconds = time.perf_counter() - start
    result.train_seconds = max(result.seconds - eval_seconds, 1e-9)
    result.examples_per_second = examples / result.train_seconds
    accelerator.free_memory()
    result.model = accelerator.unwrap_model(raw_model, keep_fp32_wrapper=False)
    return result


# ---------------------------------------------------------------------------- early stopping
class EarlyStopping:
    """The best validation value so far, and the evaluations in a row that did not beat it.

    ``mode``: whether higher (``"max"``) or lower (``"min"``) is better; NaN never beats
    anything. ``value``: the value to beat first (None: the first number offered is the
    best). ``patience``: evaluations in a row without a gain before `should_stop` (None:
    never).
    """

    def __init__(
        self,
        patience: int | None,
        *,
        mode: Literal["max", "min"] = "max",
        value: float | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.patience = patience
        self.mode = mode
        self.value = None if value is None else float(value)
        self.stale = 0

    def improves(self, value: float) -> bool:
        """Offer ``value``: True when it is the new best (the count of evaluations without
        a gain starts again), False when it counts as one more of them."""
        if not math.isnan(value) and (
            self.value is None or (value > self.value if self.mode == "max" else value < self.value)
        ):
            self.value = float(value)
            self.stale = 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no gain."""
        return self.patience is not None and self.stale >= self.patience


class BestWeights:
    """The trainable weights of the best epoch so far, for a training loop that measures a
    validation number (higher is better) once an epoch and stops early on it.

    The weights it is made with are epoch 0, and they compete: with ``value`` (the untrained
    model's validation number) a training that never beats it ends on those weights. An
    epoch offered without a value (no validation data) is always kept, so the last epoch's
    weights end the training. ``patience`` counts epochs in a row without a gain (None:
    never stop early). ``extra`` keeps whatever else belongs to the kept epoch (a catalog
    table, a step count).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        patience: int | None,
        value: float | None = None,
        **extra: Any,
    ) -> None:
        self.module = module
        self.stopping = EarlyStopping(patience, value=-math.inf if value is None else value)
        self.epoch = 0
        self.extra: dict[str, Any] = dict(extra)
        self.state = _copy_state(module, trainable_only=True)

    @property
    def value(self) -> float:
        """The kept epoch's validation number (-inf before any)."""
        assert self.stopping.value is not None  # it starts at a number
        return self.stopping.value

    @property
    def stale(self) -> int:
        """Epochs in a row without a gain."""
        return self.stopping.stale

    def offer(self, epoch: int, value: float | None, **extra: Any) -> bool:
        """Keep this epoch's weights if ``value`` beats the best; True when it is time to stop."""
        if value is None or self.stopping.improves(value):
            self.epoch = epoch
            self.extra.update(extra)
            self.state = _copy_state(self.module, trainable_only=True)
            self.stopping.stale = 0
            return False
        return self.stopping.should_stop

    def restore(self) -> torch.nn.Module:
        """Load the kept weights into the module (the untrained ones when no epoch beat them)."""
        self.module.load_state_dict(self.state, strict=False)
        return self.module


# ---------------------------------------------------------------------------- helpers
def _split_batches(accelerator: Any) -> bool:
    config = getattr(accelerator, "dataloader_config", None)
    return bool(getattr(config, "split_batches", getattr(accelerator, "split_batches", False)))


def _copy_state(model: torch.nn.Module, *, trainable_only: bool) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights (all, or only the trainable parameters)."""
    if trainable_only:
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        items = ((k, v) for k, v in model.state_dict().items() if k in names)
    else:
        items = iter(model.state_dict().items())
    return {k: v.detach().to("cpu", copy=True) for k, v in items}


def _batch_len(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        values: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        values = batch
    else:
        return 1
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return 1


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
