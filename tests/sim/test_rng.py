import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim.rng import uniform


def test_uniform_is_a_pure_function_in_range():
    draws = [uniform(1, eid, t, lane) for eid in range(50) for t in range(-1, 5) for lane in (0, 1)]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert draws == [uniform(1, eid, t, lane) for eid in range(50) for t in range(-1, 5)
                     for lane in (0, 1)]
    assert len(set(draws)) == len(draws)  # no collisions among 600 53-bit draws
    assert uniform(1, 3, 4, 0) != uniform(2, 3, 4, 0)


@given(seed=st.integers(0, 2**64 - 1), tick=st.integers(-10, 2**40),
       lane=st.integers(0, 20), ids=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=20))
def test_numpy_uniform_is_bit_identical(seed, tick, lane, ids):
    from sim.kernels.numpy import uniform as np_uniform

    got = np_uniform(seed, np.array(ids, dtype=np.int64), tick, lane).tolist()
    assert got == [uniform(seed, eid, tick, lane) for eid in ids]
