"""Embed every text the classification and matching evals use, into the shared cache."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets_cm import DEFAULT_DATA, INTENT_SETS, MATCH_FIELDS, intent_split, tables
from embed_cache import cached_embed

from embengine import Engine
from embengine.records import record_texts

engine = Engine()
only = sys.argv[1:]
jobs = []
for name in ("banking77_oos", "hwu64", "banking77"):
    for split in INTENT_SETS[name]:
        jobs.append(
            (f"{name}-{split.replace('/', '-')}", intent_split(DEFAULT_DATA, name, split)[0])
        )
for name, (lf, rf) in MATCH_FIELDS.items():
    left, right, _ = tables(DEFAULT_DATA, name)
    jobs.append((f"{name}-left-{'_'.join(lf)}", record_texts(left, fields=lf)))
    jobs.append((f"{name}-right-{'_'.join(rf)}", record_texts(right, fields=rf)))
for key, texts in jobs:
    if only and not any(key.startswith(o) for o in only):
        continue
    started = time.time()
    cached_embed(engine, texts, key, progress=False)
    print(f"{key}: {len(texts)} texts in {time.time() - started:.0f} s", flush=True)
