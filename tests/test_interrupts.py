"""A Ctrl-C is never lost: one that Python drops because it landed in a finalizer is raised again by
`interrupts.check()` (which each training step calls), without the "Exception ignored" traceback."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from crossrec_peft import interrupts


def _sigint_in_plain_code() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # the handler runs at a bytecode boundary in this loop
        pass


class _SigintInFinalizer:
    def __del__(self) -> None:
        _sigint_in_plain_code()  # raised inside __del__: Python reports it as unraisable and drops it


def _sigint_in_a_finalizer() -> None:
    item = _SigintInFinalizer()
    del item


@pytest.mark.parametrize("where, raised_at_once", [(_sigint_in_plain_code, True), (_sigint_in_a_finalizer, False)])
def test_a_ctrl_c_is_raised_at_once_or_at_the_next_check(where, raised_at_once, capfd):
    with interrupts.remembered():
        if raised_at_once:
            with pytest.raises(KeyboardInterrupt):
                where()
        else:
            where()  # returns: Python dropped the KeyboardInterrupt...
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()  # ...and the next check raises it
        interrupts.check()  # raised once only
    assert "Exception ignored" not in capfd.readouterr().err


def test_pythons_hook_comes_back():
    hook = sys.unraisablehook
    with interrupts.remembered():
        assert sys.unraisablehook is not hook
    assert sys.unraisablehook is hook
    with interrupts.remembered():
        _sigint_in_a_finalizer()
    interrupts.check()  # a dropped interrupt does not outlive the block that caught it
