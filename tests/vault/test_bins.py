"""BIN table lookup (paywarden.vault.bins) against the packaged binlist data."""

from __future__ import annotations

import csv
import random
from importlib import resources
from pathlib import Path

import pytest

from paywarden.core.secrets import CardNumber
from paywarden.vault.bins import UNKNOWN_BIN, BinInfo, BinTable
from paywarden.vault.cards import detect_brand

HEADER = (
    "iin_start,iin_end,number_length,number_luhn,scheme,brand,type,prepaid,country,"
    "bank_name,bank_logo,bank_url,bank_phone,bank_city"
)
FUNDING = {"credit", "debit", "prepaid", "unknown"}


def _pan(prefix: str, length: int = 16) -> CardNumber:
    return CardNumber(prefix.ljust(length, "0"))


def _rows() -> list[dict[str, str]]:
    text = resources.files("paywarden.vault").joinpath("data", "bin-ranges.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@pytest.fixture(scope="module")
def table() -> BinTable:
    return BinTable.load_default()


def _csv(*lines: str) -> BinTable:
    return BinTable.from_csv("\n".join([HEADER, *lines]) + "\n")


# --- The packaged table ----------------------------------------------------


def test_packaged_csv_is_package_data() -> None:
    data = resources.files("paywarden.vault").joinpath("data", "bin-ranges.csv")
    assert data.is_file()
    assert data.read_text("utf-8").splitlines()[0] == HEADER


def test_default_table_loads_every_row_once(table: BinTable) -> None:
    assert len(table) == len(_rows()) == 5805
    assert table.skipped == 0
    assert BinTable.load_default() is table


@pytest.mark.parametrize(
    ("prefix", "length", "expected"),
    [
        ("341142", 15, BinInfo("amex", "credit", "US", "AMERICAN EXPRESS")),
        ("360218", 14, BinInfo("diners", "credit", "EC", "DINERS CLUB DEL ECUADOR S.A.")),
        ("453748", 16, BinInfo("visa", "prepaid", "CA", "SCOTIABANK")),  # prepaid=y
        ("402650", 16, BinInfo("visa", "credit", "US", "HALLIBURTON")),  # trailing space
        ("601110", 16, BinInfo("discover", "credit", "US", None)),  # empty bank_name
        ("601129", 16, BinInfo("discover", "credit", "US", "DISCOVER")),  # range 601129-601130
        ("601130", 16, BinInfo("discover", "credit", "US", "DISCOVER")),
        ("622202", 16, BinInfo("unionpay", "debit", "CN", "ICBC")),
        ("45710040", 16, BinInfo("visa", "debit", "DK", "Nordea")),  # range 45710040-45710045
        ("45710045", 16, BinInfo("visa", "debit", "DK", "Nordea")),
    ],
)
def test_known_rows(table: BinTable, prefix: str, length: int, expected: BinInfo) -> None:
    assert table.lookup(_pan(prefix, length)) == expected


def test_longest_prefix_wins(table: BinTable) -> None:
    # 457105 is Sparekassen Sjælland; the 8-digit 45710533 inside it is another bank.
    assert table.lookup(_pan("45710500")).issuer == "Sparekassen Sjælland"
    assert table.lookup(_pan("45710533")).issuer == "Dragsholm Sparekasse"
    assert table.lookup(_pan("45710536")).issuer == "Danske Bank"

    # No 8-digit row for 45710599: the 6-digit row answers.
    assert table.lookup(_pan("45710599")).issuer == "Sparekassen Sjælland"


@pytest.mark.parametrize("prefix", ["999999", "000000", "601131", "12345678"])
def test_unknown_bin_is_unknown_not_an_error(table: BinTable, prefix: str) -> None:
    assert table.lookup(_pan(prefix)) == UNKNOWN_BIN == BinInfo(None, "unknown", None, None)


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",
        "4000056655665556",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3056930009020004",
        "3566002020360505",
        "6200000000000005",
        "12345678",
    ],
)
def test_stripe_test_cards_are_sensible(table: BinTable, number: str) -> None:
    info = table.lookup(CardNumber(number))
    assert info.funding in FUNDING
    assert info.brand in (None, detect_brand(CardNumber(number)))


def _reference(rows: list[dict[str, str]], digits: str) -> dict[str, str] | None:
    """A naive scan: longest prefix, then narrowest range, then first row."""
    best: tuple[int, int, int] | None = None
    found = None
    for i, row in enumerate(rows):
        start, end = row["iin_start"], row["iin_end"] or row["iin_start"]
        if start <= digits[: len(start)] <= end:
            rank = (-len(start), int(end) - int(start), i)
            if best is None or rank < best:
                best, found = rank, row
    return found


def test_lookup_agrees_with_a_naive_scan(table: BinTable) -> None:
    rows = _rows()
    rng = random.Random(7)
    bounds = {r["iin_start"] for r in rows} | {r["iin_end"] for r in rows if r["iin_end"]}
    near = {str(int(b) + d).zfill(len(b)) for b in bounds for d in (-1, 1)}
    six = {r["iin_start"] for r in rows if len(r["iin_start"]) == 6}
    nested = {
        r["iin_start"] for r in rows if r["iin_start"][:6] in six and len(r["iin_start"]) == 8
    }
    assert len(nested) > 100  # the longest-prefix rule is exercised for real
    probes = set(rng.sample(sorted(bounds), 400)) | set(rng.sample(sorted(near), 400))
    probes |= {b[:6] + "99" for b in rng.sample(sorted(bounds), 100)} | nested
    probes |= {rng.choice("3456") + str(rng.randrange(10**7)).zfill(7) for _ in range(200)}
    for probe in sorted(probes):
        info = table.lookup(_pan(probe[:8]))
        row = _reference(rows, probe[:8].ljust(8, "0"))
        if row is None:
            assert info == UNKNOWN_BIN, probe
            continue
        assert info == BinInfo(
            brand=row["scheme"],
            funding="prepaid" if row["prepaid"] == "y" else row["type"],
            country=row["country"],
            issuer=row["bank_name"].strip() or None,
        ), probe


