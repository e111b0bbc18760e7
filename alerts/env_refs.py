"""Environment variables named in a rules file's values, read when the file is loaded.

``${NAME}`` is the variable's value and ``${NAME:-default}`` falls back to ``default`` when it is unset or
empty (the shell's and Docker Compose's spelling); ``$$`` is one ``$``. Any other ``${`` is an error rather
than text sent as it stands. A webhook URL or header that carries a token can then stay out of the file, and
out of git. Only values are expanded, never keys, and after YAML parsing, so a value cannot change the
file's structure.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# `$$`, a reference (a default holds no `$`, `{` or `}`: no nesting), or a `${` that is neither.
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}|\$\{")


class UnsetVariable(ValueError):
    """A ``${NAME}`` without a default whose variable is unset or empty, or a ``${`` that is not a reference."""


def expand(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """``value`` (a parsed YAML document or part of one) with every reference in its strings replaced."""
    if isinstance(value, dict):
        return {key: expand(item, environ, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand(item, environ, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$$":
            return "$"
        if name is None:
            raise UnsetVariable(f"{where}: a ${{ that is not ${{NAME}} or ${{NAME:-default}} (write $${{ for the "
                                f"text itself)")
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        raise UnsetVariable(f"{where}: ${{{name}}} is unset or empty in the environment "
                            f"(set it, or give a default: ${{{name}:-…}})")

    return REFERENCE.sub(replace, value)
