"""What the passes of ticker extraction (:mod:`ingest.tickers`, :mod:`ingest.brokers`) share.

A module of its own so that the broker pass needs nothing from the extractor that calls it: no import cycle.
"""

from __future__ import annotations

import re

Hit = tuple[int, int, str]  # start, end, ticker
# Separators of a list of companies: "Visa and Mastercard", "Exxon, Chevron".
LIST_SEP = re.compile(r"\s*(?:,\s*and|,\s*or|,|/|&|and|or|vs\.?|versus)\s*")
# The characters LIST_SEP is made of (keep the two in step): a hit past the run of them that follows another is not
# listed with it, so a pass need only look at the hits that start within that run.
LIST_GAP = re.compile(r"[\s,/&andorvsue.]*")
