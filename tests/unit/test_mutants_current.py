"""The planted bugs of ``tests/mutants.py`` still find their text: code that moves takes its
mutants along, so the mutation run never ends on a mutant that no longer applies."""

from __future__ import annotations

import mutants


def test_every_mutant_edit_occurs_once_in_its_file() -> None:
    assert mutants.check(mutants.MUTANTS) == []
