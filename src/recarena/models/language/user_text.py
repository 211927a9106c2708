"""Text about the user in a language model's input: ``{user:COLUMN}`` fields.

A template such as ``"A {user:age}-year-old {user:gender} who watched:"`` names columns of
the data's user table. `user_attributes` keeps those columns as text per user id at fit
(the model's ``user_attributes_``), and `fill_user_fields` writes one user's values into
the template, with the model's ``user_values`` words where it has one (``{"gender": {"M":
"man", "F": "woman"}}``). Replacing a column of ``user_attributes_`` is how
`recarena.metrics.counterfactual` swaps an attribute while everything else stays the same.
The generative ranker's prompt and the cross-encoder's ``user_text`` use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from recarena.models.base import TrainingData

#: a user attribute in a template: ``{user:gender}``
USER_FIELD = re.compile(r"\{user:([^{}]+)\}")


def clean_text(value: Any) -> str:
    """``value`` as one line of single-spaced text ("" for None or NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())


def user_attributes(template: str, data: TrainingData) -> dict[str, list[str]]:
    """The user-table columns ``template`` names (``{user:COLUMN}``), as text per user id.

    Raises
    ------
    ValueError
        The template names a column and the data has no user table, or not that column
        (the message lists the columns there are).
    """
    columns = list(dict.fromkeys(USER_FIELD.findall(template)))
    if not columns:
        return {}
    users = data.users
    if users is None or len(users) == 0:
        raise ValueError(
            f"the prompt names user columns {columns} but the data has no user table "
            "([data] users_path, or a data set with user attributes such as ml-100k)"
        )
    missing = [c for c in columns if c not in users.columns]
    if missing:
        raise ValueError(
            f"the prompt names user columns {missing} that the user table lacks; it has "
            f"{[c for c in users.columns if c != 'user']}"
        )
    ids = users["user"].to_numpy() if "user" in users.columns else np.arange(len(users))
    out = {}
    for column in columns:
        text = [""] * data.n_users
        for user, value in zip(ids.tolist(), users[column].tolist(), strict=True):
            if 0 <= int(user) < data.n_users:
                text[int(user)] = clean_text(value)
        out[column] = text
    return out


def user_word(
    attributes: Mapping[str, list[str]],
    user_values: Mapping[str, Mapping[str, str]] | None,
    column: str,
    user: int | None,
) -> str:
    """User ``user``'s value of ``column`` as the text writes it ("" without a user)."""
    if user is None:
        return ""
    value = attributes.get(column, [""] * (user + 1))[user]
    words = (user_values or {}).get(column, {})
    return str(words.get(value, value))


def fill_user_fields(
    text: str,
    attributes: Mapping[str, list[str]],
    user_values: Mapping[str, Mapping[str, str]] | None,
    user: int | None,
) -> str:
    """``text`` with every ``{user:COLUMN}`` replaced by ``user``'s word (`user_word`); an
    empty value leaves no double space."""
    if "{user:" not in text:
        return text
    text = USER_FIELD.sub(lambda m: user_word(attributes, user_values, m.group(1), user), text)
    return re.sub(r"(?<=\S)  +(?=\S)", " ", text)
