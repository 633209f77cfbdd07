"""The server's one error tree: every class has a status, drawn where it is defined."""

from __future__ import annotations

import inspect

import sync_server
from sync_server import errors
from sync_server.app import STATUS_CODES, status_code_of
from sync_server.blobs.uploads import OffsetMismatch

TREE = [
    obj
    for obj in (getattr(sync_server, name) for name in sync_server.__all__)
    if inspect.isclass(obj) and issubclass(obj, sync_server.ServerError)
]


def test_the_public_tree_is_the_errors_module() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.ServerError) and obj.__module__ == errors.__name__
    }
    assert set(TREE) == defined


def test_every_refusal_has_a_client_status_and_a_code() -> None:
    for cls in TREE:
        if cls is sync_server.ServerError:
            continue
        error = cls("refused")
        assert 400 <= status_code_of(error) < 600 and status_code_of(error) != 500, cls
        assert error.code and error.code != sync_server.ServerError.code, cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is not drawn"
    assert set(STATUS_CODES) <= set(TREE)


def test_a_subclass_takes_its_nearest_base_status_and_keeps_its_fields() -> None:
    mismatch = OffsetMismatch(sent_at=5, offset=3, size=10)
    assert status_code_of(mismatch) == 409
    assert (mismatch.code, mismatch.details()) == ("offset_mismatch", {"offset": 3})
    assert status_code_of(sync_server.Gone("gone")) == 410
    assert isinstance(sync_server.Gone("gone"), sync_server.NotFound)
    assert status_code_of(sync_server.Unprocessable("no")) == 422
    assert status_code_of(sync_server.Invalid("no", code="empty_chunk")) == 400
