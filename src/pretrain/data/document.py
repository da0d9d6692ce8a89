"""What flows through the data stage: a :class:`Document`, a :class:`Skip` (a record that
could not be read) and a :class:`Step` (one per-document transformation or filter).

A step is datatrove's shape: documents in, documents or ``(document, reason)`` drops out.
Most steps only look at one document and say keep or drop (``check``); a step that can
turn one document into several (decontamination's cut mode) overrides ``process``.

Values derived from a document's text (its UTF-8 size, its words) are computed once per
text and kept on the document (``Document.memo``): consecutive steps ask for them again
and most steps do not rewrite the text. A step that rewrites ``doc.text`` invalidates them
by assigning a new string.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Document:
    id: str
    text: str
    domain: str
    meta: dict[str, Any] = field(default_factory=dict)
    split: str = ""           # "" = decided by the tokenize stage; "train" | "val" = forced
    # name -> (the text it was computed from, the value); see ``memo``
    _memo: dict[str, tuple[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def memo(self, name: str, fn: Callable[[str], T]) -> T:
        """``fn(self.text)``, computed once for as long as the text is the same string."""
        hit = self._memo.get(name)
        if hit is None or hit[0] is not self.text:
            hit = (self.text, fn(self.text))
            self._memo[name] = hit
        return hit[1]  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        """UTF-8 size of the text (the funnel meters every step in bytes)."""
        return self.memo("nbytes", _utf8_size)

    def record(self) -> dict[str, Any]:
        """The JSON record written to the data stage's document shards."""
        rec = {"id": self.id, "text": self.text, "domain": self.domain, "meta": self.meta}
        if self.split:
            rec["split"] = self.split
        return rec


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass
class Skip:
    """A record that could not be read: counted and written to the audit trail."""

    id: str
    reason: str
    detail: str = ""
    records: int = 1   # how many records it stands for (a parquet row group's lost rows)


class Why(str):
    """A drop reason that says more: the value a filter measured and the limit it passed
    (``0.42 > 0.3``), for the audit line's ``detail``. Counted as its reason."""

    detail: str

    def __new__(cls, reason: str, detail: str) -> Why:
        self = super().__new__(cls, reason)
        self.detail = detail
        return self

    def __reduce__(self) -> tuple[type[Why], tuple[str, str]]:
        return Why, (str(self), self.detail)


def over(reason: str, value: float, limit: float, op: str = ">") -> Why:
    """``reason``, with ``value`` and the ``limit`` it passed (by ``op``) as its detail."""
    return Why(reason, f"{_num(value)} {op} {_num(limit)}")


def _num(x: float) -> str:
    """A count as it is (123456 words), a ratio to 4 significant digits."""
    return str(x) if isinstance(x, int) else f"{x:.4g}"


Drop = tuple[Document, str]


class Step:
    """A per-document step. ``check`` may rewrite ``doc.text`` and returns a drop reason or
    None; ``stats`` counts what the step did besides keep/drop (lines removed, PII replaced),
    for the funnel. ``name`` is the step's row in the funnel and in drop records."""

    name = "step"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def check(self, doc: Document) -> str | None:
        raise NotImplementedError

    def process(self, doc: Document) -> Iterator[Document | Drop]:
        """The documents (or the drop) that ``doc`` becomes."""
        reason = self.check(doc)
        yield doc if reason is None else (doc, reason)

    def __call__(self, docs: Iterator[Document]) -> Iterator[Document | Drop]:
        for doc in docs:
            yield from self.process(doc)
