"""What ``load`` takes for a source: a built-in name, a file or a folder, ``~`` paths."""

from __future__ import annotations

import pytest

from tuneserve.data import load
from tuneserve.exceptions import NotFoundError


def test_unknown_home_directory_is_not_found():
    with pytest.raises(NotFoundError, match="not found"):
        load("~no_such_user_xyz/data.csv")
