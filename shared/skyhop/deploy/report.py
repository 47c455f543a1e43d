"""What a deploy did, for every target (printed as a table or JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FunctionResult(BaseModel):
    function_id: str
    action: Literal["created", "updated", "deleted", "absent"]
    url: str | None = None


class DeployReport(BaseModel):
    target: Literal["gcp", "azure"]
    source: str | None = Field(None, description="where the deployed archive was staged")
    functions: list[FunctionResult] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
