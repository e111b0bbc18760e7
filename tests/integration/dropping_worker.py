"""``finsent stream worker`` whose consumer loses part of a fetch once per chosen topic, as
Faust's ``getmany`` does when the consumer generation changes in the middle of a fetched
batch: the rest of the batch is never handed over, and the Kafka client's position has
already moved past it.

``FINSENT_TEST_DROP`` = ``<topic suffix>:<offset>[,…]``: the first fetch of a partition of
that topic that holds ``<offset>`` or later loses its records from there on. Run as a script
with the arguments of ``finsent``.
"""

from __future__ import annotations

import logging
import os
import sys

from stream.gapless_consumer import GaplessConsumer

log = logging.getLogger("dropping_worker")
PLAN = dict(entry.split(":") for entry in os.environ["FINSENT_TEST_DROP"].split(","))
done: set[str] = set()
fetch = GaplessConsumer._wait_next_records


async def _dropping_fetch(self, timeout):
    records, active = await fetch(self, timeout)
    for tp, batch in list((records or {}).items()):
        suffix = next((s for s in PLAN if tp.topic.endswith(s) and s not in done), None)
        cut = next((r.offset for r in batch if suffix and r.offset >= int(PLAN[suffix])), None)
        if cut is None:
            continue
        done.add(suffix)
        records[tp] = [r for r in batch if r.offset < cut]
        log.warning("test drop: %s offsets %d to %d never handed over", tp, cut, batch[-1].offset)
    return records, active


GaplessConsumer._wait_next_records = _dropping_fetch

if __name__ == "__main__":
    from finsent.cli import main

    sys.argv = ["finsent", *sys.argv[1:]]
    main()
