"""Masking of volatile tokens in log lines: timestamps, ids, addresses, paths, numbers.

Two log lines that differ only in a timestamp, an address, a request id or a counter say
the same thing; masking those tokens lets their embeddings coincide, so a detector learns
the message and not the numbers (and distinct masked lines stay few, which makes
embedding a long log cheap). Each kind is a switch; the replacement is a fixed
placeholder word so that the model still sees that something stood there.

Measured on the six logs of benchmarks/eval_anomaly.py: distinct masked lines per log are
printed by that script; the kinds below were added for tokens that, left in place, made
every line distinct (LO2's base64 request ids, OpenStack's UUIDs and tenant ids, Hadoop's
``attempt_<cluster>_<app>_m_<task>_<try>`` ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Order matters: paths hold ids, IPs look like dotted dates, timestamps hold numbers, UUIDs
# hold hex.
# /p/gb1/run/x.rts, ./a/b, and Windows paths C:\Users\x\AppData\Local\Temp\y
_PATH = re.compile(
    r"(?<![\w<>])(?:[\w.\-]+)?(?:/[\w.\-]*){2,}|\b[A-Za-z]:\\[^\s:;,]*|(?:\\[\w.\-$]+){2,}"
)
_TIMESTAMP = re.compile(
    r"\b\d{2,4}[-./]\d{2}[-./]\d{2}(?:[-T _]\d{2}[.:]\d{2}[.:]\d{2}(?:[.,]\d+)?)?\b"
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"
)
# UUIDs and their cut-down forms (LO2's "5b415789-b881-4d06-99b1-533efacd").
_UUID = re.compile(r"\b[0-9a-fA-F]{4,}(?:-[0-9a-fA-F]{4,}){2,}\b")
# Host names ending in a common top-level domain (MININT-75DGDAM1.fareast.corp.microsoft.com).
_HOST = re.compile(
    r"\b[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\.(?:com|net|org|edu|gov|io|local|internal|lan)\b"
)
# Hadoop / YARN / Spark ids: appattempt_1445062781478_0012_000001, attempt_..._m_000003_1,
# container_..._01_000002, job_..., task_..., application_..., rdd_42_39, broadcast_31_piece0.
_PREFIXED_ID = re.compile(
    r"\b(?:appattempt|application|attempt|container|job|task|jvm|req|rdd|broadcast|blk)"
    r"[_-][0-9a-zA-Z]*\d[0-9a-zA-Z_-]*"
)
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b")
_HEX = re.compile(
    r"\b0[xX][0-9a-fA-F]+\b"  # 0x1b85f080
    r"|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}\b"  # 02f7a18c, ids
    r"|\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5,}\b"  # MAC-style FF:F2:9F:16:C4:C2:...
)
# Random tokens (base64 / url-safe request ids such as LO2's "iFUH1dhsSjKMVB6NqBuLvw"):
# 10+ characters of [A-Za-z0-9_-] with both cases and a digit, or 20+ with at least 30%
# upper case. CamelCase identifiers ("RetryUpToMaximumCountWithFixedSleep", 23% upper,
# no digit) stay; so do upper-case constants ("REFRESH_TOKEN_NOT_FOUND", "ERR12029").
_TOKEN_CANDIDATE = re.compile(
    r"(?<![\w<>-])(?=[\w-]*[a-z])(?=[\w-]*[A-Z])[A-Za-z0-9_-]{10,}(?![\w-])"
)


def _is_random_token(word: str) -> bool:
    upper = sum(c.isupper() for c in word)
    return any(c.isdigit() for c in word) or (len(word) >= 20 and upper >= 0.3 * len(word))


# Numbers, also glued to a unit ("559ms", "5.6KB") or after punctuation ("core.6711").
# Also trailing digits of a lower-case word ("bglio75", "slave07"); upper-case codes such as
# "ERR12029" stay, as they name the error.
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])|(?<=[._:=(#])\d+\b"
    r"|\b\d+(?:\.\d+)?(?=[a-zA-Z]{1,3}\b)|(?<=[a-z])\d{2,}\b"
)


@dataclass(frozen=True)
class LogMask:
    """Which volatile tokens to replace, and by what.

    Calling the mask on a line returns the masked line, e.g. with the defaults
    "CE sym 2, at 0x1b85f080, mask 0x02" -> "CE sym <num>, at <hex>, mask <hex>" and
    "for application appattempt_1445062781478_0012_000001" -> "for application <id>".
    """

    timestamps: bool = True
    ips: bool = True
    hex_ids: bool = True
    numbers: bool = True
    paths: bool = True
    uuids: bool = True
    hosts: bool = True  # host names with a common top-level domain
    ids: bool = True  # prefixed job/attempt/container/block ids
    tokens: bool = True  # random base64-like tokens (request ids)
    placeholder: str = "<{kind}>"

    def __call__(self, line: str) -> str:
        steps = (
            (self.paths, _PATH, "path"),
            (self.ips, _IP, "ip"),
            (self.timestamps, _TIMESTAMP, "time"),
            (self.uuids, _UUID, "uuid"),
            (self.hosts, _HOST, "host"),
            (self.ids, _PREFIXED_ID, "id"),
            (self.hex_ids, _HEX, "hex"),
        )
        for enabled, pattern, kind in steps:
            if enabled:
                line = pattern.sub(self.placeholder.format(kind=kind), line)
        if self.tokens:
            token = self.placeholder.format(kind="token")
            line = _TOKEN_CANDIDATE.sub(
                lambda m: token if _is_random_token(m.group()) else m.group(), line
            )
        if self.numbers:
            line = _NUMBER.sub(self.placeholder.format(kind="num"), line)
        return line

    def apply(self, lines: list[str]) -> list[str]:
        return [self(line) for line in lines]
