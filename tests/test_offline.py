"""insarlake.offline without a lake: SQL literals, and a folder that holds no table."""
from __future__ import annotations

import numpy as np
import pytest

from insarlake.errors import InputError
from insarlake.offline import open_lake, quote


def test_quote_makes_sql_literals_and_refuses_other_values():
    assert quote("o'brien") == "'o''brien'" and quote("") == "''"
    assert quote([1, np.int64(2), "a"]) == "1, 2, 'a'" and quote([]) == "NULL"
    assert quote(2.5) == "2.5" and quote(np.float32(0.5)) == "0.5"
    for bad in (True, None, {"a": 1}, b"x"):
        with pytest.raises(TypeError, match="not a string, a number or a list"):
            quote(bad)


def test_a_folder_without_tables_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=rf"lake {tmp_path}: no insarlake table there"):
        open_lake(str(tmp_path))