# --- Quirks an updated file may bring ---------------------------------------


def test_duplicate_rows_first_wins() -> None:
    table = _csv(
        "411111,,,,visa,,credit,,US,FIRST BANK,,,,",
        "411111,,,,visa,,debit,,GB,SECOND BANK,,,,",
    )
    assert table.lookup(_pan("411111")) == BinInfo("visa", "credit", "US", "FIRST BANK")
    assert len(table) == 1


def test_overlapping_ranges_narrower_wins_wider_keeps_the_rest() -> None:
    table = _csv(
        "41000000,41000099,,,visa,,credit,,US,WIDE,,,,",
        "41000010,41000019,,,visa,,debit,,US,NARROW,,,,",
        "41000015,41000030,,,visa,,debit,,US,MIDDLE,,,,",
    )
    issuer = {p: table.lookup(_pan(str(41000000 + p))).issuer for p in range(101)}
    assert issuer[0] == issuer[9] == issuer[31] == issuer[99] == "WIDE"
    assert issuer[10] == issuer[15] == issuer[19] == "NARROW"
    assert issuer[20] == issuer[30] == "MIDDLE"
    assert issuer[100] is None


def test_prefixes_of_several_lengths() -> None:
    table = _csv(
        "4,,,,visa,,,,,,,,,",
        "4111,,,,visa,,debit,,US,FOUR,,,,",
        "411111,,,,visa,,credit,,US,SIX,,,,",
        "41111111,,,,visa,,prepaid,,US,EIGHT,,,,",
    )
    assert table.lookup(_pan("41111111")).issuer == "EIGHT"
    assert table.lookup(_pan("41111122")).issuer == "SIX"
    assert table.lookup(_pan("41112222")).issuer == "FOUR"
    assert table.lookup(_pan("42")) == BinInfo("visa", "unknown", None, None)
    assert table.lookup(_pan("5")) == UNKNOWN_BIN


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("visa,,credit,,us,X", BinInfo("visa", "credit", "US", "X")),
        ("visa,,credit,, dk ,X", BinInfo("visa", "credit", "DK", "X")),
        ("visa,,credit,,UK,X", BinInfo("visa", "credit", "GB", "X")),
        ("visa,,credit,,USA,X", BinInfo("visa", "credit", None, "X")),
        ("visa,,credit,,12,X", BinInfo("visa", "credit", None, "X")),
        ("visa,,CREDIT ,,,  ", BinInfo("visa", "credit", None, None)),
        ("visa,,debit,Y,,X", BinInfo("visa", "prepaid", None, "X")),
        ("visa,,debit,yes,,X", BinInfo("visa", "prepaid", None, "X")),
        ("visa,,debit,n,,X", BinInfo("visa", "debit", None, "X")),
        ("visa,,charge,,,X", BinInfo("visa", "unknown", None, "X")),
        ("visa,,,,,X", BinInfo("visa", "unknown", None, "X")),
        ("American Express,,credit,,,X", BinInfo("amex", "credit", None, "X")),
        ("MasterCard,,debit,,,X", BinInfo("mastercard", "debit", None, "X")),
        (",Visa,debit,,,X", BinInfo("visa", "debit", None, "X")),
        ("maestro,,debit,,,X", BinInfo(None, "debit", None, "X")),
        (",,,,,", UNKNOWN_BIN),
    ],
)
def test_field_normalization(fields: str, expected: BinInfo) -> None:
    table = _csv(f"411111,,,,{fields},,,,")
    assert table.lookup(_pan("411111")) == expected


@pytest.mark.parametrize(
    "row",
    [
        "abc,,,,visa,,credit,,US,X,,,,",
        ",,,,visa,,credit,,US,X,,,,",
        "123456789,,,,visa,,credit,,US,X,,,,",  # longer than an 8-digit IIN
        "411111,41111199,,,visa,,credit,,US,X,,,,",  # bounds of different lengths
        "411119,411111,,,visa,,credit,,US,X,,,,",  # runs backwards
        "４１１１１１,,,,visa,,credit,,US,X,,,,",  # fullwidth digits  # noqa: RUF001
    ],
)
def test_malformed_rows_are_skipped_and_counted(row: str) -> None:
    table = _csv(row, "422222,,,,visa,,debit,,GB,GOOD,,,,")
    assert table.skipped == 1
    assert len(table) == 1
    assert table.lookup(_pan("422222")).issuer == "GOOD"
    assert table.lookup(_pan("411111")) == UNKNOWN_BIN


def test_from_path_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text("\ufeff" + HEADER + "\n411111,,,,visa,,credit,,US,X,,,,\n", encoding="utf-8")
    assert BinTable.from_csv(path).lookup(_pan("411111")).country == "US"
    text = path.read_text(encoding="utf-8")
    assert BinTable.from_csv(text).lookup(_pan("411111")).country == "US"


def test_missing_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="iin_start"):
        BinTable.from_csv("411111,,,,visa\n")
    with pytest.raises(ValueError, match="iin_start"):
        BinTable.from_csv("")


def test_empty_table_knows_nothing() -> None:
    table = BinTable.from_csv(HEADER + "\n")
    assert len(table) == 0
    assert table.lookup(CardNumber("4242424242424242")) == UNKNOWN_BIN
