"""Metric children resolved once per label set are the very series the labels name."""

from __future__ import annotations

from mutualaid.metrics import SHARE_DECISIONS, child
from mutualaid.topics import Kind


def test_a_cached_child_counts_into_the_series_its_labels_name() -> None:
    labels = {"partner": "ZZ0000042", "kind": "alpr.read", "outcome": "shared"}
    before = SHARE_DECISIONS.labels(**labels)._value.get()
    first = child(SHARE_DECISIONS, "ZZ0000042", Kind.ALPR_READ, "shared")
    first.inc()
    assert child(SHARE_DECISIONS, "ZZ0000042", Kind.ALPR_READ, "shared") is first
    assert SHARE_DECISIONS.labels(**labels)._value.get() == before + 1
    other = child(SHARE_DECISIONS, "ZZ0000042", Kind.ALPR_READ, "denied")
    assert other is not first
