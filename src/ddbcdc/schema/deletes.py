"""What a REMOVE does to its live row: a mapping's ``deletes`` and ``ttl_deletes``, pure.

A REMOVE has a **cause**: a user's delete, DynamoDB's TTL expiry (the stream says so with the
userIdentity ``Service`` / ``dynamodb.amazonaws.com``), or unknown (a REMOVE ddbcdc synthesized:
a repair of ``ddbcdc verify``, the line of an incremental export). Per cause the mapping says
what happens to the live row (its **mode**):

- ``hard``: the row is deleted (the default);
- ``soft``: the row stays, holding the item's last image, with ``_ddbcdc_deleted_at`` set to
  the change's time; a later INSERT of the key clears it;
- ``keep``: the row stays, holding the item's last image, unmarked (an archive).

``deletes`` (``hard`` or ``soft``) is the mode of a user's delete; ``ttl_deletes`` is the
mode of an expiry: ``delete`` (the default: as ``deletes`` says), ``soft`` or ``keep``. A
REMOVE of unknown cause takes whichever of the two modes keeps more (keep > soft > hard), so
a guess never deletes a row that may be an archive. Whatever the mode, the versions row
records the REMOVE as a tombstone: the version rule and pruning do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

__all__ = ["DEFAULT_POLICY", "Cause", "DeleteMode", "DeletePolicy", "parse_policy"]

#: What a REMOVE does to the live row.
DeleteMode = Literal["hard", "soft", "keep"]
#: Why an item was removed.
Cause = Literal["user", "ttl", "unknown"]

DELETES = ("hard", "soft")
TTL_DELETES = ("delete", "soft", "keep")
_KEEPS = {"hard": 0, "soft": 1, "keep": 2}


@dataclass(frozen=True, slots=True)
class DeletePolicy:
    """A mapping's ``deletes`` and ``ttl_deletes``, and what they make of each REMOVE."""

    deletes: Literal["hard", "soft"] = "hard"
    ttl_deletes: Literal["delete", "soft", "keep"] = "delete"

    @property
    def ttl_mode(self) -> DeleteMode:
        """The mode of a TTL expiry."""
        return self.deletes if self.ttl_deletes == "delete" else self.ttl_deletes

    def mode(self, cause: Cause) -> DeleteMode:
        """The mode of a REMOVE of ``cause``."""
        if cause == "user":
            return self.deletes
        if cause == "ttl":
            return self.ttl_mode
        user, ttl = self.deletes, self.ttl_mode
        return user if _KEEPS[user] >= _KEEPS[ttl] else ttl

    @property
    def modes(self) -> frozenset[DeleteMode]:
        """Every mode a REMOVE of this mapping can take."""
        return frozenset((self.deletes, self.ttl_mode))

    @property
    def hard(self) -> bool:
        """Every REMOVE deletes its row (the default): the live table holds the live items."""
        return self.modes == {"hard"}

    @property
    def marks(self) -> bool:
        """Some REMOVE marks its row: the live table has ``_ddbcdc_deleted_at``."""
        return "soft" in self.modes

    @property
    def keeps(self) -> bool:
        """A TTL expiry leaves its row unmarked: only the versions row says it is gone."""
        return self.ttl_mode == "keep"

    def document(self) -> dict[str, str]:
        """The fields of a mapping document that differ from the defaults."""
        out: dict[str, str] = {}
        if self.deletes != "hard":
            out["deletes"] = self.deletes
        if self.ttl_deletes != "delete":
            out["ttl_deletes"] = self.ttl_deletes
        return out

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> DeletePolicy:
        """The policy a (valid) mapping document states."""
        return cls(
            cast(Literal["hard", "soft"], document.get("deletes", "hard")),
            cast(Literal["delete", "soft", "keep"], document.get("ttl_deletes", "delete")),
        )


#: Hard deletes, expiries as any delete: what a mapping without the fields says.
DEFAULT_POLICY = DeletePolicy()


def parse_policy(raw: Mapping[str, Any], fail: Callable[[str, str], Exception]) -> DeletePolicy:
    """The policy of a mapping document; ``fail(field, message)`` makes the error to raise."""
    deletes = raw.get("deletes", "hard")
    if deletes not in DELETES:
        raise fail("deletes", f"{deletes!r} must be one of {list(DELETES)}")
    ttl_deletes = raw.get("ttl_deletes", "delete")
    if ttl_deletes not in TTL_DELETES:
        raise fail("ttl_deletes", f"{ttl_deletes!r} must be one of {list(TTL_DELETES)}")
    return DeletePolicy.from_document(raw)
