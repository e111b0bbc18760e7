"""Model fixtures for tests of other parts (filled in by the model work)."""
