"""The documentation runs as written: every ```python block of README.md and docs/*.md, and
every `embengine` command line of their shell blocks.

Marker convention. A block that cannot run here by its nature (it needs a CUDA GPU, a Ray
cluster, a running server, a model directory you bring) carries, on the line right before
its opening fence, an HTML comment giving the reason:

    <!-- not run: needs a CUDA GPU -->

The reason is required (an empty one fails), and a marker must sit right above a block.
A marked block is still checked as far as it can be here: python must compile, and each
`embengine` command line must parse with the CLI's own parser. Everything else runs: a
failing block is fixed in the doc (or the code), never marked.

Shown values. An expression line ending in `# -> VALUE` (or `# -> VALUE: words`), VALUE a
Python literal, must give VALUE (a float to the digits shown, numpy arrays as lists): the
outputs a doc shows are checked, not just its code.

How blocks run. A file's python blocks run in order in one namespace (later blocks build on
earlier ones), in a temporary working directory with HOME pointing into it, so nothing is
written into the repository or the user's home. Shell lines starting with `embengine` run
through `embengine.cli.main` in-process with the session's engine (a model load per line
would cost seconds each) and must exit 0, or the code their comment names ("exit 3");
`embengine info` runs as a real subprocess, which checks the entry point itself. The input
files the commands name (docs.jsonl, tickets.csv...) are written by this test from INPUTS:
small stand-ins for the reader's own files. Shell blocks without an `embengine` command
(make, pip, curl) are documentation of other tools and are not run.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import embengine
from embengine import cli
from embengine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ("python", "py")
SHELL = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")
EXPECTED_EXIT = re.compile(r"\bexit (\d+)\b")
SHOWN = re.compile(r"  # -> (.+?)(?::\s.*)?$")  # an expression's value, as the doc shows it


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the marker's reason, None when the block runs

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[tuple[list[str], int, int]]:
        """(argv after `embengine`, expected exit code, line) of each `embengine` command."""
        found = []
        lines = self.code.splitlines()
        i = 0
        while i < len(lines):
            start, text = i, lines[i]
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            words = shlex.split(text, comments=True)
            if words[:1] == ["embengine"]:
                comment = text.partition(" #")[2]
                expected = EXPECTED_EXIT.search(comment)
                found.append((words[1:], int(expected.group(1)) if expected else 0, start))
        return found


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with their not-run markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            raise AssertionError(f"{path.name}:{i + 1}: a not-run marker must sit above a block")
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{path.name}:{i + 1}: unclosed code block"
        previous = MARKER.match(lines[i - 1]) if i else None
        reason = previous.group("reason").strip() if previous else None
        code = "\n".join(lines[i + 1 : end])
        found.append(Block(path, i + 1, opening.group(1).lower(), code, reason))
        i = end + 1
    return found


def runnable(block: Block) -> bool:
    """Python blocks, and shell blocks holding an `embengine` command."""
    return block.lang in PYTHON or (block.lang in SHELL and bool(block.commands()))


# Small stand-ins for the files the reader brings to the CLI examples.
INPUTS: dict[str, str] = {
    "docs.jsonl": "".join(
        json.dumps({"doc_id": f"d{n}", "body": text}) + "\n"
        for n, text in enumerate(
            [
                "How do I reset my password?",
                "The cat sat on the mat.",
                "Refunds take five business days.",
            ]
        )
    ),
    "a.csv": "text\nThe cat sat on the mat.\nStock markets fell sharply.\n",
    "b.csv": 'text\nHeavy rain is expected this weekend.\n""\n',  # row 3: empty text, skipped
    "lines.txt": "first line of text\nsecond line of text\n",
    "tickets.csv": "text\nI was billed twice this month\nThe app will not let me log in\n",
    "labelled.csv": "label,text\n"
    "billing,Why is there an extra fee on my invoice?\n"
    "billing,I was charged twice for my subscription\n"
    "login,I cannot sign in to my account\n"
    "login,The password reset link does not work\n",
    "last_week.log": "".join(
        f"2026-03-0{day} 10:00:{n:02d} web-{n % 3} GET /api/orders/{1000 + n} 200 in {n} ms\n"
        f"2026-03-0{day} 10:01:{n:02d} worker-{n % 4} job {500 + n} finished in 1.{n} s\n"
        for day in (1, 2)
        for n in range(10)
    ),
    "today.log": "2026-03-09 09:00:01 web-1 GET /api/orders/2001 200 in 12 ms\n"
    "2026-03-09 09:00:02 db-1 ERROR could not write block 88213: No space left on device\n",
    "products.csv": "sku,text\n"
    "A1,Sony KDL-40V4100 BRAVIA 40 inch LCD TV\n"
    "A2,Sony Bravia KDL40V4100 40in LCD TV\n"
    "B1,Canon PowerShot SD1100 IS camera\n",
    "items.jsonl": "".join(
        json.dumps({"item_id": key, "text": text}) + "\n"
        for key, text in {
            "a17": "Alien (1979). Horror, Sci-Fi",
            "b42": "Aliens (1986). Action, Sci-Fi",
            "c03": "Toy Story (1995). Animation",
            "d08": "Predator (1987). Action, Sci-Fi",
        }.items()
    ),
}


@pytest.fixture
def doc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the example input files, with HOME inside it."""
    for name, text in INPUTS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_command(block: Block, argv: list[str], expected: int, line: int) -> None:
    where = f"{block.path.relative_to(ROOT)}:{block.line + 1 + line}"
    if argv[:1] == ["info"]:  # the real entry point, in a fresh process
        env = {**os.environ, "PYTHONPATH": str(Path(embengine.__file__).parent.parent)}
        done = subprocess.run(
            [sys.executable, "-m", "embengine.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == expected, f"{where}: exit {done.returncode}\n{done.stderr}"
        assert json.loads(done.stdout)["default_model"]["dim"] == 384, where
        return
    code = cli.main(argv)
    assert code == expected, f"{where}: `embengine {shlex.join(argv)}` exited {code}"


def run_python(block: Block, namespace: dict[str, object]) -> None:
    """Run a block statement by statement; an expression whose line ends in `# -> VALUE`
    (optionally `# -> VALUE: words`) must equal VALUE, a Python literal (floats to the
    digits shown, arrays as lists)."""
    lines = block.path.read_text(encoding="utf-8").splitlines()
    # padded so that tracebacks give the markdown file's own line numbers
    tree = ast.parse("\n" * block.line + block.code, str(block.path))
    for node in tree.body:
        shown = SHOWN.search(lines[(node.end_lineno or node.lineno) - 1])
        if not (shown and isinstance(node, ast.Expr)):
            exec(compile(ast.Module([node], []), str(block.path), "exec"), namespace)
            continue
        value = eval(compile(ast.Expression(node.value), str(block.path), "eval"), namespace)
        expected = ast.literal_eval(shown.group(1))
        where = f"{block.path.relative_to(ROOT)}:{node.lineno}"
        assert same(plain(value), expected), f"{where}: shows {expected!r}, gives {value!r}"


def plain(value: object) -> object:
    """numpy arrays and scalars as Python lists and numbers; tuples element by element."""
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value.tolist() if hasattr(value, "tolist") else value


def same(value: object, expected: object) -> bool:
    """Equal, with a float in the doc standing for the value rounded to its digits."""
    if isinstance(expected, float) and isinstance(value, float):
        digits = len(repr(expected).partition(".")[2])
        return round(value, digits) == expected
    if isinstance(expected, (list, tuple)) and isinstance(value, (list, tuple)):
        return len(value) == len(expected) and all(map(same, value, expected))
    return value == expected


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_runs_as_written(
    path: Path, doc_dir: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {"__name__": "__doc__"}
    for block in blocks(path):
        if block.not_run is not None or not runnable(block):
            continue
        if block.lang in PYTHON:
            run_python(block, namespace)
        else:
            for argv, expected, line in block.commands():
                run_command(block, argv, expected, line)


def test_marked_blocks_give_a_reason_and_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    """Lists what runs and what is marked; a marker needs a reason, and a marked block must
    still compile (python) or parse (its `embengine` command lines)."""
    all_blocks = [block for path in DOC_FILES for block in blocks(path)]
    marked = [b for b in all_blocks if b.not_run is not None]
    parser = cli.build_parser()
    for block in marked:
        if block.lang in PYTHON:
            compile("\n" * block.line + block.code, str(block.path), "exec")
        for argv, _, line in block.commands() if block.lang in SHELL else []:
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(
                    f"{block.where}+{line + 1}: `embengine {shlex.join(argv)}` does not parse"
                )
    ran = [b for b in all_blocks if b.not_run is None and runnable(b)]
    commands = sum(len(b.commands()) for b in ran if b.lang in SHELL)
    with capsys.disabled():
        print(
            f"\ndocs: {sum(b.lang in PYTHON for b in ran)} python blocks and {commands} "
            f"embengine commands run; {len(marked)} blocks marked not run:"
        )
        for block in marked:
            print(f"  {block.where}: {block.not_run}")
    assert all(block.not_run for block in marked), [b.where for b in marked if not b.not_run]
    assert ran, "no documentation block runs"


def test_blocks_read_markers_commands_and_exit_codes(tmp_path: Path) -> None:
    """The parser itself: a marker's reason, continuation lines, the expected exit code, and a
    marker that sits above no block refused."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- not run: needs a CUDA GPU -->\n```python\nx = 1\n```\n\n"
        "```bash\nmake test\nembengine embed a.csv \\\n    -o out.emb  # bad rows: exit 3\n```\n",
        encoding="utf-8",
    )
    python, shell = blocks(doc)
    assert (python.lang, python.not_run, python.code) == ("python", "needs a CUDA GPU", "x = 1")
    assert shell.not_run is None
    assert shell.commands() == [(["embed", "a.csv", "-o", "out.emb"], 3, 1)]
    assert SHOWN.search("x  # -> [0, 0, 2]: labels").group(1) == "[0, 0, 2]"
    assert SHOWN.search("x  # -> 0.56").group(1) == "0.56"
    assert same(0.5559, 0.56)
    assert not same(0.5559, 0.55)
    assert same(plain((np.array([1, 2]), None)), ([1, 2], None))
    doc.write_text("<!-- not run: stray -->\n\ntext\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="must sit above a block"):
        blocks(doc)
