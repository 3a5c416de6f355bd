"""Loaders for the classification and matching evaluation sets (../shared/data)."""

from __future__ import annotations

import csv
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def intent_split(data: Path, name: str, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one split; banking77 from csv, the others from seq.in/label."""
    if name == "banking77":
        with (data / "banking77" / f"{split}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["category"] for r in rows]
    folder = data / name / split
    return read_lines(folder / "seq.in"), read_lines(folder / "label")


def tables(data: Path, name: str) -> tuple[list[dict], list[dict], set[tuple[int, int]]]:
    """(left rows, right rows, gold (left row, right row) pairs) of a matching set."""
    if name == "abt_buy":
        folder, files, enc, delim = (
            data / "abt_buy",
            ("Abt.csv", "Buy.csv"),
            ("latin-1", "utf-8"),
            ",",
        )
        mapping, keys = "abt_buy_perfectMapping.csv", ("idAbt", "idBuy")
    elif name == "dblp_acm":
        folder, files, enc, delim = (
            data / "dblp_acm",
            ("DBLP2.csv", "ACM.csv"),
            ("latin-1", "utf-8"),
            ",",
        )
        mapping, keys = "DBLP-ACM_perfectMapping.csv", ("idDBLP", "idACM")
    elif name == "walmart_amazon":
        folder, files, enc, delim = (
            data / "walmart_amazon",
            ("walmart.csv", "amazon.csv"),
            ("ascii", "ascii"),
            "|",
        )
        mapping, keys = "gt.csv", ("D1", "D2")
    else:
        raise ValueError(f"unknown matching set {name!r}")
    sides = []
    for file, encoding in zip(files, enc, strict=True):
        with open(folder / file, encoding=encoding, newline="") as f:
            sides.append(list(csv.DictReader(f, delimiter=delim)))
    with open(folder / mapping, encoding="utf-8", newline="") as f:
        gold_ids = {
            (r[keys[0]].strip(), r[keys[1]].strip()) for r in csv.DictReader(f, delimiter=delim)
        }
    left_row = {r["id"].strip(): n for n, r in enumerate(sides[0])}
    right_row = {r["id"].strip(): n for n, r in enumerate(sides[1])}
    gold = {(left_row[a], right_row[b]) for a, b in gold_ids}
    return sides[0], sides[1], gold


# The text of each record (per table): the fields the defaults were chosen with.
MATCH_FIELDS = {
    "abt_buy": (["name"], ["name", "manufacturer"]),
    "dblp_acm": (["title", "authors", "year"], ["title", "authors", "year"]),
    "walmart_amazon": (["title", "brand", "modelno"], ["title", "brand", "modelno"]),
}
INTENT_SETS = {
    "banking77": ("train", "test"),
    "banking77_oos": ("train", "valid", "test", "id-oos/train", "id-oos/valid", "id-oos/test"),
    "hwu64": ("train", "valid", "test"),
}
