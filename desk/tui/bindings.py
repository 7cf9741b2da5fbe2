"""Textual bindings built from the key table in `desk.keys`."""

from __future__ import annotations

from collections.abc import Iterable

from textual.binding import Binding

from desk.keys import Key


def bindings(keys: Iterable[Key]) -> list[Binding]:
    return [
        Binding(key.keys, key.action, key.description, show=key.show, id=key.id)
        for key in keys
    ]
