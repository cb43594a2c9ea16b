"""Semantic versions (semver.org 2.0.0) and the version ranges images declare they can be installed over.

Pure: no I/O. Ranges use the npm notation vendors already know:

* comparators `>=1.2.0`, `>1.2.0`, `<2.0.0`, `<=1.4.2`, `=1.2.3` or a bare `1.2.3`;
* partial versions and wildcards `1`, `1.2`, `1.x`, `1.2.*`, `*` (empty means `*`);
* caret `^1.2.3` (same major; `^0.2.3` same minor) and tilde `~1.2.3` (same minor);
* hyphen ranges `1.2.0 - 1.4.x`;
* whitespace joins comparators (all must hold), `||` joins alternatives (any may hold).

Unlike npm, a pre-release version matches a range when its position in the order does: devices in the field run
release candidates, and a range author means "these builds", not "these builds unless tagged".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_PARTIAL = re.compile(
    r"^v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*])(?:\.(?P<patch>\d+|[xX*])"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?)?)?$"
)


class InvalidVersion(ValueError):
    """Not a semantic version; the message shows the expected form."""


class InvalidRange(ValueError):
    """Not a version range this module understands; the message names the offending part."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _SEMVER.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidVersion(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.2 or 2.0.0-rc.1)")
        major, minor, patch, pre, build = match.groups()
        prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
        return cls(int(major), int(minor), int(patch), prerelease, build or "")

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # semver.org §11: a pre-release sorts before its release; numeric identifiers sort before text ones.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        # Build metadata does not take part in precedence (semver.org §10).
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


def is_valid(text: str) -> bool:
    try:
        Version.parse(text)
    except InvalidVersion:
        return False
    return True


# ---------------------------------------------------------------- ranges

_OPS = ("<=", ">=", "<", ">", "=")


@dataclass(frozen=True)
class _Comparator:
    op: str
    version: Version

    def holds(self, v: Version) -> bool:
        match self.op:
            case "<":
                return v < self.version
            case "<=":
                return v <= self.version
            case ">":
                return v > self.version
            case ">=":
                return v >= self.version
        return v == self.version


@dataclass(frozen=True)
class _Partial:
    major: int | None
    minor: int | None
    patch: int | None
    prerelease: tuple[int | str, ...]

    def floor(self) -> Version:
        return Version(self.major or 0, self.minor or 0, self.patch or 0, self.prerelease)

    def ceiling(self) -> Version | None:
        """The first version above everything this partial names (exclusive bound), None for `*`."""
        if self.major is None:
            return None
        if self.minor is None:
            return Version(self.major + 1, 0, 0, (0,))
        if self.patch is None:
            return Version(self.major, self.minor + 1, 0, (0,))
        return None


def _partial(text: str, whole: str) -> _Partial:
    match = _PARTIAL.match(text)
    if match is None:
        raise InvalidRange(f"{whole!r}: {text!r} is not a version or wildcard (e.g. 1.2.3, 1.2.x, *)")
    parts: list[int | None] = []
    for name in ("major", "minor", "patch"):
        raw = match.group(name)
        parts.append(None if raw is None or raw in "xX*" else int(raw))
    # A wildcard swallows what follows: 1.x.3 means 1.x
    for i in range(3):
        if parts[i] is None:
            parts[i + 1 :] = [None] * (2 - i)
            break
    pre = match.group("pre")
    prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre and parts[2] is not None else ()
    return _Partial(parts[0], parts[1], parts[2], prerelease)


def _exact_or_span(p: _Partial) -> list[_Comparator]:
    ceiling = p.ceiling()
    if p.major is None:
        return []
    if ceiling is None:
        return [_Comparator("=", p.floor())]
    return [_Comparator(">=", p.floor()), _Comparator("<", ceiling)]


def _comparators(token: str, whole: str) -> list[_Comparator]:
    if token.startswith("^"):
        p = _partial(token[1:], whole)
        if p.major is None:
            return []
        floor = p.floor()
        if p.major > 0 or p.minor is None:
            upper = Version(floor.major + 1, 0, 0, (0,))
        elif p.minor > 0 or p.patch is None:
            upper = Version(0, floor.minor + 1, 0, (0,))
        else:
            upper = Version(0, 0, floor.patch + 1, (0,))
        return [_Comparator(">=", floor), _Comparator("<", upper)]
    if token.startswith("~"):
        p = _partial(token[1:].lstrip(">"), whole)
        if p.major is None:
            return []
        floor = p.floor()
        if p.minor is None:
            upper = Version(floor.major + 1, 0, 0, (0,))
        else:
            upper = Version(floor.major, floor.minor + 1, 0, (0,))
        return [_Comparator(">=", floor), _Comparator("<", upper)]
    op = next((o for o in _OPS if token.startswith(o)), "")
    p = _partial(token[len(op) :], whole)
    if op in ("", "="):
        return _exact_or_span(p)
    if p.major is None:
        # >=* and <=* match everything; >* and <* match nothing, which no author means: refuse it.
        if op in (">=", "<="):
            return []
        raise InvalidRange(f"{whole!r}: {token!r} matches no version")
    ceiling = p.ceiling()
    if op == ">=":
        return [_Comparator(">=", p.floor())]
    if op == "<":
        # "<2.0.0" means "before the 2.0.0 line", so its release candidates are excluded too.
        floor = p.floor()
        return [_Comparator("<", floor if floor.prerelease else Version(floor.major, floor.minor, floor.patch, (0,)))]
    if op == ">":
        return [_Comparator(">=", ceiling)] if ceiling else [_Comparator(">", p.floor())]
    return [_Comparator("<", ceiling)] if ceiling else [_Comparator("<=", p.floor())]


@dataclass(frozen=True)
class VersionRange:
    """A set of versions: alternatives (`||`), each a conjunction of comparators."""

    text: str
    alternatives: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not isinstance(text, str):
            raise InvalidRange(f"{text!r} is not a version range")
        normalised = text.strip()
        if len(normalised) > 200:
            raise InvalidRange("a version range is at most 200 characters")
        alternatives: list[tuple[_Comparator, ...]] = []
        for alternative in (normalised or "*").split("||"):
            alternative = re.sub(r"(<=|>=|<|>|=|\^|~)\s+", r"\1", alternative.strip())
            if not alternative:
                raise InvalidRange(f"{text!r}: empty alternative around '||'")
            hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alternative)
            if hyphen:
                low, high = _partial(hyphen.group(1), text), _partial(hyphen.group(2), text)
                comparators = [_Comparator(">=", low.floor())] if low.major is not None else []
                ceiling = high.ceiling()
                if high.major is not None:
                    comparators.append(_Comparator("<", ceiling) if ceiling else _Comparator("<=", high.floor()))
                alternatives.append(tuple(comparators))
                continue
            comparators = []
            for token in alternative.split():
                comparators.extend(_comparators(token, text))
            alternatives.append(tuple(comparators))
        return cls(normalised or "*", tuple(alternatives))

    def __contains__(self, version: Version | str) -> bool:
        v = Version.parse(version) if isinstance(version, str) else version
        return any(all(c.holds(v) for c in alternative) for alternative in self.alternatives)

    def __str__(self) -> str:
        return self.text


def satisfies(version: str, range_text: str) -> bool:
    """Whether a device's version lies in a range; an unparseable device version never does."""
    try:
        v = Version.parse(version)
    except InvalidVersion:
        return False
    return v in VersionRange.parse(range_text)
