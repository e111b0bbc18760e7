"""Tables that fit the terminal they are printed on.

Cells a user types back (versions, document ids) and short cells stay whole; long text folds
into what the terminal leaves; columns that a narrow terminal cannot hold are left out (every
command that prints a table also has ``--json`` with everything).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Column:
    header: str
    whole: bool = True  # never cut; else the cell folds over lines
    from_width: int = 0  # left out on a terminal narrower than this
    justify: Literal["left", "right"] = "left"


def terminal_width() -> int:
    from rich.console import Console

    return Console().width


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[object]], *, title: str | None = None,
                caption: str | None = None) -> None:
    """Print ``rows`` (one cell per column, in order) to stdout as wide as the terminal. Cells are
    plain text: brackets in them ("index [finsent-docs] blocked") are not read as rich markup."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    shown = [i for i, column in enumerate(columns) if console.width >= column.from_width]
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for i in shown:
        column = columns[i]
        if column.whole:
            table.add_column(column.header, no_wrap=True, justify=column.justify)
        else:
            table.add_column(column.header, overflow="fold", ratio=1, justify=column.justify)
    for row in rows:
        table.add_row(*(escape(str(row[i])) for i in shown))
    console.print(table)
