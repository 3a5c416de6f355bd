"""Masking of volatile tokens in log lines (numbers, hex ids, IPs, timestamps, paths).

Two log lines that differ only in a timestamp, an address, an IP or a counter say the same
thing; masking those tokens lets their embeddings coincide, so a detector learns the
message and not the numbers. Each kind is a switch; the replacement is a fixed placeholder
word so that the model still sees that something stood there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Order matters: timestamps and IPs contain numbers, hex words may be all digits.
_TIMESTAMP = re.compile(
    r"\b\d{4}[-./]\d{2}[-./]\d{2}(?:[-T ]\d{2}[.:]\d{2}[.:]\d{2}(?:[.,]\d+)?)?\b"
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"
)
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b")
_HEX = re.compile(
    r"\b0[xX][0-9a-fA-F]+\b"  # 0x1b85f080
    r"|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}\b"  # 02f7a18c, ids
    r"|\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5,}\b"  # MAC-style FF:F2:9F:16:C4:C2:...
)
_PATH = re.compile(r"(?<![\w<>])(?:[\w.\-]+)?(?:/[\w.\-]*){2,}")  # /p/gb1/run/x.rts, ./a/b
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])|(?<=[._:=(#])\d+\b|\b\d+(?=[a-zA-Z]\b)")


@dataclass(frozen=True)
class LogMask:
    """Which volatile tokens to replace, and by what.

    Calling the mask on a line returns the masked line, e.g. with the defaults
    "CE sym 2, at 0x1b85f080, mask 0x02" -> "CE sym <num>, at <hex>, mask <hex>".
    """

    timestamps: bool = True
    ips: bool = True
    hex_ids: bool = True
    numbers: bool = True
    paths: bool = True
    placeholder: str = "<{kind}>"

    def __call__(self, line: str) -> str:
        if self.paths:
            line = _PATH.sub(self.placeholder.format(kind="path"), line)
        if self.timestamps:
            line = _TIMESTAMP.sub(self.placeholder.format(kind="time"), line)
        if self.ips:
            line = _IP.sub(self.placeholder.format(kind="ip"), line)
        if self.hex_ids:
            line = _HEX.sub(self.placeholder.format(kind="hex"), line)
        if self.numbers:
            line = _NUMBER.sub(self.placeholder.format(kind="num"), line)
        return line

    def apply(self, lines: list[str]) -> list[str]:
        return [self(line) for line in lines]
