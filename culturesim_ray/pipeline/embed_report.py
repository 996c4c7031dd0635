"""What an embed run reports: its counts, and the lines the CLI prints from them. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmbedReport:
    """An embed run's counts: rows in, embedded (those already done included),
    quarantined with a count per field, and the notes about the corpus."""

    rows_in: int
    embedded: int
    quarantined: int
    skipped_done: int
    reasons: dict[str, int]
    out: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.embedded + self.quarantined

    @property
    def empty(self) -> bool:
        """Rows came in and none of them was embedded."""
        return bool(self.rows_in) and not self.embedded

    def nothing_embedded(self, example: str | None = None) -> str | None:
        """Why a run with rows embedded none of them, or None: the quarantine's counts
        and `example`, one quarantined row's 'SOURCE_ROW: REASON'; when every row is
        missing the same field, a column the corpus lacks or spells otherwise."""
        if not self.empty:
            return None
        msg = (f"nothing was embedded: all {self.rows_in} rows are in the quarantine "
               f"({self._by_field()})")
        if example:
            msg += f"; for example {example}"
            if len(self.reasons) == 1 and example.endswith(": missing"):
                msg += (f" (in every row: does the corpus lack a {next(iter(self.reasons))!r} "
                        f"column, or spell it otherwise? README: the corpus contract)")
        return msg

    def counts_line(self) -> str:
        """'embedded E, quarantined Q of N rows', with the quarantine's count per field."""
        why = self._by_field()
        return (f"embedded {self.embedded}, quarantined {self.quarantined} of {self.rows_in} "
                f"rows" + (f" ({why})" if why else ""))

    def _by_field(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.reasons.items())
