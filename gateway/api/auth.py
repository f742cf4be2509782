"""API tokens: who may call the local control API, and with which role.

Tokens live in a TOML file of SHA-256 hashes, never the tokens themselves::

    [[token]]
    name = "alice"          # recorded as the proposer / approver
    role = "operator"       # viewer | operator | engineer
    sha256 = "9f86d0...0a08"

Why hashes: the file is read by the service and copied in backups; a leaked copy must
not let anyone approve a setpoint change. A token is 32 random bytes
(``secrets.token_urlsafe(32)``), so a plain SHA-256 is enough: there is nothing to guess
that a slow, salted hash would protect (that is for passwords people choose).

Why the file must be mode 0600: anyone who can *write* it can give themselves the
operator role; anyone who can *read* it learns who holds which role. So loading refuses a
file that group or others may read or write, as ``ssh`` refuses a private key, rather
than warn and carry on.

Why names are unique (and hashes too): the name is what the audit trail records as the
approver. Two entries with one name, or one token under two names, would make "who
approved this" ambiguous.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.api.ports import Caller, Role
from gateway.errors import ConfigError
from gateway.logs import get_logger

__all__ = [
    "TOKEN_NAME_PATTERN",
    "Authenticator",
    "TokenEntry",
    "TokenFile",
    "TokenFileError",
    "TokenTable",
    "add_token",
    "hash_token",
    "load_tokens",
    "parse_tokens",
]

log = get_logger("gateway.api")

#: Names are recorded as "operator:<name>" in the audit trail, so no ':' and no spaces.
TOKEN_NAME_PATTERN: Final = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
_NAME: Final = re.compile(TOKEN_NAME_PATTERN)
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_KEYS: Final = ("name", "role", "sha256")
_ROLES: Final = ", ".join(r.value for r in Role)


class TokenFileError(ConfigError):
    """The tokens file cannot be used; ``problems`` lists every reason with its fix.

    A ConfigError: a bad tokens file refuses the start like a bad config does, rather than
    running an API that nobody (or anybody) can use.
    """


class Authenticator(Protocol):
    """What the server asks of a token store: the caller a presented token belongs to."""

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token``, or None if it is unknown."""
        ...


