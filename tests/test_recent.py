"""The small cache of pictures read back from files: bounded by bytes, newest kept."""

from flux_nb.files._recent import Recent


def test_the_oldest_go_past_the_budget_and_a_read_makes_one_newest():
    cache = Recent(budget=100)
    cache.put("a", b"a", 40)
    cache.put("b", b"b", 40)
    assert cache.get("a") == b"a"  # now the newest: b goes first
    cache.put("c", b"c", 40)
    assert cache.get("b") is None and cache.get("a") == b"a" and cache.get("c") == b"c"
    cache.put("a", b"A", 40)  # replaced, counted once
    assert len(cache) == 2 and cache.get("a") == b"A"


def test_one_item_larger_than_the_budget_stays_alone_until_the_next():
    cache = Recent(budget=10)
    cache.put("big", "x", 50)
    assert cache.get("big") == "x" and len(cache) == 1
    cache.put("small", "y", 5)
    assert cache.get("big") is None and cache.get("small") == "y"
    cache.clear()
    assert len(cache) == 0 and cache.get("small") is None
