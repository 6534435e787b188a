"""Base class of every typed configuration section.

Sections are pydantic models that reject unknown keys and coerce nothing silently (strict types;
an int is accepted where a float is expected). Feature modules define their own section next to
their code (e.g. `metalm.meta.config.MetaConfig`) and `metalm.config` composes them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section: unknown keys and wrong types are errors naming the key."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False)
