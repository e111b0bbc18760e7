"""The tags of a pydantic discriminated union, for error messages that list the choices."""

from __future__ import annotations

from typing import Any, get_args


def union_tags(union: Any) -> tuple[str, ...]:
    """``Annotated[A | B, Field(discriminator="kind")]`` → A's ``kind`` literal, then B's."""
    members, field = get_args(union)
    return tuple(get_args(member.model_fields[field.discriminator].annotation)[0] for member in get_args(members))
