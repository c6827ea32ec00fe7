"""The two-tower model's row gathers: `gather_rows` is `table[index]` with a backward that sums repeated rows
in a fixed order, so that two runs of one seed stay bit-identical on a multi-threaded CPU."""

from __future__ import annotations

import pytest
import torch

from crossrec_peft.model.two_tower import gather_rows

GATHER_CASES = [  # (rows, dim, index shape, distinct rows indexed): the index repeats rows as windows repeat items
    (500, 384, (64, 20), 125),  # a batch of windows at the recipe's width: large enough for a parallel backward
    (2000, 384, (64, 20), 500),
    (40, 8, (7,), 5),  # one dimension, as the negative pool's index
    (30, 16, (3, 4, 5), 30),
]


@pytest.mark.parametrize("rows, dim, shape, distinct", GATHER_CASES)
def test_gather_rows_is_indexing_with_a_repeatable_backward(rows, dim, shape, distinct):
    generator = torch.Generator().manual_seed(rows)
    table = torch.randn(rows, dim, generator=generator, requires_grad=True)
    index = torch.randint(0, distinct, shape, generator=generator)
    weights = torch.randn(*shape, dim, generator=generator)
    assert torch.equal(gather_rows(table, index), table[index])

    def grad(gather) -> torch.Tensor:
        table.grad = None
        (gather() * weights).sum().backward()
        return table.grad.clone()

    reference = grad(lambda: table[index])
    first = grad(lambda: gather_rows(table, index))
    torch.testing.assert_close(first, reference)  # the same sums, up to the order of adding
    for _ in range(5):  # advanced indexing's backward differs between such repetitions at the first two sizes
        assert torch.equal(grad(lambda: gather_rows(table, index)), first)
