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

    def nothing_embedded(self) -> str | None:
        """Why a run with rows embedded none of them, or None: the quarantine's counts,
        and the field when every row failed on the same one (a column the corpus lacks
        or spells otherwise, a type its writer gave every row)."""
        if self.embedded or not self.rows_in:
            return None
        one = (f"; every row failed on {next(iter(self.reasons))!r}: is that column missing, "
               f"misnamed or of another type in the corpus? (README: the corpus contract)"
               if len(self.reasons) == 1 else "")
        return (f"nothing was embedded: all {self.rows_in} rows are in the quarantine "
                f"({self._by_field()}){one}")

    def counts_line(self) -> str:
        """'embedded E, quarantined Q of N rows', with the quarantine's count per field."""
        why = self._by_field()
        return (f"embedded {self.embedded}, quarantined {self.quarantined} of {self.rows_in} "
                f"rows" + (f" ({why})" if why else ""))

    def _by_field(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.reasons.items())
