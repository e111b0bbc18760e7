"""The configuration reference (README table) generated from the settings class itself."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from finsent.settings import ENV_PREFIX, Settings


def rows() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    result = []
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)"
        elif field.default is PydanticUndefined or field.default is None:
            default = ""
        else:
            default = str(field.default)
        result.append((f"{ENV_PREFIX}{name.upper()}", default, field.description or ""))
    return result


def markdown() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for variable, default, description in rows():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{variable}` | {shown} | {description.replace('|', '/')} |")
    return "\n".join(lines)
