"""Keys map exactly: two DynamoDB keys never become one PostgreSQL key (docs/correctness.md).

Property tests through :class:`~ddbcdc.cleanse.Cleanser` (its compiled fast path and its
validating model both), for INSERTs (key in the image) and REMOVEs (key in Keys alone):

- an S key into an integer column is taken only when it is the canonical spelling of its
  value (``str(n) == s``): ``"07"``, ``"+7"``, ``" 7"``, ``"-0"``, ``"1_0"``, an
  Arabic-Indic seven are refused;
- an S key never goes into a numeric column (``"7"`` and ``"7.0"`` are distinct S values);
- an N key into a text column is one canonical text per number: numerically equal N values
  (one DynamoDB key) give one text, different numbers different texts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ddbcdc.cleanse import Cleanser
from ddbcdc.cleanse.coerce import INT_BITS
from ddbcdc.decode.attributes import unmarshal_value
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.mapping import parse_mapping

US = 1_700_000_000_000_000
#: A number in plain notation: no exponent, no leading or trailing zeros, no "+".
CANONICAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")
EVENTS = ("INSERT", "REMOVE")


def cleanser(key_type: str) -> Cleanser:
    mapping = parse_mapping(
        {
            "source_table": "t",
            "target_table": "t",
            "key": ["id"],
            "columns": [{"name": "id", "type": key_type}, {"name": "note", "type": "text"}],
        },
        name=f"t_{key_type}",
    )
    return Cleanser(mapping)


CLEANSERS = {t: cleanser(t) for t in ("bigint", "integer", "smallint", "numeric", "text", "bytea")}


def change(value: Any, event: str) -> ChangeRecord:
    return ChangeRecord(
        event_id="e",
        event_name=event,  # type: ignore[arg-type]
        table_name="t",
        aws_region=None,
        keys={"id": value},
        new_image=None if event == "REMOVE" else {"id": value, "note": "n"},
        old_image=None,
        approximate_creation=datetime.fromtimestamp(US / 1e6, UTC),
        approximate_creation_us=US,
        size_bytes=None,
        is_ttl_delete=False,
    )


def key_of(key_type: str, value: Any, event: str) -> Any:
    """The key column's value, or CleanseError (returned, not raised)."""
    try:
        return CLEANSERS[key_type].cleanse(change(value, event)).key[0]
    except CleanseError as exc:
        return exc


def integers(bits: int) -> st.SearchStrategy[int]:
    edge = 2**bits
    return st.one_of(
        st.integers(-edge, edge - 1),
        st.sampled_from([0, 1, -1, edge - 1, -edge, edge, -edge - 1]),
        st.integers(),
    )


FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


@st.composite
def respelled(draw: st.DrawFn) -> str:
    """Another spelling of an integer (int() would read most of them as the same value)."""
    n = draw(integers(63))
    text = str(n)
    digits = text.lstrip("-")
    sign = "-" if n < 0 else draw(st.sampled_from(["", "+", "-"]))
    zeros = "0" * draw(st.integers(0, 3))
    spelled = sign + zeros + digits
    if len(digits) > 1 and draw(st.booleans()):
        cut = draw(st.integers(1, len(digits) - 1))
        spelled = sign + zeros + digits[:cut] + "_" + digits[cut:]
    table = draw(st.sampled_from([None, FULL_WIDTH, ARABIC_INDIC]))
    if table is not None:
        spelled = spelled.translate(table)
    pad = draw(st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u2003"]))
    return draw(st.sampled_from([spelled, pad + spelled, spelled + pad]))


S_KEYS = st.one_of(
    respelled(), st.text(max_size=8), st.from_regex(r"[-+ 0-9_]{0,5}", fullmatch=True)
)


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("key_type", sorted(INT_BITS))
@given(text=S_KEYS)
@example(text="07")
@example(text="-0")
@example(text="+7")
@example(text=" 7")
@example(text="7 ")
@example(text="00")
@example(text="-07")
@example(text="1_0")
@example(text="\u0667")  # ARABIC-INDIC DIGIT SEVEN: int() reads it as 7
@example(text="\uff17")  # FULLWIDTH DIGIT SEVEN
def test_a_string_key_into_an_integer_column_is_taken_only_in_its_canonical_spelling(
    key_type: str, event: str, text: str
) -> None:
    got = key_of(key_type, text, event)
    if not isinstance(got, CleanseError):
        assert type(got) is int and str(got) == text, f"{text!r} became the key {got!r}"


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("key_type", sorted(INT_BITS))
@given(data=st.data())
def test_a_canonical_string_key_in_range_is_its_integer(
    key_type: str, event: str, data: st.DataObject
) -> None:
    bits = INT_BITS[key_type]
    n = data.draw(integers(bits))
    got = key_of(key_type, str(n), event)
    if -(2**bits) <= n < 2**bits:
        assert got == n and type(got) is int
    else:
        assert isinstance(got, CleanseError)


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("key_type", sorted(INT_BITS))
@given(data=st.data())
def test_a_number_key_into_an_integer_column_is_taken_only_when_exact(
    key_type: str, event: str, data: st.DataObject
) -> None:
    bits = INT_BITS[key_type]
    n = data.draw(integers(bits).filter(lambda i: abs(i) < 10**37))  # an N (38 digits)
    spelled = data.draw(st.sampled_from([str(n), f"{n}.0", f"{n}.5", f"{n}E+0"]))
    got = key_of(key_type, number(spelled), event)
    if -(2**bits) <= n < 2**bits and not spelled.endswith(".5"):
        assert got == n and type(got) is int
    else:
        assert isinstance(got, CleanseError)


NUMBER_TEXTS = st.one_of(
    st.integers(-(10**38) + 1, 10**38 - 1).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=None)
    .filter(lambda d: d == 0 or -130 <= d.adjusted() <= 125)
    .map(lambda d: str(d) if len(d.as_tuple().digits) <= 38 else "1"),
    st.from_regex(r"-?[0-9]{1,5}(\.[0-9]{0,4})?([eE][-+]?[0-9]{1,2})?", fullmatch=True),
)


