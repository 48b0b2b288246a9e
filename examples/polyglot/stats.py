"""Python step: summarise a list of strings, asking C for their lengths."""
import fnmesh


def summarise(items):
    items = [str(i) for i in items]
    lengths = fnmesh.call("polyglot/lengths", items)  # Python -> C
    return {
        "count": len(items),
        "items": [{"text": t, "length": n} for t, n in zip(items, lengths)],
        "longest": max(items, key=len) if items else None,
    }