def hash_token(token: str) -> str:
    """Lower-case hex SHA-256 of the token's UTF-8 bytes: what the tokens file stores.

    ``errors="replace"``: a header with bytes that are not UTF-8 must not raise; it
    cannot match a real token anyway (generated tokens are ASCII).
    """
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One line of authority: a name, its role, and the hash of its token."""

    name: str
    role: Role
    sha256: str


class TokenTable:
    """An immutable set of token entries, checked for unique names and hashes.

    Args:
        entries: the entries, in file order.
        source: the file they came from, for messages.

    Raises:
        TokenFileError: a name or a token appears twice.
    """

    def __init__(self, entries: Iterable[TokenEntry], *, source: str = "(tokens)") -> None:
        self._entries = tuple(entries)
        problems = list(_duplicates(self._entries, source))
        if problems:
            raise TokenFileError(problems)

    def authenticate(self, token: str) -> Caller | None:
        """The caller whose token this is, or None.

        Every stored hash is compared, in constant time each and without stopping at a
        match, so the response time says nothing about which entry (if any) was close.
        """
        digest = hash_token(token)
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return None if found is None else Caller(found.name, found.role)

    def __iter__(self) -> Iterator[TokenEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _duplicates(entries: tuple[TokenEntry, ...], source: str) -> Iterator[str]:
    names: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.name in names:
            yield (
                f"{source}: token[{i}].name: {entry.name!r} is already used by "
                f"token[{names[entry.name]}]; names must be unique (the name is recorded as "
                "the approver): rename or remove one"
            )
        names.setdefault(entry.name, i)
        if entry.sha256 in hashes:
            first = hashes[entry.sha256]
            yield (
                f"{source}: token[{i}].sha256: the same token as token[{first}] "
                f"({entries[first].name!r}); one token must name one person: remove it and "
                "create a new one with `edgetwin token add`"
            )
        hashes.setdefault(entry.sha256, i)


def _entry(i: int, raw: object, source: str) -> tuple[TokenEntry | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{source}: token[{i}]: must be a table ([[token]] with name, role, sha256)"]
    label = f"token[{i}]" + (f"({raw['name']})" if isinstance(raw.get("name"), str) else "")
    problems = [
        f"{source}: {label}.{key}: unknown key; valid keys here are: {', '.join(_KEYS)}"
        for key in raw
        if key not in _KEYS
    ]
    problems += [
        f"{source}: {label}.{key}: required key is missing" for key in _KEYS if key not in raw
    ]
    name, role, digest = raw.get("name"), raw.get("role"), raw.get("sha256")
    if "name" in raw and not (isinstance(name, str) and _NAME.fullmatch(name)):
        problems.append(
            f"{source}: {label}.name: {name!r} is not a valid name: use letters, digits, '_', "
            "'.' or '-', starting with a letter (at most 64)"
        )
    if "role" in raw and role not in tuple(Role):
        problems.append(f"{source}: {label}.role: {role!r} is not a role; use one of {_ROLES}")
    if "sha256" in raw and not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
        problems.append(
            f"{source}: {label}.sha256: must be the 64 lower-case hex digits of the token's "
            "SHA-256 (`edgetwin token add` writes it)"
        )
    if problems:
        return None, problems
    assert isinstance(name, str)
    assert isinstance(role, str)
    assert isinstance(digest, str)
    return TokenEntry(name, Role(role), digest), []


def parse_tokens(text: str, source: str) -> TokenTable:
    """Validate the text of a tokens file; ``source`` names it in messages.

    Raises:
        TokenFileError: listing every problem, each with its key path and fix.
    """
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TokenFileError([f"{source}: not valid TOML: {err}"]) from err
    problems = [
        f"{source}: {key}: unknown key; a tokens file holds only [[token]] tables"
        for key in data
        if key != "token"
    ]
    raw = data.get("token", [])
    if not isinstance(raw, list):
        problems.append(f"{source}: token: write each token as a [[token]] table")
        raw = []
    entries: list[TokenEntry] = []
    for i, item in enumerate(raw):
        entry, entry_problems = _entry(i, item, source)
        problems += entry_problems
        if entry is not None:
            entries.append(entry)
    if problems:
        raise TokenFileError(problems)
    return TokenTable(entries, source=source)


def _check_private(st: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise TokenFileError([f"{shown}: not a regular file; give the tokens file's path"])
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise TokenFileError(
            [
                f"{shown}: mode {mode:04o} lets group or others read or write the API tokens "
                "file, which must be readable only by the service; fix: "
                f"chmod 600 {shown}"
            ]
        )


def load_tokens(path: str | Path) -> TokenTable:
    """Read the tokens file at ``path``, refusing one that others may read or write.

    The mode is checked on the open file (``fstat``), so the file that is read is the
    file that was checked.

    Raises:
        TokenFileError: missing or unreadable file, group/other permissions, bad content.
    """
    shown = str(path)
    try:
        with open(path, "rb") as handle:
            _check_private(os.fstat(handle.fileno()), shown)
            raw = handle.read()
    except OSError as err:
        hint = (
            f"; create it with `edgetwin token add --tokens-file {shown} --name NAME --role "
            "operator`"
            if isinstance(err, FileNotFoundError)
            else ""
        )
        raise TokenFileError(
            [f"{shown}: cannot read the tokens file: {err.strerror}{hint}"]
        ) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenFileError([f"{shown}: not UTF-8 text ({err})"]) from err
    return parse_tokens(text, shown)


def add_token(path: str | Path, name: str, role: Role) -> str:
    """Create a token for ``name`` with ``role``, append its hash to ``path``, return it.

    The token is returned once and never stored; losing it means adding a new one. The
    file is created with mode 0600 (and its directory with 0700) if missing. The file is
    locked while it is checked and appended, so two concurrent ``token add`` runs cannot
    both add the same name.

    Raises:
        TokenFileError: the name is invalid or taken, or the existing file is refused.
    """
    shown = str(path)
    if not _NAME.fullmatch(name):
        raise TokenFileError(
            [
                f"{shown}: name {name!r} is not valid: use letters, digits, '_', '.' or '-', "
                "starting with a letter (at most 64)"
            ]
        )
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as err:
        raise TokenFileError([f"{shown}: cannot create or open: {err.strerror}"]) from err
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        _check_private(os.fstat(handle.fileno()), shown)
        handle.seek(0)
        try:
            text = handle.read().decode("utf-8")
        except UnicodeDecodeError as err:
            raise TokenFileError([f"{shown}: not UTF-8 text ({err})"]) from err
        table = parse_tokens(text, shown)
        if any(entry.name == name for entry in table):
            raise TokenFileError(
                [
                    f"{shown}: a token named {name!r} exists already; names must be unique. "
                    "Remove its [[token]] table to replace it, or choose another name"
                ]
            )
        token = secrets.token_urlsafe(32)
        added = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        block = (
            ("\n" if text and not text.endswith("\n") else "")
            + ("\n" if text else "")
            + f"[[token]]  # added {added} by edgetwin token add\n"
            + f'name = "{name}"\nrole = "{role.value}"\nsha256 = "{hash_token(token)}"\n'
        )
        handle.write(block.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    return token


class TokenFile:
    """A tokens file that is re-read when it changes, so adding or revoking a token takes
    effect without restarting the gateway.

    It is loaded (and refused) at construction, so a bad file stops the start. Later, if
    the file disappears or becomes unacceptable (bad content, or a ``chmod`` that opens it
    to others), every token is refused until it is fixed: failing closed, because the
    alternative is to keep honouring tokens an admin may just have revoked. Each change of
    state is logged once.

    The check is one ``stat`` per request; the file is parsed only when its inode, size,
    modification time or mode changed.

    Raises:
        TokenFileError: from the first load.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._stamp = self._stat()
        self._table: TokenTable = load_tokens(self._path)
        self._ok = True

    @property
    def path(self) -> Path:
        """The tokens file."""
        return self._path

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token`` per the file as it is now, or None."""
        self._refresh()
        return self._table.authenticate(token)

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)

    def _refresh(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._table = load_tokens(self._path)
        except TokenFileError as err:
            self._table = TokenTable(())
            if self._ok:
                log.error("api_tokens_refused", path=str(self._path), problems=err.problems)
            self._ok = False
            return
        log.info(
            "api_tokens_reloaded",
            path=str(self._path),
            tokens=len(self._table),
            recovered=not self._ok,
        )
        self._ok = True
