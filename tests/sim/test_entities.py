import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.entities import FIELDS, NPC, PLAYER, validate_input, validate_row
from sim.errors import InvalidInput

ROW = (5, NPC, 100.0, 200.0, 1.0, -2.0, 4.0, 0.5, 3, 0.0, 0.0, 0, 0)


def test_valid_row_is_normalised():
    row = validate_row((5, PLAYER, 100, 200, 1, -2, 4, 0, 3, 0, 0, 0, 0),
                       width=2048, height=2048, max_radius=4)
    assert len(row) == len(FIELDS)
    assert all(isinstance(row[i], float) for i in (2, 3, 4, 5, 6, 7, 9, 10))
    assert all(type(row[i]) is int for i in (0, 1, 8, 11, 12))


@pytest.mark.parametrize(("index", "value", "fragment"), [
    (2, math.nan, "finite"), (4, math.inf, "finite"), (6, 0.0, "radius"), (6, 5.0, "radius"),
    (2, 3000.0, "outside"), (1, 7, "kind"), (0, -1, "id"), (0, 1.5, "id"), (8, True, "score"),
])
def test_bad_rows_are_rejected(index, value, fragment):
    row = list(ROW)
    row[index] = value
    with pytest.raises(InvalidInput, match=fragment):
        validate_row(row, width=2048, height=2048, max_radius=4)


def test_wrong_row_length_is_rejected():
    with pytest.raises(InvalidInput, match="13 fields"):
        validate_row(ROW[:-1], width=2048, height=2048, max_radius=4)


def test_inputs_are_clamped():
    assert validate_input((1, 2, 5.0, -7.0, 1)) == (1, 2, 1.0, -1.0, 1)


@pytest.mark.parametrize("bad", [
    (1, 2, math.nan, 0.0, 0), (1, 2, 0.0, math.inf, 0), (1, 2, 0.0, -math.inf, 0),
    (1, 2, "1", 0.0, 0), (1, 2, 0.0, 0.0, 256), (1, -1, 0.0, 0.0, 0), (True, 2, 0.0, 0.0, 0),
    (1, 2, 0.0, 0.0), None, "input",
])
def test_bad_inputs_are_rejected(bad):
    with pytest.raises(InvalidInput):
        validate_input(bad)


@settings(max_examples=60)
@given(st.tuples(st.integers(-5, 2**64), st.integers(-5, 2**64),
                 st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans(),
                 st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=2),
                 st.integers(-2, 300)))
def test_accepted_inputs_are_always_finite_and_in_range(inp):
    try:
        eid, seq, thrust, turn, action = validate_input(inp)
    except InvalidInput:
        return
    assert math.isfinite(thrust) and -1.0 <= thrust <= 1.0
    assert math.isfinite(turn) and -1.0 <= turn <= 1.0
    assert 0 <= action <= 255 and eid >= 0 and seq >= 0


_EDGES = [-1, 256, 2**63 - 1, 2**63, -1.2, 1.0000001, -1.0, 1.0, -0.0, 0, 1, math.nan, math.inf,
          True, None, "1"]
_ODD = st.floats() | st.integers(-2**70, 2**70) | st.sampled_from(_EDGES)
_PLAIN_INPUT = st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
                         st.floats(-1.0, 1.0), st.floats(-1.0, 1.0), st.integers(0, 255))


def _judged_alike(inp: tuple[object, ...]) -> None:
    """A tuple (which may take a short path) is judged as the same list (which never does)."""
    try:
        want = validate_input(list(inp))
    except InvalidInput as exc:
        with pytest.raises(InvalidInput, match=re.escape(str(exc))):
            validate_input(inp)
        return
    got = validate_input(inp)
    assert got == want and list(map(type, got)) == list(map(type, want))


@pytest.mark.parametrize("index", range(5))
def test_an_input_with_an_edge_value_is_judged_as_the_full_checks_decide(index):
    for value in _EDGES:
        inp: list[object] = [3, 7, 0.5, -0.5, 1]
        inp[index] = value
        _judged_alike(tuple(inp))


@settings(max_examples=300)
@given(_PLAIN_INPUT, st.none() | st.tuples(st.integers(0, 4), _ODD))
def test_a_tuple_input_and_the_same_list_are_judged_alike(plain, change):
    """Plain inputs, and inputs with one field changed to something odd."""
    inp = list(plain)
    if change is not None:
        inp[change[0]] = change[1]
    _judged_alike(tuple(inp))
