"""BIN (issuer identification number) lookup: brand, funding, country, issuer.

The packaged table ``data/bin-ranges.csv`` is the binlist project's public range
list (see ``data/README.md``). Coverage is partial by design: an unknown BIN is
:data:`UNKNOWN_BIN`, never an error.

Each row is a prefix of 1 to 8 digits, or a range of equally long prefixes
(``iin_start``..``iin_end``; an empty ``iin_end`` means the single prefix). The
longest prefix that matches wins, so an 8-digit row overrides the 6-digit row it
sits in. Lookups read only the first eight digits of the number (``bin8``) and
cost one bisection per prefix length present in the table.

Quirks handled on load (the packaged file has only the last two, but an updated
copy may have any): rows whose prefixes are not ASCII digits, are longer than
eight digits, differ in length or run backwards are skipped and counted in
:attr:`BinTable.skipped`; overlapping or duplicate rows of one prefix length are
resolved in favour of the narrower range, then of the earlier row; country codes
are upper-cased (``UK`` becomes ``GB``) and anything that is not two letters is
dropped; empty fields become ``None`` and surrounding whitespace is trimmed.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from paywarden.core.secrets import CardNumber

_MAX_PREFIX = 8

# The table's scheme/brand names mapped to Stripe's ``card.brand`` values.
_BRANDS: dict[str, str] = {
    "visa": "visa",
    "mastercard": "mastercard",
    "master card": "mastercard",
    "amex": "amex",
    "american express": "amex",
    "discover": "discover",
    "diners": "diners",
    "diners club": "diners",
    "diners club international": "diners",
    "jcb": "jcb",
    "unionpay": "unionpay",
    "union pay": "unionpay",
    "china unionpay": "unionpay",
    "china union pay": "unionpay",
}
_FUNDING = frozenset({"credit", "debit", "prepaid"})
_YES = frozenset({"y", "yes", "true", "1"})
# "UK" is a common non-ISO spelling; ISO 3166-1 reserves it exceptionally for GB.
_COUNTRY_ALIASES = {"UK": "GB"}


@dataclass(frozen=True)
class BinInfo:
    brand: str | None  # Stripe brand name, or None when the table has none we know
    funding: str  # credit | debit | prepaid | unknown (Stripe's card.funding)
    country: str | None  # ISO 3166-1 alpha-2, upper case
    issuer: str | None


UNKNOWN_BIN = BinInfo(brand=None, funding="unknown", country=None, issuer=None)


@dataclass
class _Level:
    """All ranges of one prefix length, sorted and non-overlapping."""

    length: int
    starts: list[int]
    ends: list[int]
    infos: list[BinInfo]

    def insert(self, lo: int, hi: int, info: BinInfo) -> None:
        """Add [lo, hi], keeping whatever part of it is already covered."""
        gaps: list[tuple[int, int]] = []
        i = bisect_left(self.ends, lo)  # first range that ends at or after lo
        cur = lo
        while cur <= hi:
            if i < len(self.starts) and self.starts[i] <= hi:
                if self.starts[i] > cur:
                    gaps.append((cur, self.starts[i] - 1))
                cur = max(cur, self.ends[i] + 1)
                i += 1
            else:
                gaps.append((cur, hi))
                break
        for a, b in gaps:
            j = bisect_left(self.starts, a)
            self.starts.insert(j, a)
            self.ends.insert(j, b)
            self.infos.insert(j, info)

    def find(self, head: str) -> BinInfo | None:
        key = int(head[: self.length])
        i = bisect_right(self.starts, key) - 1
        if i >= 0 and key <= self.ends[i]:
            return self.infos[i]
        return None


class BinTable:
    """An immutable BIN range table. Build with :meth:`load_default` or :meth:`from_csv`."""

    __slots__ = ("_levels", "_size", "skipped")

    def __init__(self, *, levels: Iterable[_Level], skipped: int = 0) -> None:
        # Longest prefix first: the first level that matches answers.
        self._levels = tuple(sorted(levels, key=lambda lv: -lv.length))
        self._size = sum(len(lv.starts) for lv in self._levels)
        self.skipped = skipped

    @classmethod
    def load_default(cls) -> BinTable:
        """The packaged table, parsed once per process."""
        return _default_table()

    @classmethod
    def from_csv(cls, path_or_text: str | os.PathLike[str]) -> BinTable:
        """Parse a binlist-style CSV: a path (``os.PathLike``) or the CSV text (``str``)."""
        if isinstance(path_or_text, os.PathLike):
            text = Path(path_or_text).read_text(encoding="utf-8-sig")
        else:
            text = path_or_text.removeprefix("\ufeff")
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> BinTable:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None or "iin_start" not in reader.fieldnames:
            raise ValueError("BIN table has no iin_start column")
        rows: list[tuple[int, int, int, int, int, BinInfo]] = []  # width, order, length, lo, hi
        interned: dict[BinInfo, BinInfo] = {}
        skipped = 0
        for order, row in enumerate(reader):
            bounds = _bounds(row.get("iin_start"), row.get("iin_end"))
            if bounds is None:
                skipped += 1
                continue
            length, lo, hi = bounds
            info = _info(row)
            info = interned.setdefault(info, info)
            rows.append((hi - lo, order, length, lo, hi, info))
        levels: dict[int, _Level] = {}
        # Narrowest first (then file order), so a narrower range keeps its slice.
        for _width, _order, length, lo, hi, info in sorted(rows, key=lambda r: r[:2]):
            level = levels.setdefault(length, _Level(length, [], [], []))
            level.insert(lo, hi, info)
        return cls(levels=levels.values(), skipped=skipped)

    def lookup(self, number: CardNumber) -> BinInfo:
        """The most specific row matching the number, or :data:`UNKNOWN_BIN`."""
        return self.lookup_prefix(number.bin8)

    def lookup_prefix(self, head: str) -> BinInfo:
        """:meth:`lookup` by the number's first eight digits (fewer for a short
        number), for callers that already hold the digits."""
        for level in self._levels:
            if len(head) >= level.length:
                found = level.find(head)
                if found is not None:
                    return found
        return UNKNOWN_BIN

    def __len__(self) -> int:
        """Number of distinct, non-overlapping ranges held."""
        return self._size

    def __repr__(self) -> str:
        return f"BinTable(ranges={self._size}, skipped={self.skipped})"


@functools.cache
def _default_table() -> BinTable:
    text = (
        resources.files("paywarden.vault")
        .joinpath("data", "bin-ranges.csv")
        .read_text(encoding="utf-8-sig")
    )
    return BinTable.from_csv(text)


def _bounds(start: str | None, end: str | None) -> tuple[int, int, int] | None:
    """(prefix length, first, last) of a row, or None when the row is malformed."""
    start = (start or "").strip()
    end = (end or "").strip() or start
    if not (0 < len(start) <= _MAX_PREFIX and len(end) == len(start)):
        return None
    if not (start.isascii() and start.isdigit() and end.isascii() and end.isdigit()):
        return None
    lo, hi = int(start), int(end)
    if hi < lo:
        return None
    return len(start), lo, hi


def _clean(value: str | None) -> str:
    return (value or "").strip()


def _info(row: dict[str, str | None]) -> BinInfo:
    brand = _BRANDS.get(_clean(row.get("scheme")).lower()) or _BRANDS.get(
        _clean(row.get("brand")).lower()
    )
    if _clean(row.get("prepaid")).lower() in _YES:
        funding = "prepaid"
    else:
        kind = _clean(row.get("type")).lower()
        funding = kind if kind in _FUNDING else "unknown"
    code = _clean(row.get("country")).upper()
    code = _COUNTRY_ALIASES.get(code, code)
    country = code if len(code) == 2 and code.isascii() and code.isalpha() else None
    return BinInfo(
        brand=brand, funding=funding, country=country, issuer=_clean(row.get("bank_name")) or None
    )
