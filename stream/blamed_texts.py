"""Texts a model failed on by themselves, remembered per model version.

Finding such a text costs the worker a new scorer process for each halving of its batch and two
more for the text itself (stream.pipeline), seconds each. The same text sent again (a repost, a
``finsent dlq replay`` before the model changed) would cost that again, every time; remembered, it
goes to the DLQ at once. They are kept by model version: another model tries them again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

CAPACITY = 10_000  # texts remembered; the oldest go first (32 bytes of digest and a reason each)


class BlamedTexts:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._reasons: OrderedDict[tuple[str, bytes], str] = OrderedDict()

    @staticmethod
    def _key(version: str, text: str) -> tuple[str, bytes]:
        return version, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def reason(self, version: str, text: str) -> str | None:
        """Why model ``version`` failed on ``text`` before, if it did."""
        if not self._reasons:  # nearly always: no text of up to 100 kB hashed for nothing
            return None
        key = self._key(version, text)
        reason = self._reasons.get(key)
        if reason is not None:
            self._reasons.move_to_end(key)
        return reason

    def remember(self, version: str, text: str, reason: str) -> None:
        key = self._key(version, text)
        self._reasons[key] = reason
        self._reasons.move_to_end(key)
        while len(self._reasons) > self.capacity:
            self._reasons.popitem(last=False)

    def __len__(self) -> int:
        return len(self._reasons)
