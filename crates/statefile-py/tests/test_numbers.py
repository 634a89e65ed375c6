"""Numbers are exact both ways (issue 9 item 8): the library keeps each number's text,
so an int of any size, a float and a decimal.Decimal are stored as given; a number is
read as an int, as a float where the float is the same number, else as a Decimal of its
exact digits. Nothing is rounded on the way in or out."""

from __future__ import annotations

import json
import math
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import statefile


def exact(text: str) -> Any:
    """JSON text with every number as its exact value (ints, Decimals), for comparing."""
    return json.loads(text, parse_float=Decimal)


# Regression (issue 9): 1e-400 was read as 0.0 and 0.30000000000000000001 as 0.3.
def test_numbers_a_float_would_change_are_read_as_decimals(tmp_path: Path) -> None:
    p = tmp_path / "n.json"
    p.write_text(
        '{"tiny": 1e-400, "huge": 1.5e400, "precise": 0.30000000000000000001, '
        '"pi": 3.141592653589793238462643383279, "far": -1e999999999, "sub": 2e-324}\n'
    )
    got = statefile.Doc(p).read()
    assert got == {
        "tiny": Decimal("1e-400"),
        "huge": Decimal("1.5e400"),
        "precise": Decimal("0.30000000000000000001"),
        "pi": Decimal("3.141592653589793238462643383279"),
        "far": Decimal("-1e999999999"),
        "sub": Decimal("2e-324"),
    }
    assert all(type(v) is Decimal for v in got.values())


def test_where_a_float_is_the_same_number_it_is_a_float_as_json_loads_gives(tmp_path: Path) -> None:
    text = (
        "[0, -0, 1, 1.0, 1E2, 1e-7, 0.1, 2.5, -0.0, 5e-324, 1.7976931348623157e308, "
        "0.30000000000000004, 9007199254740993, 123456789012345678901234567890]"
    )
    p = tmp_path / "n.json"
    p.write_text(text)
    got = statefile.Doc(p).read()
    want = json.loads(text)
    assert got == want
    assert [type(x) for x in got] == [type(x) for x in want]
    assert math.copysign(1.0, got[8]) == -1.0


def test_an_update_writes_back_every_number_it_did_not_touch_as_the_same_number(tmp_path: Path) -> None:
    text = (
        '{"a": [1.0, 1E2, -0, 0.1, 1e-400, 1.5e+400, 0.30000000000000000001, '
        "123456789012345678901234567890, -9223372036854775809, 2.5e-7, 1e999999999]}\n"
    )
    p = tmp_path / "n.json"
    p.write_text(text)
    doc = statefile.Doc(p)
    with doc.update() as data:
        data["seen"] = True
    doc.update(lambda d: d["a"].append(d["a"][4]))
    after = exact(p.read_text())
    before = exact(text)["a"]
    assert after == {"seen": True, "a": before + [before[4]]}
    stored = p.read_text()
    for spelled in ["1e-400", "1.5e+400", "0.30000000000000000001", "123456789012345678901234567890"]:
        assert stored.count(spelled) >= 1, f"{spelled} not in {stored}"


def test_decimals_are_written_with_their_own_digits(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    doc = statefile.Doc(p)
    doc.write(
        {
            "price": Decimal("19.90"),
            "tiny": Decimal("-1E-400"),
            "big": Decimal("12345678901234567890.123456789"),
            "zero": Decimal("-0"),
        }
    )
    assert p.read_text() == (
        '{\n  "price": 19.90,\n  "tiny": -1e-400,\n  "big": 12345678901234567890.123456789,\n'
        '  "zero": -0\n}\n'
    )
    got = doc.read()
    # 19.90 is the float 19.9 (the same number); the others only a Decimal holds.
    assert got == {
        "price": 19.9,
        "tiny": Decimal("-1E-400"),
        "big": Decimal("12345678901234567890.123456789"),
        "zero": 0,
    }
    assert type(got["price"]) is float and type(got["tiny"]) is Decimal and type(got["zero"]) is int


def test_a_number_python_cannot_convert_is_an_error_naming_where(tmp_path: Path) -> None:
    p = tmp_path / "n.json"
    digits = "7" * 100_000
    p.write_text(f'{{"ok": 1, "list": [0, {digits}]}}')
    doc = statefile.Doc(p)
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit == 0:
        pytest.skip("this interpreter converts integers of any length (no int_max_str_digits)")
    with pytest.raises(ValueError) as e:
        doc.read()
    assert "/list/1" in str(e.value) and "(100000 characters)" in str(e.value)
    assert len(str(e.value)) < 1000
    before = p.read_bytes()
    with pytest.raises(ValueError):
        doc.update(lambda d: d.__setitem__("x", 1))
    with pytest.raises(ValueError):
        with doc.update():
            pass
    assert p.read_bytes() == before
    # Raising Python's limit, as for json.loads, reads it.
    sys.set_int_max_str_digits(0)
    try:
        assert doc.read()["list"][1] == int(digits)
    finally:
        sys.set_int_max_str_digits(limit)
    # An exponent beyond what a Decimal holds (about 10^18).
    p.write_text('{"x": [1e99999999999999999999]}')
    with pytest.raises(ValueError) as e:
        doc.read()
    assert "1e+99999999999999999999 at /x/0: its exponent" in str(e.value)


def digits(number: str) -> int:
    """The significant digits of a number's text."""
    return len(number.lower().split("e")[0].replace("-", "").replace(".", "").strip("0"))


def test_floats_are_written_as_their_shortest_text(tmp_path: Path) -> None:
    floats = [0.1, 0.1 + 0.2, 1e-7, 2.5, 1e300, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3]
    p = tmp_path / "f.json"
    statefile.Doc(p).write(floats)
    stored = exact(p.read_text())
    for x, text in zip(floats, (str(d) for d in stored)):
        # The same double, spelled with no more digits than Python's own repr.
        assert float(text) == x and math.copysign(1.0, float(text)) == math.copysign(1.0, x)
        assert digits(text) <= digits(repr(x)), (x, text)
    assert statefile.Doc(p).read() == floats


def test_decimals_and_big_ints_go_through_every_write_path(tmp_path: Path) -> None:
    big, dec = 2**200 + 1, Decimal("0.1000000000000000000000000000001")
    doc = statefile.Doc(tmp_path / "w.json")
    doc.write({"v": [big, dec]})
    doc.write_if(doc.version(), {"v": [big, dec], "again": True})
    with doc.update() as data:
        data["more"] = [big, dec]
    doc.update(lambda d: d.__setitem__("last", dec))
    statefile.write_json(tmp_path / "h.json", [big, dec])
    assert doc.read() == {"v": [big, dec], "again": True, "more": [big, dec], "last": dec}
    assert statefile.read_json(tmp_path / "h.json") == [big, dec]
    text = (tmp_path / "w.json").read_text()
    assert text.count(str(big)) == 2 and text.count(str(dec)) == 3


def test_a_decimal_of_a_million_digits_costs_its_length(tmp_path: Path) -> None:
    p = tmp_path / "n.json"
    digits = "7" * 1_000_000
    p.write_text(f'{{"n": -0.{digits}}}')
    doc = statefile.Doc(p)
    started = time.monotonic()
    assert doc.read() == {"n": Decimal(f"-0.{digits}")}
    doc.update(lambda d: d.__setitem__("m", d["n"]))
    assert p.read_text() == f'{{\n  "n": -0.{digits},\n  "m": -0.{digits}\n}}\n'
    # Linear work takes milliseconds; a quadratic step on a million digits, hours.
    assert time.monotonic() - started < 60
