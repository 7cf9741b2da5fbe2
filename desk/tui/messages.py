"""Messages between the app's widgets and its workers."""

from __future__ import annotations

from textual.message import Message


class TicketChosen(Message):
    """The agent moved the cursor onto (or opened) a ticket."""

    def __init__(self, ticket_id: int, *, open_it: bool = False) -> None:
        super().__init__()
        self.ticket_id = ticket_id
        self.open_it = open_it


class QueueChosen(Message):
    def __init__(self, queue: str) -> None:
        super().__init__()
        self.queue = queue


class StoreChanged(Message):
    """Another process (the daemon, another agent) committed to the store."""
