"""The clock estimate counts support and contradiction in sorted lists: same answer as the rules."""

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.engine.clock import AGREE_S, MIN_SOURCES, ClockEvidence

NOW = 1_800_000_000.0


def reference(values: list[tuple[float, bool]]) -> float | None:
    """The rules of relay.engine.clock written as the plain double loop over the sources."""
    if len(values) < MIN_SOURCES:
        return None
    best: tuple[int, float] | None = None
    for candidate, _ in values:
        support = contra = 0
        for v, is_point in values:
            if abs(v - candidate) <= AGREE_S and (is_point or candidate >= -AGREE_S):
                support += 1
            elif v > candidate + AGREE_S or (is_point and abs(v - candidate) > AGREE_S):
                contra += 1
        enough = support >= MIN_SOURCES and 3 * contra <= len(values)
        if enough and (best is None or support > best[0]):
            best = (support, candidate)
    if best is None:
        return None
    agreeing = sorted(v for v, _ in values if abs(v - best[1]) <= AGREE_S)
    return agreeing[len(agreeing) // 2]


# Whole seconds: the boundaries (exactly AGREE_S apart) are then exact in both forms.
offsets = st.integers(min_value=-3 * 86400, max_value=3 * 86400).map(float)
clustered = st.integers(min_value=-700, max_value=700).map(float)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(offsets, clustered), st.booleans()), max_size=40))
def test_estimate_matches_the_rules(sources: list[tuple[float, bool]]) -> None:
    """Test that the estimate equals the one the support/contradiction rules give, source by
    source, for points and bounds around the agreement boundaries."""
    clock = ClockEvidence()
    for i, (offset, is_point) in enumerate(sources):
        if is_point:
            clock.observe_point(f"n{i}", NOW + offset, NOW)
        else:
            clock.observe_bound(f"n{i}", NOW + offset, NOW)
    assert clock.offset(NOW) == reference(list(clock.sources(NOW).values()))
