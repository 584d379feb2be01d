"""A task accuracy: Text2SQL on the shipped set (``data/text2sql``), scored by executing SQL in SQLite.

Protocol: each prompt holds the CREATE statements of the tables the question uses, ``fewshot``
solved examples (question then SQL), then the question and the start of the answer, ``SELECT``.
The model continues greedily until a newline (or ``max_new_tokens``); the completion is ``SELECT``
plus the text before the newline, with a trailing ``;`` dropped.

- Execution accuracy (EX): predicted and gold SQL both run on a fresh in-memory copy of the
  database; they match when their rows are equal as multisets (as lists when the gold query has
  ORDER BY), numbers compared after rounding to 4 decimals. SQL that fails or runs past a step
  budget counts as wrong.
- Exact match (EM): the SQL strings are equal after lowercasing (outside string literals) and
  collapsing whitespace.

Both are proportions of the questions; their 95 % interval is the Wilson score interval of that
count (:func:`harness.measure.intervals.wilson`), and a difference to another precision's EX is a
paired bootstrap over the same questions (:func:`correctness` gives its units).

Torch is imported only by :func:`generate`.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from harness.base.paths import DATA_DIR
from harness.base.specbase import StrictModel

FOLDER = DATA_DIR / "text2sql"
STEP_BUDGET = 200_000  # SQLite VM instructions per query before it is cut off


class Text2SQLSettings(StrictModel):
    """The ``text2sql:`` part of the inference block."""

    items: int | None = Field(default=None, ge=1, description="Use the first N questions (default: all 50).")
    fewshot: int = Field(default=3, ge=0, le=3, description="Solved examples in each prompt.")
    batch_size: int = Field(default=8, ge=1, description="Prompts per generate call (left-padded).")
    max_new_tokens: int = Field(default=64, ge=4, description="Longest completion.")


class Item(BaseModel):
    id: str
    question: str
    sql: str
    tables: list[str]


class Generation(BaseModel):
    """One completion: the SQL read from it and how many tokens were generated for it."""

    id: str
    sql: str
    tokens: int


class Score(BaseModel):
    execution_accuracy: float
    exact_match: float
    correct: list[str] = Field(description="ids whose execution matched")
    exact: list[str] = Field(description="ids whose SQL matched exactly")
    failed_sql: int = Field(description="predictions that did not execute")
    questions: int = Field(description="questions scored")


def _read(name: str) -> list[Item]:
    return [Item.model_validate_json(line) for line in (FOLDER / name).read_text().splitlines() if line.strip()]


def items(limit: int | None = None) -> list[Item]:
    """The evaluation questions, in file order (the first ``limit`` of them).

    Raises ValueError if ``limit`` exceeds the shipped set.
    """
    shipped = _read("items.jsonl")
    if limit is not None and limit > len(shipped):
        raise ValueError(f"text2sql.items={limit} but the shipped set has {len(shipped)} questions")
    return shipped[:limit]


@lru_cache(maxsize=1)
def _ddl() -> dict[str, str]:
    conn = database()
    return {name: sql for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")}


def database() -> sqlite3.Connection:
    """A fresh in-memory database with the shipped schema and rows."""
    conn = sqlite3.connect(":memory:")
    conn.executescript((FOLDER / "schema.sql").read_text())
    return conn


def prompt(item: Item, fewshot: int) -> str:
    """The prompt for ``item``: schema, solved examples, question, and the answer's first word."""
    ddl = _ddl()
    parts = []
    for ex in _read("fewshot.jsonl")[:fewshot]:
        schema = "\n".join(ddl[t] + ";" for t in ex.tables)
        parts.append(f"{schema}\n-- Question: {ex.question}\n{ex.sql}\n")
    schema = "\n".join(ddl[t] + ";" for t in item.tables)
    parts.append(f"{schema}\n-- Question: {item.question}\nSELECT")
    return "\n".join(parts)


