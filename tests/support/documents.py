"""Editing JSON documents in tests: a copy with one value replaced or removed."""

from __future__ import annotations

import copy

#: the value that removes the key instead of replacing its value
DELETE = object()


def edited(doc, path, value):
    """A deep copy of ``doc`` with the value at ``path`` (keys / indexes) set to ``value``, or removed (``DELETE``; nothing when absent)."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc
