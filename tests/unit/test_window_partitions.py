"""The worker keeps the partition count of the window topics that exist (stream.window_partitions)."""

from __future__ import annotations

import pytest

from finsent.settings import Settings
from stream.window_partitions import WindowPartitionsMismatch, choose, window_changelog_name, window_topic_name


def test_a_first_start_takes_the_setting_and_a_later_one_the_existing_count() -> None:
    assert choose(4, {}) == 4
    assert choose(4, {"p.stream-window-events": 2, "p-stream-windows-changelog": 2}) == 2
    assert choose(4, {"p.stream-window-events": 6}) == 6  # the changelog is made to match


def test_window_topics_that_disagree_are_an_error_naming_both() -> None:
    with pytest.raises(WindowPartitionsMismatch, match="a.x has 2, b.y has 3 partitions"):
        choose(4, {"b.y": 3, "a.x": 2})


def test_the_names_are_those_of_the_app_and_its_table() -> None:
    from stream.app import create_app

    settings = Settings(topic_prefix="tenant1", topic_partitions=4)
    app = create_app(settings, window_partitions=3)
    table = app.tables["windows"]
    assert table.changelog_topic.get_topic_name() == window_changelog_name(settings)
    assert table.partitions == 3 and table.changelog_topic.partitions == 3
    events = app.agents["windows"].channel
    assert events.get_topic_name() == window_topic_name(settings) and events.partitions == 3
    assert create_app(settings).tables["windows"].partitions == 4
