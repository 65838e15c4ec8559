"""Which xdist worker runs which tests: groups by where a test lives.

``e2e``: every test under ``tests/e2e``, one at a time on one worker: they run the real KCL
daemon on a timetable, and two at once on two CPUs starve each other. Each integration module
is a group of its own, so its module-scoped fixtures (a stack, a migrated database) start
once. Unit tests go one by one to whichever worker is free. Groups are handed out in
collection order (``--no-loadscope-reorder``), so the end-to-end group, the longest, starts
first. A test marked ``@pytest.mark.xdist_group("name")`` joins that group, where xdist can
apply the mark (pytest 9.2's node ids ignore it: a test placed under ``tests/e2e`` is in
``e2e`` either way).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


class TierScheduling(LoadScopeScheduling):
    """xdist's scope scheduling, with the scope of a test as the docstring above says."""

    def _split_scope(self, nodeid: str) -> str:
        if "@" in nodeid.rsplit("]", 1)[-1]:
            return nodeid.rsplit("@", 1)[-1]
        path = nodeid.split("::", 1)[0]
        if path.startswith("tests/e2e/"):
            return "e2e"
        if path.startswith("tests/integration/"):
            return path
        return nodeid
