"""Money is integer minor units plus an ISO 4217 currency. Never floats.

Minor-unit exponents are from ISO 4217 (the SIX maintenance agency list,
amendment 179). Stripe accepts lower-case codes; so do we.
"""

from __future__ import annotations

from dataclasses import dataclass

# code -> number of minor-unit digits
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "aed",
            "afn",
            "all",
            "amd",
            "ang",
            "aoa",
            "ars",
            "aud",
            "awg",
            "azn",
            "bam",
            "bbd",
            "bdt",
            "bgn",
            "bmd",
            "bnd",
            "bob",
            "brl",
            "bsd",
            "btn",
            "bwp",
            "bzd",
            "cad",
            "cdf",
            "chf",
            "cny",
            "cop",
            "crc",
            "cup",
            "cve",
            "czk",
            "dkk",
            "dop",
            "dzd",
            "egp",
            "ern",
            "etb",
            "eur",
            "fjd",
            "fkp",
            "gbp",
            "gel",
            "ghs",
            "gip",
            "gmd",
            "gtq",
            "gyd",
            "hkd",
            "hnl",
            "htg",
            "huf",
            "idr",
            "ils",
            "inr",
            "irr",
            "jmd",
            "kes",
            "kgs",
            "khr",
            "kpw",
            "kyd",
            "kzt",
            "lak",
            "lbp",
            "lkr",
            "lrd",
            "lsl",
            "mad",
            "mdl",
            "mkd",
            "mmk",
            "mnt",
            "mop",
            "mru",
            "mur",
            "mvr",
            "mwk",
            "mxn",
            "myr",
            "mzn",
            "nad",
            "ngn",
            "nio",
            "nok",
            "npr",
            "nzd",
            "pab",
            "pen",
            "pgk",
            "php",
            "pkr",
            "pln",
            "qar",
            "ron",
            "rsd",
            "rub",
            "sar",
            "sbd",
            "scr",
            "sdg",
            "sek",
            "sgd",
            "shp",
            "sle",
            "sos",
            "srd",
            "ssp",
            "stn",
            "svc",
            "syp",
            "szl",
            "thb",
            "tjs",
            "tmt",
            "top",
            "try",
            "ttd",
            "twd",
            "tzs",
            "uah",
            "usd",
            "uyu",
            "uzs",
            "ves",
            "wst",
            "xcd",
            "yer",
            "zar",
            "zmw",
            "zwl",
        ],
        2,
    ),
    **dict.fromkeys(
        [
            "bif",
            "clp",
            "djf",
            "gnf",
            "isk",
            "jpy",
            "kmf",
            "krw",
            "pyg",
            "rwf",
            "ugx",
            "uyi",
            "vnd",
            "vuv",
            "xaf",
            "xof",
            "xpf",
        ],
        0,
    ),
    **dict.fromkeys(
        [
            "bhd",
            "iqd",
            "jod",
            "kwd",
            "lyd",
            "omr",
            "tnd",
        ],
        3,
    ),
    "clf": 4,
    "uyw": 4,
}

# Stripe's documented ceiling: amounts fit in eight digits of the smallest unit.
MAX_AMOUNT = 99_999_999


class CurrencyError(ValueError):
    pass


def normalize_currency(code: str) -> str:
    c = code.strip().lower()
    if c not in CURRENCY_EXPONENTS:
        raise CurrencyError(code)
    return c


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("Money.amount must be an int of minor units")
        if self.currency not in CURRENCY_EXPONENTS:
            raise CurrencyError(self.currency)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyError(f"{self.currency} != {other.currency}")
