"""The texts a model failed on by themselves are remembered per model version, the oldest forgotten first."""

from __future__ import annotations

from stream.blamed_texts import BlamedTexts


def test_a_text_is_remembered_for_its_model_version_only():
    blamed = BlamedTexts()
    blamed.remember("v1", "POISON in a headline", "model v1 crashed on it")
    assert blamed.reason("v1", "POISON in a headline") == "model v1 crashed on it"
    assert blamed.reason("v2", "POISON in a headline") is None  # another model may score it
    assert blamed.reason("v1", "POISON in a headline ") is None
    assert blamed.reason("v1", "\ud800 lone surrogate") is None  # any str can be asked about


def test_the_least_recently_asked_about_goes_first():
    blamed = BlamedTexts(capacity=2)
    blamed.remember("v1", "a", "ra")
    blamed.remember("v1", "b", "rb")
    assert blamed.reason("v1", "a") == "ra"  # now newer than b
    blamed.remember("v1", "c", "rc")
    assert len(blamed) == 2 and blamed.reason("v1", "b") is None
    assert (blamed.reason("v1", "a"), blamed.reason("v1", "c")) == ("ra", "rc")
