"""Text for the demo corpus, from two sources that differ in kind.

* **Prose** (training, dev, in-domain and unseen-speech tests): Debian's ``fortunes`` database, thousands of
  quotations, jokes and aphorisms by many authors, with names, numbers and varied punctuation. It is read
  from ``/usr/share/games/fortunes`` (``apt-get install fortunes``; the Makefile installs it).
* **Everyday sentences** (the unseen-text test): ``mkdeploy/assets/sentences.txt``, plain sentences written
  for this project (weather, errands, work). No sentence of it is ever trained on.

Every list is sorted before a seeded shuffle, so a split depends only on the seed and the package version.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from mkdeploy.errors import MkdError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: Characters a sentence may hold: anything else (ASCII art, code, accents a TTS voice spells out) is dropped.
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()\-]+$")
_ATTRIBUTION = re.compile(r"^\s*(--|-- |—)")


def _clean(entry: str) -> str | None:
    """One fortune as a single spoken line, or None when it is not plain prose.

    The attribution line ("-- Mark Twain") is dropped: a voice reads it, but the reference would then
    carry dashes and layout no transcript has.
    """
    lines = [ln for ln in entry.splitlines() if ln.strip() and not _ATTRIBUTION.match(ln)]
    text = " ".join(ln.strip() for ln in lines)
    text = re.sub(r"\s+", " ", text).strip()
    if (
        not text
        or not _ALLOWED.match(text)
        or "--" in text
        or ":-" in text
        or ";-" in text
        or '"' in text[1:-1]
        and text.count('"') % 2
    ):
        return None
    words = text.split()
    if not 5 <= len(words) <= 28 or not any(c.isalpha() for c in text):
        return None
    if sum(w.isupper() and len(w) > 1 for w in words) > 2:  # shouting and acronyms read letter by letter
        return None
    return text


def fortunes(directory: Path = FORTUNES_DIR) -> list[str]:
    """Distinct, cleaned fortunes from every database file in ``directory``, sorted.

    Raises:
        MkdError: the package is not installed.
    """
    dbs = sorted(p for p in directory.glob("*") if p.is_file() and not p.suffix) if directory.is_dir() else []
    if not dbs:
        raise MkdError(
            f"{directory}: no fortune databases; install them with `apt-get install fortunes` "
            "(make demo does this when run as root)"
        )
    out: set[str] = set()
    for db in dbs:
        for entry in db.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = _clean(entry)
            if text:
                out.add(text)
    return sorted(out)


_NOT_PLAIN = re.compile(r"[0-9;:()]")


def is_plain(text: str) -> bool:
    """A sentence anyone would say and any voice reads as written: 6-20 words, no digits (which a voice
    reads one way and a reference writes another), no colons or brackets (dictionary entries such as
    "statistics, n.: ..."), and no capitalised word past the first but "I" (names a voice mispronounces)."""
    words = text.split()
    return (
        6 <= len(words) <= 20
        and not _NOT_PLAIN.search(text)
        and not any(w[0].isupper() and w.rstrip(",.;!?'") != "I" and not w.startswith("I'") for w in words[1:])
    )


def plain_fortunes(directory: Path = FORTUNES_DIR) -> list[str]:
    """The fortunes that pass :func:`is_plain`, sorted (about 4,500 of 9,400)."""
    return [t for t in fortunes(directory) if is_plain(t)]


def everyday_sentences() -> list[str]:
    """The project's shipped everyday sentences (the unseen-text source), sorted and distinct."""
    raw = (files("mkdeploy") / "assets" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return sorted({x.strip() for x in raw if x.strip() and not x.startswith("#")})
