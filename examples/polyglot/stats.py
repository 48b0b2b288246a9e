"""Python step: summarise a list of strings."""


def summarise(items):
    items = [str(i) for i in items]
    return {
        "count": len(items),
        "items": [{"text": t, "length": len(t)} for t in items],
        "longest": max(items, key=len) if items else None,
    }
