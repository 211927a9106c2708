from __future__ import annotations

import pytest

from recarena.config import DataConfig
from recarena.data import load_dataset
from recarena.errors import ConfigError


def test_unknown_loader_option_is_named(tmp_path):
    (tmp_path / "MINDsmall_train").mkdir()
    config = DataConfig(format="mind", path=str(tmp_path), options={"valid_dayz": 2})
    with pytest.raises(ConfigError, match=r"valid_dayz.*its options: valid_days"):
        load_dataset(config)
