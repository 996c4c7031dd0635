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


FEW_ITEMS = 3  # a culture with fewer items of a modality than this is listed by the check


@dataclass
class CheckReport:
    """What `culturesim embed --check` found, before anything is embedded or written:
    the rows (usable per modality, already embedded, to quarantine per field, the
    first few bad ones), the items per culture and modality, the text encoder
    `auto` would use and the notes about the corpus, and whether the output
    directory holds vectors of other settings (`refused`: why a run would stop)."""

    corpus: str
    files: int
    rows_in: int
    usable: dict[str, int]  # modality -> rows to embed or embedded already
    done: int
    reasons: dict[str, int]  # field -> rows to quarantine
    examples: list[str]
    items: dict[str, dict[str, int]]  # modality -> culture -> items
    encoder: str | None = None  # the text encoder and why, when there are texts
    notes: list[str] = field(default_factory=list)
    refused: str | None = None

    @property
    def cultures(self) -> int:
        return len({c for per in self.items.values() for c in per})

    def lines(self) -> list[str]:
        """The lines `culturesim embed --check` prints."""
        usable = sum(self.usable.values())
        quarantined = sum(self.reasons.values())
        per_modality = ", ".join(f"{m} {n:,}" for m, n in self.usable.items() if n)
        why = ", ".join(f"{k}: {v:,}" for k, v in self.reasons.items())
        out = [f"{self.rows_in:,} rows in {self.files} file(s): {usable:,} usable"
               + (f" ({per_modality})" if per_modality else "")
               + (f", {quarantined:,} would be quarantined ({why})" if quarantined else "")]
        out += [f"  e.g. {e}" for e in self.examples]
        out.append(f"{self.cultures:,} culture(s)")
        for m, per in self.items.items():
            n = sorted(per.values())
            few = sorted((c for c, k in per.items() if k < FEW_ITEMS), key=lambda c: (per[c], c))
            line = (f"  {m}: {len(n):,} culture(s), items per culture {n[0]:,} to {n[-1]:,} "
                    f"(median {n[len(n) // 2]:,})")
            if few:
                shown = ", ".join(f"{c!r} ({per[c]})" for c in few[:5])
                more = f" and {len(few) - 5} more" if len(few) > 5 else ""
                line += f"; fewer than {FEW_ITEMS}: {shown}{more}"
            out.append(line)
        if self.encoder:
            out.append(f"text encoder {self.encoder}")
        out += [f"note: {n}" for n in self.notes]
        if self.refused:
            out.append(f"a run into this --out would be refused: {self.refused}")
        elif self.done:
            out.append(f"{self.done:,} of the usable rows are embedded there already (a run "
                       "resumes)")
        out.append("nothing was embedded or written")
        return out
