"""CLI task commands in-process on tiny files: each round trip checks the answer, not a shape."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from embengine import cli
from embengine.engine import Engine

DOCS = {
    "cat": "The cat sat on the mat and purred.",
    "market": "Stock markets fell sharply after the bank raised interest rates.",
    "bread": "How to bake sourdough bread at home with a starter.",
    "football": "The striker scored twice in the second half of the match.",
    "rain": "Heavy rain and strong winds are expected over the weekend.",
}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def index_file(tmp_path: Path, cli_engine: Engine) -> Path:
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": k, "body": t} for k, t in DOCS.items()])
    out = tmp_path / "docs.idx"
    argv = ["index", "build", str(docs), "-o", str(out), "--text-field", "body"]
    assert cli.main([*argv, "--id-field", "id", "--lexical", "-q"]) == cli.EXIT_OK
    return out


def test_search_finds_the_right_neighbour_in_every_mode(
    tmp_path: Path, index_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = ["a kitten resting on a rug", "baking a loaf of sourdough"]
    assert cli.main(["search", str(index_file), *queries, "-k", "2", "-q"]) == cli.EXIT_OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["query_id"], r["rank"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [r["id"] for r in rows if r["rank"] == 1] == ["cat", "bread"]
    assert rows[0]["score"] > rows[1]["score"]

    queries_file = write_jsonl(
        tmp_path / "q.jsonl", [{"qid": "q1", "text": "sourdough"}, {"qid": "q2", "text": "rain"}]
    )
    out = tmp_path / "hits.tsv"
    for mode in ("lexical", "hybrid"):
        argv = ["search", str(index_file), "--queries-file", str(queries_file), "--id-field"]
        argv += ["qid", "--mode", mode, "-k", "3", "-o", str(out), "-q"]
        assert cli.main(argv) == cli.EXIT_OK
        with out.open(encoding="utf-8", newline="") as f:
            hits = list(csv.DictReader(f, delimiter="\t"))
        top = {h["query_id"]: h["id"] for h in hits if h["rank"] == "1"}
        assert top == {"q1": "bread", "q2": "rain"}, mode
        if mode == "lexical":  # BM25 returns only documents sharing a word with the query
            assert len(hits) == 2


def test_index_build_kinds_and_positions_as_ids(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "docs.txt"
    lines.write_text("\n".join(DOCS.values()) + "\n", encoding="utf-8")
    out = tmp_path / "hnsw.idx"
    assert cli.main(["index", "build", str(lines), "-o", str(out), "--kind", "hnsw"]) == 0
    assert "indexed 5 records (hnsw)" in capsys.readouterr().err
    assert cli.main(["search", str(out), "the striker scored a goal", "-k", "1"]) == 0
    (hit,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hit["id"] == list(DOCS).index("football")  # ids are line positions


def test_search_errors_name_the_problem(
    tmp_path: Path, index_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["search", str(index_file), "-q"]) == cli.EXIT_FAILED
    assert "give query texts or --queries-file" in capsys.readouterr().err
    assert cli.main(["search", str(tmp_path / "nope.idx"), "x", "-q"]) == cli.EXIT_FAILED
    assert "nope.idx" in capsys.readouterr().err
    bad = tmp_path / "q.txt"
    bad.write_text("rain\n\nbread\n", encoding="utf-8")
    argv = ["search", str(index_file), "--queries-file", str(bad), "-k", "1", "-q"]
    assert cli.main(argv) == cli.EXIT_FAILED
    assert f"{bad}:2: empty line" in capsys.readouterr().err
    assert cli.main([*argv, "--on-error", "skip"]) == cli.EXIT_SKIPPED
    captured = capsys.readouterr()
    assert [json.loads(line)["id"] for line in captured.out.splitlines()] == ["rain", "bread"]
    assert f"{bad}:2: empty line" in captured.err


def test_classify_labels_records_from_examples(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = tmp_path / "examples.csv"
    examples.write_text(
        "label,text\n"
        'positive,I loved this film\npositive,"What a wonderful, moving story"\n'
        "negative,This was a terrible waste of time\nnegative,I hated every minute of it\n",
        encoding="utf-8",
    )
    inputs = write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"rid": "r1", "text": "an absolutely wonderful film, I loved it"},
            {"rid": "r2", "text": "boring and awful, a waste of an evening"},
        ],
    )
    out = tmp_path / "pred.csv"
    argv = ["classify", str(inputs), "--examples", str(examples), "--id-field", "rid"]
    assert cli.main([*argv, "-o", str(out), "-q"]) == cli.EXIT_OK
    with out.open(encoding="utf-8", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert [(p["id"], p["label"]) for p in predictions] == [("r1", "positive"), ("r2", "negative")]
    assert all(0.5 < float(p["confidence"]) <= 1.0 for p in predictions)

    examples.write_text("label,text\npositive,good\n,bad\n", encoding="utf-8")
    assert cli.main([*argv, "-q"]) == cli.EXIT_FAILED
    assert f"{examples}:3: field 'label' is empty" in capsys.readouterr().err


def test_anomaly_flags_the_odd_line_with_its_place(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    normal = tmp_path / "normal.log"
    normal.write_text(
        "".join(f"INFO user {i} logged in from 10.0.0.{i}\n" for i in range(40)), encoding="utf-8"
    )
    stream = tmp_path / "stream.log"
    lines = [f"INFO user {i} logged in from 10.0.1.{i}" for i in range(10)]
    lines.insert(6, "KERNEL PANIC: fatal machine check exception on cpu 3")
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["anomaly", str(stream), "--normal", str(normal), "--quantile", "0.9", "--window", "50"]

    assert cli.main(argv) == cli.EXIT_OK
    captured = capsys.readouterr()
    (flagged,) = [json.loads(line) for line in captured.out.splitlines()]
    assert flagged["where"] == f"{stream}:7"
    assert flagged["id"] == 6
    assert flagged["text"].startswith("KERNEL PANIC")
    assert flagged["anomalous"] is True
    assert flagged["score"] > flagged["threshold"]
    assert "flagged 1 lines" in captured.err

    out = tmp_path / "all.jsonl"
    assert cli.main([*argv, "--all", "-o", str(out), "-q"]) == cli.EXIT_OK
    rows = jsonl(out)
    assert [r["text"] for r in rows] == lines
    assert [r["anomalous"] for r in rows] == [i == 6 for i in range(len(lines))]


def test_dedup_clusters_a_planted_duplicate(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"id": k, "text": t} for k, t in DOCS.items()]
    records.insert(3, {"id": "cat2", "text": "The cat sat on the mat, and it purred."})
    inputs = write_jsonl(tmp_path / "records.jsonl", records)
    out, pairs = tmp_path / "clusters.csv", tmp_path / "pairs.jsonl"
    argv = ["dedup", str(inputs), "--id-field", "id", "--threshold", "0.85", "--confirm"]
    assert cli.main([*argv, "-o", str(out), "--pairs", str(pairs)]) == cli.EXIT_OK
    assert "6 records: 5 kept, 1 duplicates" in capsys.readouterr().err
    with out.open(encoding="utf-8", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert list(rows) == [r["id"] for r in records]
    assert rows["cat2"]["cluster"] == "cat"
    assert rows["cat2"]["is_representative"] == "False"
    for other in DOCS:  # the unrelated records each stay alone, as their own representative
        assert rows[other]["cluster"] == other
        assert rows[other]["is_representative"] == "True"
    (pair,) = jsonl(pairs)
    assert (pair["id_a"], pair["id_b"]) == ("cat", "cat2")
    assert pair["score"] >= 0.85


def test_recommend_similar_and_for_a_history(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    items = {
        **DOCS,
        "kitten": "A kitten curled up asleep on the rug, purring.",
        "goal": "A late goal won the football match for the home side.",
    }
    inputs = write_jsonl(tmp_path / "items.jsonl", [{"id": k, "text": t} for k, t in items.items()])
    argv = ["recommend", str(inputs), "--id-field", "id", "-q"]
    assert cli.main([*argv, "--similar", "cat", "-k", "3"]) == cli.EXIT_OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["id"] == "kitten"
    assert "cat" not in [r["id"] for r in rows]
    assert rows[0]["score"] > rows[1]["score"] >= rows[2]["score"]

    assert cli.main([*argv, "--history", "cat,football", "-k", "7"]) == cli.EXIT_OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ranked = [r["id"] for r in rows]
    assert sorted(ranked) == sorted(set(items) - {"cat", "football"})  # seen items left out
    assert set(ranked[:2]) == {"kitten", "goal"}

    assert cli.main([*argv, "--similar", "nope"]) == cli.EXIT_FAILED
    assert "unknown item ids ['nope']" in capsys.readouterr().err
