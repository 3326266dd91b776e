"""The duration grammar of README.md, Configuration, its short form, and the ``Duration`` type."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrotd.durations import (
    LONGEST,
    Duration,
    InvalidValueError,
    format_duration,
    parse_duration,
    quote,
)

HINT = "use 90s, 15m, 24h, 7d, PT1H or plain seconds"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5s", timedelta(seconds=1.5)),
        ("1.5h", timedelta(minutes=90)),
        ("24H", timedelta(hours=24)),
        ("  30s  ", timedelta(seconds=30)),
        ("0s", timedelta(0)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("P1W", timedelta(days=7)),
        ("P1Y", timedelta(days=365)),
        ("PT1M", timedelta(minutes=1)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("pt1h", timedelta(hours=1)),
        ("30", timedelta(seconds=30)),
        ("1.5", timedelta(seconds=1.5)),
        (".5", timedelta(milliseconds=500)),
        ("0", timedelta(0)),
        (30, timedelta(seconds=30)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(hours=2), timedelta(hours=2)),
        ("36500d", LONGEST),
    ],
)
def test_accepted_forms(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("banana", f'"banana" is not a duration: {HINT}'),
        ("", f'"" is not a duration: {HINT}'),
        ("   ", f'"   " is not a duration: {HINT}'),
        ("5x", f'"5x" is not a duration: {HINT}'),
        ("1h 30m", f'"1h 30m" is not a duration: {HINT}'),
        ("s", f'"s" is not a duration: {HINT}'),
        ("1e3", f'"1e3" is not a duration: {HINT}'),
        ("nan", f'"nan" is not a duration: {HINT}'),
        ("PT", f'"PT" is not a duration: {HINT}'),
        ("-5s", '"-5s" is negative: use a duration of 0 or more'),
        ("-30", '"-30" is negative: use a duration of 0 or more'),
        ("-PT1H", '"-PT1H" is negative: use a duration of 0 or more'),
        (-1, "-1 is negative: use a duration of 0 or more"),
        (-0.5, "-0.5 is negative: use a duration of 0 or more"),
        (
            timedelta(seconds=-1),
            "datetime.timedelta(days=-1, seconds=86399) is negative: use a duration of 0 or more",
        ),
        ("36501d", '"36501d" is too long: use at most 36500d (100 years)'),
        (10**20, "100000000000000000000 is too long: use at most 36500d (100 years)"),
        (
            "P1M",
            '"P1M" counts months, which have no fixed length: '
            "use days (P30D or 30d), or PT1M for minutes",
        ),
        (
            "P1Y2M",
            '"P1Y2M" counts months, which have no fixed length: '
            "use days (P30D or 30d), or PT1M for minutes",
        ),
        (True, f"True is not a duration: {HINT}"),
        (False, f"False is not a duration: {HINT}"),
        (None, f"None is not a duration: {HINT}"),
        (float("nan"), f"nan is not a duration: {HINT}"),
        (float("inf"), f"inf is not a duration: {HINT}"),
        ([1], f"[1] is not a duration: {HINT}"),
    ],
)
def test_refused_forms_say_what_is_accepted(value: object, message: str) -> None:
    with pytest.raises(InvalidValueError) as raised:
        parse_duration(value)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=1), "1h"),
        (timedelta(days=1, hours=2), "1d2h"),
        (timedelta(days=7), "7d"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=250), "0.25s"),
        (timedelta(microseconds=1), "0.000001s"),
        (timedelta(hours=1, seconds=0.5), "1h0.5s"),
        (timedelta(seconds=-90), "-1m30s"),
        (timedelta.min, "-999999999d"),
    ],
)
def test_short_form(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=LONGEST))
def test_short_form_reads_back(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(st.timedeltas(min_value=timedelta(0), max_value=LONGEST))
def test_iso_form_reads_back(duration: timedelta) -> None:
    iso = pydantic.TypeAdapter(timedelta).dump_python(duration, mode="json")
    assert parse_duration(iso) == duration


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789.smhdPTWYM-+ "),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.timedeltas(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_anything_is_a_duration_or_a_value_error(value: object) -> None:
    try:
        duration: timedelta | str = parse_duration(value)
    except InvalidValueError as exc:
        duration = str(exc)
    if isinstance(duration, str):
        assert len(duration.splitlines()) == 1
    else:
        assert timedelta(0) <= duration <= LONGEST


class _Model(pydantic.BaseModel):
    period: Duration


def test_duration_type_validates_and_serialises() -> None:
    model = _Model.model_validate({"period": "1h30m"})
    assert model.period == timedelta(minutes=90)
    assert model.model_dump() == {"period": "1h30m"}
    assert model.model_dump_json() == '{"period":"1h30m"}'
    with pytest.raises(pydantic.ValidationError, match="is not a duration"):
        _Model.model_validate({"period": "soon"})


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a", '"a"'),
        ('say "hi"\n', '"say \\"hi\\"\\n"'),
        ("x\u2028y", '"x\\u2028y"'),
        ("é", '"é"'),
        ("a" * 70, '"' + "a" * 60 + '..."'),
        (5, "5"),
    ],
)
def test_quote_shows_values_on_one_line(value: object, shown: str) -> None:
    assert quote(value) == shown


def test_quote_survives_numbers_too_long_to_print() -> None:
    assert quote(10**5000) == "a very large number"
