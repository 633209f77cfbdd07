"""`Listeners` and `Subscription`: the one way the SDK calls the app back."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from edge_sdk import Subscription
from edge_sdk._notify import Listeners


def test_every_callback_hears_each_value_until_cancelled() -> None:
    listeners: Listeners[int] = Listeners("test")
    heard: list[tuple[str, int]] = []
    first = listeners.add(lambda v: heard.append(("a", v)))
    listeners.add(lambda v: heard.append(("b", v)))
    listeners.notify(1)
    first.cancel()
    first.cancel()  # idempotent
    listeners.notify(2)
    assert heard == [("a", 1), ("b", 1), ("b", 2)]
    assert not first.active
    assert len(listeners) == 1


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listeners: Listeners[int] = Listeners("access")
    heard: list[int] = []

    def broken(value: int) -> None:
        raise RuntimeError("app bug")

    listeners.add(broken)
    listeners.add(heard.append)
    with caplog.at_level(logging.ERROR, logger="edge_sdk"):
        listeners.notify(7)  # does not raise
    assert heard == [7]
    assert "a access callback failed" in caplog.text
    assert "app bug" in caplog.text


def test_deliver_runs_the_callback_where_the_app_wants() -> None:
    listeners: Listeners[str] = Listeners("test")
    queued: list[Callable[[], None]] = []
    heard: list[str] = []
    subscription = listeners.add(heard.append, deliver=queued.append)
    listeners.notify("x")
    assert heard == [] and len(queued) == 1
    queued.pop()()
    assert heard == ["x"]
    listeners.notify("y")
    subscription.cancel()  # cancelled before the queued call runs: it is dropped
    queued.pop()()
    assert heard == ["x"]


def test_a_callback_may_cancel_itself_while_notified() -> None:
    listeners: Listeners[int] = Listeners("test")
    heard: list[int] = []
    holder: list[Subscription] = []

    def once(value: int) -> None:
        heard.append(value)
        holder[0].cancel()

    holder.append(listeners.add(once))
    listeners.notify(1)
    listeners.notify(2)
    assert heard == [1]


def test_a_subscription_ends_with_its_block() -> None:
    listeners: Listeners[int] = Listeners("test")
    heard: list[int] = []
    with listeners.add(heard.append) as subscription:
        listeners.notify(1)
    listeners.notify(2)
    assert heard == [1] and not subscription.active
