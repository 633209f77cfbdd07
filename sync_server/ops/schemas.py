"""Response bodies of the operations routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["CheckResult", "HealthResponse", "ReadyResponse"]


class HealthResponse(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class CheckResult(BaseModel):
    """The outcome of one readiness check."""

    status: Literal["ok", "failed", "skipped"]
    detail: str | None = Field(default=None, description="Why it failed or was skipped.")


class ReadyResponse(BaseModel):
    """Every readiness check, and which of them fail."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckResult] = Field(description="By name: database, schema, blobs, feed.")
    failing: list[str] = Field(description="The names of the checks that failed.")
