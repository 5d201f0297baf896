"""A recovery ended by the bulk changelog restore (streams/faust_internals.py) must not leave its
end signal set for the next one: Faust's recovery waits on that signal, and a stale one ended the
next recovery before it read anything (seen in the SIGTERM rolling-restart scenario)."""

import asyncio

from faust.tables.recovery import Recovery

from streams.faust_internals import _clear_end_signal_on_start


class FakeRecovery:
    def __init__(self) -> None:
        self.signal_recovery_end = asyncio.Event()
        self.started = 0

    def _set_recovery_started(self) -> None:
        self.started += 1


async def test_the_next_recovery_starts_with_its_end_signal_cleared() -> None:
    recovery = FakeRecovery()
    _clear_end_signal_on_start(recovery)
    _clear_end_signal_on_start(recovery)  # installed once, however many recoveries end in bulk
    recovery.signal_recovery_end.set()  # the bulk restore ended a recovery
    recovery._set_recovery_started()  # Faust starts the next one
    assert not recovery.signal_recovery_end.is_set()
    assert recovery.started == 1


async def test_a_waiter_woken_by_the_end_signal_stays_woken() -> None:
    recovery = FakeRecovery()
    _clear_end_signal_on_start(recovery)
    waiter = asyncio.ensure_future(recovery.signal_recovery_end.wait())
    await asyncio.sleep(0)
    recovery.signal_recovery_end.set()
    recovery._set_recovery_started()
    assert await asyncio.wait_for(waiter, 1) is True


def test_faust_still_starts_a_recovery_through_the_hooked_method() -> None:
    assert callable(Recovery._set_recovery_started)
    assert hasattr(Recovery, "signal_recovery_end")