def number(text: str) -> Any:
    """An N value as decode gives it (int or Decimal)."""
    return unmarshal_value({"N": text})


@st.composite
def equal_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """Two spellings of one number (one DynamoDB key): trailing zeros, exponents, zeros."""
    value = Decimal(draw(NUMBER_TEXTS))
    shift = draw(st.integers(0, 4))
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    with localcontext(prec=200):
        scaled = value.quantize(Decimal(1).scaleb(exponent - shift))
        plain = format(value, "f")
        zeroed = plain.replace("-", "-0") if value < 0 else "0" + plain  # a leading zero
        spellings = [str(value), str(scaled), f"{value:E}", zeroed]
    spellings = [s for s in spellings if _fits(s)]
    return draw(st.sampled_from(spellings)), draw(st.sampled_from(spellings))


def _fits(text: str) -> bool:
    try:
        number(text)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("event", EVENTS)
@given(pair=equal_numbers())
@example(pair=("7.10", "7.1"))
@example(pair=("1E+2", "100"))
@example(pair=("-0", "0.000"))
def test_equal_number_keys_into_a_text_column_are_one_text(
    event: str, pair: tuple[str, str]
) -> None:
    a, b = (key_of("text", number(t), event) for t in pair)
    assert a == b and isinstance(a, str)


@pytest.mark.parametrize("event", EVENTS)
@given(a=NUMBER_TEXTS.filter(_fits), b=NUMBER_TEXTS.filter(_fits))
@example(a="1", b="10")
@example(a="0.1", b="1")
@example(a="-1", b="1")
@example(a="1E+1", b="1")
@example(a="2488222.5329053474971655455916", b="2488222.5329053474971655455915")  # 29 digits
def test_different_number_keys_into_a_text_column_stay_different(
    event: str, a: str, b: str
) -> None:
    x, y = number(a), number(b)
    kx, ky = key_of("text", x, event), key_of("text", y, event)
    assert isinstance(kx, str) and isinstance(ky, str)
    assert (kx == ky) == (Decimal(x) == Decimal(y))
    assert Decimal(kx) == Decimal(x)  # the text is the number, in plain notation
    assert CANONICAL.fullmatch(kx) and kx != "-0", kx


@pytest.mark.parametrize("event", EVENTS)
@given(text=st.text(max_size=6))
@example(text="")
@example(text="7")
@example(text="7.0")
def test_a_string_key_never_goes_into_a_numeric_column(event: str, text: str) -> None:
    assert isinstance(key_of("numeric", text, event), CleanseError)


@pytest.mark.parametrize("event", EVENTS)
@given(text=NUMBER_TEXTS.filter(_fits))
def test_a_number_key_into_a_numeric_column_is_its_value(event: str, text: str) -> None:
    got = key_of("numeric", number(text), event)
    assert isinstance(got, Decimal) and got == Decimal(text)


@pytest.mark.parametrize("event", EVENTS)
@given(text=st.text(max_size=6).filter(lambda s: "\x00" not in s))
def test_a_string_key_into_a_text_column_is_the_string(event: str, text: str) -> None:
    got = key_of("text", text, event)
    if isinstance(got, CleanseError):  # only what PostgreSQL cannot hold (lone surrogates)
        with pytest.raises(UnicodeEncodeError):
            text.encode("utf-8")
    else:
        assert got == text


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("value", ["AAEC", "7", 7])
def test_a_binary_key_takes_only_b(event: str, value: Any) -> None:
    assert isinstance(key_of("bytea", value, event), CleanseError)
    assert key_of("bytea", b"\x00\x01", event) == b"\x00\x01"
