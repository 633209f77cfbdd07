"""The public surface is stated once, in each package's `__all__`, and documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ["crdt", "edge_sdk", "sync_server", "lidar_capture", "models"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_real_documented_names(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert not attr.startswith("_")
        obj = getattr(package, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", PACKAGES)
def test_modules_are_private(name: str) -> None:
    package = importlib.import_module(name)
    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    assert modules, f"{name} has no modules"
    assert all(m.startswith("_") for m in modules), modules


@pytest.mark.parametrize("name", PACKAGES)
def test_public_classes_live_in_private_modules(name: str) -> None:
    package = importlib.import_module(name)
    for attr in package.__all__:
        obj = getattr(package, attr)
        module = getattr(obj, "__module__", "") or ""
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert module.startswith(f"{name}._"), f"{attr} comes from {module}"
