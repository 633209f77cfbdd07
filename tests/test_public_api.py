"""The public surface is stated once, in each package's `__all__`, and documented.

Modules are private (``_name.py``), except in `sync_server`, which is laid out by
domain: a small core of public-named modules (app factory, settings, db, deps, errors,
...) and one public-named package per domain (identity, sync, blobs, ...), so that a
newcomer finds "enrolment" or "blob uploads" from the folder names. Even there, what
app developers and operators may import is exactly `sync_server.__all__`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ["crdt", "edge_box", "edge_sdk", "sync_server", "lidar_capture", "models"]

SERVER_CORE = {
    "app",
    "bodies",
    "db",
    "deps",
    "embedded",
    "errors",
    "keyfiles",
    "migrating",
    "openapi",
    "operator",
    "serving",
    "settings",
    "statuses",
}
"""`sync_server`'s core modules. A new one is a deliberate change: list it here."""
SERVER_DOMAINS = {
    "audit",
    "blobs",
    "bookings",
    "commerce",
    "dashboard",
    "edge",
    "fhir",
    "identity",
    "intents",
    "models",
    "notifications",
    "ops",
    "payments",
    "reports",
    "sync",
}
"""`sync_server`'s domain packages. A new domain (bookings, payments, ...) is listed here."""


def _server_module_kind(name: str) -> str | None:
    """Where a `sync_server` module sits: core, domain, private, or None (misplaced)."""
    top = name.removeprefix("sync_server.").split(".")[0]
    if top.startswith("_"):
        return "private"
    if top in SERVER_CORE:
        return "core"
    if top in SERVER_DOMAINS:
        return "domain"
    return None


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


@pytest.mark.parametrize("name", [p for p in PACKAGES if p != "sync_server"])
def test_modules_are_private(name: str) -> None:
    package = importlib.import_module(name)
    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    assert modules, f"{name} has no modules"
    assert all(m.startswith("_") for m in modules), modules


def test_server_modules_are_core_domains_or_private() -> None:
    package = importlib.import_module("sync_server")
    found = {m.name: m.ispkg for m in pkgutil.iter_modules(package.__path__)}
    misplaced = [m for m in found if _server_module_kind(m) is None]
    assert not misplaced, f"neither core, nor a domain, nor private: {misplaced}"
    assert found.keys() >= SERVER_CORE, SERVER_CORE - found.keys()
    assert found.keys() >= SERVER_DOMAINS, SERVER_DOMAINS - found.keys()
    for core in SERVER_CORE:
        assert not found[core], f"core module {core} is a package"
    for domain in SERVER_DOMAINS:
        assert found[domain], f"domain {domain} is not a package"
        sub = importlib.import_module(f"sync_server.{domain}")
        assert inspect.getdoc(sub), f"domain {domain} says nothing of itself"
        jobs = [m.name for m in pkgutil.iter_modules(sub.__path__)]
        assert jobs, f"domain {domain} is empty"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_classes_live_in_private_modules(name: str) -> None:
    package = importlib.import_module(name)
    for attr in package.__all__:
        obj = getattr(package, attr)
        module = getattr(obj, "__module__", "") or ""
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if name == "sync_server":
            assert module.startswith("sync_server."), f"{attr} comes from {module}"
            kind = _server_module_kind(module)
            assert kind in ("core", "domain", "private"), f"{attr} comes from {module}"
        else:
            assert module.startswith(f"{name}._"), f"{attr} comes from {module}"


def test_sync_server_functions_survive_their_modules_being_imported() -> None:
    """The package's lazy exports give the functions `migrate` and `serve` once their
    modules are loaded (the import system sets a package's attribute to each submodule
    it imports, so no module may share an exported name: they are `migrating` and
    `serving`)."""
    import subprocess
    import sys

    script = (
        "import sync_server.app, sync_server.migrating, sync_server.serving\n"
        "from sync_server import migrate, serve\n"
        "print(callable(migrate), callable(serve), migrate.__module__, serve.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "sync_server.migrating", "sync_server.serving"]
    package = importlib.import_module("sync_server")
    exported = set(package.__all__)
    shadowing = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name in exported]
    assert not shadowing, f"modules named like an export: {shadowing}"
