"""Plain-text tables for the summary and comparisons, laid out like rich's SIMPLE box.

rich measures and renders every cell through its segment machinery: 22,000 lines (2,000
configs x 11 metrics) took 17 s. These tables are plain text for terminals and Ansible
logs alike, so a join of padded strings does, in milliseconds. Lines are not wrapped to
the terminal: a log keeps whole lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_GAP = "   "  # between columns, as rich's padding and SIMPLE's blank vertical give
_MARGIN = "  "


@dataclass
class TextTable:
    """Title, a header line, rows in sections (a blank line between), a caption."""

    title: str
    caption: str
    headers: list[str] = field(default_factory=list)
    right_aligned: list[bool] = field(default_factory=list)
    rows: list[tuple[str, ...] | None] = field(default_factory=list)  # None: section break

    def add_column(self, header: str, justify: str = "left") -> None:
        self.headers.append(header)
        self.right_aligned.append(justify == "right")

    def add_row(self, *cells: str, end_section: bool = False) -> None:
        self.rows.append(cells)
        if end_section:
            self.add_section()

    def add_section(self) -> None:
        if self.rows and self.rows[-1] is not None:
            self.rows.append(None)

    def _line(self, cells: tuple[str, ...], widths: list[int]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, self.right_aligned, strict=True)
        )
        return (_MARGIN + _GAP.join(padded)).rstrip()

    def render(self) -> str:
        body = [row for row in self.rows if row is not None]
        widths = [
            max([len(header), *(len(row[column]) for row in body)])
            for column, header in enumerate(self.headers)
        ]
        rule = " " + "─" * (sum(widths) + len(_GAP) * (len(widths) - 1) + 2)
        lines = [self.title, "", self._line(tuple(self.headers), widths), rule]
        lines += ["" if row is None else self._line(row, widths) for row in self.rows]
        if lines[-1]:  # the blank bottom edge
            lines.append("")
        lines.append(self.caption)
        return "\n".join(lines) + "\n"
