"""The fuzz suite's own parts (tests/fuzz.py): the verifier finds every way the books can be
wrong, the generation is deterministic, and it generates what the suite claims to send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import strategies as st

from schemas.events import BATCH_SCHEMA
from tests import fuzz
from tests.fuzz import Letter, Produced, account

T = "t-predictions"
ENVELOPE = json.dumps({"schema": BATCH_SCHEMA, "events": [{}, {}, {}]}).encode()
PRODUCED = [
    Produced(0, 0, b'{"a": 1}'),  # applied, then given up by the join
    Produced(0, 1, b"{not json"),  # refused whole
    Produced(1, 0, ENVELOPE),  # an envelope: event 1 refused, 0 and 2 applied
    Produced(1, 1, ENVELOPE),  # an envelope refused whole
]
LETTERS = [
    Letter(T, 0, 1, None, "malformed_json"),
    Letter(T, 1, 0, 1, "bad_value"),
    Letter(T, 1, 1, None, "mixed_streams"),
    Letter(T, 0, 0, 0, "duplicate_prediction"),
    Letter("t-outcomes", 0, 0, None, "wrong_type"),  # another topic's
]


def test_exact_books_balance() -> None:
    books = account(T, PRODUCED, LETTERS, applied=3)
    assert books.ok, books.problems
    assert (books.produced, books.applied, books.dead_lettered) == (6, 3, 3)
    assert books.given_up_later == 1


@pytest.mark.parametrize(
    ("letters", "applied", "problem"),
    [
        (LETTERS, 4, "the worker applied 4"),  # counted twice
        (LETTERS, 2, "the worker applied 2"),  # lost
        (LETTERS[1:], 3, "the worker applied 3"),  # a refusal without its letter
        ([*LETTERS, Letter(T, 0, 1, None, "oversized")], 3, "2 dead letters for one message"),
        ([*LETTERS, Letter(T, 1, 0, 1, "bad_name")], 2, "dead-lettered twice"),
        ([*LETTERS, Letter(T, 9, 9, None, "bad_value")], 3, "never produced"),
        ([*LETTERS, Letter(T, 1, 0, 7, "bad_value")], 2, "index out of"),
        ([*LETTERS, Letter(T, 0, 0, 3, "bad_value")], 2, "no envelope"),
        ([*LETTERS, Letter(T, 0, 1, None, "expired")], 3, "refused, and yet given up"),
        ([*LETTERS, Letter(T, 1, 0, 1, "expired")], 3, "refused, and yet given up"),
        ([*LETTERS, Letter(T, 0, 0, 0, "expired")], 3, "given up twice"),
        ([*LETTERS, Letter(T, 1, 0, 2, "internal_error")], 2, "internal_error"),
    ],
)
def test_every_kind_of_wrong_books_is_found(
    letters: list[Letter], applied: int, problem: str
) -> None:
    books = account(T, PRODUCED, letters, applied)
    assert any(problem in p for p in books.problems), books.problems


def test_generation_is_deterministic_and_mixes_as_weighted() -> None:
    strategy = st.tuples(st.integers(), st.text())
    assert fuzz.generate(strategy, 300, 7) == fuzz.generate(strategy, 300, 7)
    assert fuzz.generate(strategy, 300, 7) != fuzz.generate(strategy, 300, 8)
    one = fuzz.generate_mix(fuzz.outcomes, 200, 3)
    assert one == fuzz.generate_mix(fuzz.outcomes, 200, 3)
    families = [f for f, _ in one]
    assert (families.count("valid"), families.count("one thing wrong")) == (50, 90)


def test_generation_does_not_depend_on_what_the_process_imported() -> None:
    """The same messages in a fresh interpreter that imported nothing of the project but
    tests.fuzz, as here, after the whole test suite's imports (hypothesis would otherwise
    mix in literals of the project's modules it has seen)."""
    import hashlib
    import subprocess
    import sys

    import agents.app  # noqa: F401  (many project modules: their literals are not used)

    def digest(messages: list[tuple[str, fuzz.Message]]) -> str:
        return hashlib.sha256(repr(messages).encode()).hexdigest()

    code = (
        "import hashlib, sys; from tests import fuzz; "
        "print(hashlib.sha256(repr(fuzz.generate_mix(fuzz.predictions, 150, 1)).encode())"
        ".hexdigest())"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert fresh.stdout.strip() == digest(fuzz.generate_mix(fuzz.predictions, 150, 1))
