"""The check every private model's test makes: its recorded epsilon is what a fresh Opacus
RDP accountant gives for the recorded steps, sampling rate and noise."""

from __future__ import annotations

from typing import Any

import pytest


def assert_epsilon_is_the_accountants(
    record: dict[str, Any], noise_multiplier: float | None = None
) -> None:
    """``record``: a `DPRecord.as_dict` (``model.dp_``). ``noise_multiplier``: the noise the
    test asked for (default: the recorded one), so a wrong record cannot vouch for itself."""
    from opacus.accountants import RDPAccountant

    noise = record["noise_multiplier"] if noise_multiplier is None else noise_multiplier
    assert record["noise_multiplier"] == pytest.approx(noise)
    accountant = RDPAccountant()
    for _ in range(record["steps"]):
        accountant.step(noise_multiplier=noise, sample_rate=record["sample_rate"])
    assert record["epsilon_spent"] == pytest.approx(accountant.get_epsilon(record["delta"]))
