"""The steps of `somojax predict` (somojax/infer/rollout.py) on their own: which (tile, time
block) pairs a process does, and how many pairs the whole rollout has."""

from types import SimpleNamespace

import numpy as np

from somojax.infer import rollout


def _plan():
    """Four tiles of 2x2 cells, the second without a cell to predict; three time blocks."""
    mask = np.ones((2, 8), bool)
    mask[:, 2:4] = False
    tiles = [(slice(0, 2), slice(x, x + 2)) for x in (0, 2, 4, 6)]
    blocks = [slice(0, 10), slice(10, 20), slice(20, 25)]
    return SimpleNamespace(mask=mask, tiles=tiles, blocks=blocks)


def test_work_skips_empty_tiles_and_finished_pairs():
    plan = _plan()
    assert rollout._work(plan, {}, 0, 1) == [(t, b) for t in (0, 2, 3) for b in range(3)]
    assert rollout._work(plan, {(0, 1): {}, (3, 2): {}}, 0, 1) == [
        (0, 0),
        (0, 2),
        (2, 0),
        (2, 1),
        (2, 2),
        (3, 0),
        (3, 1),
    ]


def test_work_deals_tiles_round_robin_over_processes():
    plan = _plan()
    first, second = rollout._work(plan, {}, 0, 2), rollout._work(plan, {}, 1, 2)
    assert {t for t, _ in first} == {0, 2} and {t for t, _ in second} == {3}  # tile 1 has no cell
    assert sorted(first + second) == rollout._work(plan, {}, 0, 1)


def test_expected_blocks_counts_pairs_of_tiles_with_cells():
    plan = _plan()
    assert rollout._expected_blocks(plan) == 3 * 3
    plan.mask[:] = False
    assert rollout._expected_blocks(plan) == 0