def _norm_value(v: Any) -> Any:
    return round(float(v), 4) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def execute(conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of ``sql`` (values normalized), or None if it fails or exceeds the step budget."""
    steps = [0]

    def budget() -> int:
        steps[0] += 1000
        return 1 if steps[0] > STEP_BUDGET else 0

    conn.set_progress_handler(budget, 1000)
    try:
        rows = conn.execute(sql).fetchall()
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
        return None
    finally:
        conn.set_progress_handler(None, 1000)
    return [tuple(_norm_value(v) for v in row) for row in rows]


def _same(gold: list[tuple], pred: list[tuple], ordered: bool) -> bool:
    return gold == pred if ordered else Counter(gold) == Counter(pred)


def _norm_sql(sql: str) -> str:
    """Lowercase outside string literals, collapse whitespace, drop a trailing semicolon."""
    parts = sql.split("'")
    text = "'".join(p if i % 2 else p.lower() for i, p in enumerate(parts))
    return " ".join(text.split()).rstrip(";").strip()


def score(questions: list[Item], predictions: list[Generation]) -> Score:
    """Execution accuracy and exact match of ``predictions`` (matched to ``questions`` by id)."""
    by_id = {g.id: g for g in predictions}
    conn = database()
    correct, exact, failed = [], [], 0
    for q in questions:
        pred = by_id[q.id].sql
        gold_rows = execute(conn, q.sql)
        if gold_rows is None:
            raise ValueError(f"text2sql item {q.id}: the gold SQL does not execute: {q.sql}")
        pred_rows = execute(conn, pred)
        failed += pred_rows is None
        if pred_rows is not None and _same(gold_rows, pred_rows, "order by" in q.sql.lower()):
            correct.append(q.id)
        if _norm_sql(pred) == _norm_sql(q.sql):
            exact.append(q.id)
    n = len(questions)
    return Score(execution_accuracy=len(correct) / n, exact_match=len(exact) / n, correct=correct, exact=exact,
                 failed_sql=failed, questions=n)


def correctness(questions: list[Item], correct: list[str]) -> list[float]:
    """1.0 or 0.0 per question, in the order of ``questions``: the units of a paired EX difference."""
    right = set(correct)
    return [float(q.id in right) for q in questions]


def generate(model: Any, tokenizer: Any, questions: list[Item], s: Text2SQLSettings, device: str) -> list[Generation]:
    """Greedy completions for ``questions``, in batches of ``s.batch_size`` (left padding)."""
    import copy

    import torch

    tokenizer = copy.deepcopy(tokenizer)  # left padding and a pad token for this batch job only
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[Generation] = []
    for start in range(0, len(questions), s.batch_size):
        batch = questions[start: start + s.batch_size]
        enc = tokenizer([prompt(q, s.fewshot) for q in batch], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=False, stop_strings=["\n"],
                                 tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
        for q, row in zip(batch, ids[:, enc["input_ids"].shape[1]:].tolist()):
            text, used = "", 0
            for used, tok in enumerate(row, start=1):
                if tok in (tokenizer.pad_token_id, tokenizer.eos_token_id):
                    used -= 1
                    break
                text = tokenizer.decode(row[:used], skip_special_tokens=True)
                if "\n" in text:
                    break
            sql = "SELECT" + text.split("\n", 1)[0]
            out.append(Generation(id=q.id, sql=sql.strip().rstrip(";").strip(), tokens=used))
    return out


def protocol(s: Text2SQLSettings, n: int) -> dict[str, Any]:
    """The protocol that travels with the scores."""
    return {"set": "harness/data/text2sql", "items": n, "fewshot": s.fewshot, "max_new_tokens": s.max_new_tokens,
            "decoding": "greedy, answer primed with 'SELECT', stop at newline",
            "ex": "rows equal as multisets (lists when gold has ORDER BY), numbers rounded to 4 decimals",
            "em": "string equality after lowercasing outside literals and collapsing whitespace"}


def dumps(generations: list[Generation]) -> str:
    return json.dumps([g.model_dump() for g in generations])


def loads(text: str) -> list[Generation]:
    return [Generation.model_validate(g) for g in json.loads(text)]
