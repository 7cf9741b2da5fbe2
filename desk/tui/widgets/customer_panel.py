"""The customer beside their timeline: identities per channel, the ticket's tags, other
tickets, and who else is working on the ticket right now."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from desk.identity import display_phone
from desk.models import Identity
from desk.textsafe import printable
from desk.timeutil import ago, utcnow
from desk.views import Timeline

KIND_LABELS = {"email": "✉", "phone": "☏", "telegram": "✈"}
SHOWN_TICKETS = 8


def identity_label(identity: Identity) -> str:
    value = identity.value
    if identity.kind == "phone":
        value = display_phone(value)
    elif identity.kind == "telegram" and identity.display:
        value = f"{identity.display} ({value})"
    return printable(value, single_line=True)


def customer_text(timeline: Timeline) -> Text:
    ticket, customer = timeline.ticket, timeline.customer
    text = Text()
    text.append(printable(customer.name, single_line=True) or f"customer #{customer.id}",
                style="bold")
    text.append(f"  customer {customer.id}\n", style="dim")
    for identity in timeline.identities:
        text.append(f"{KIND_LABELS.get(identity.kind, identity.kind)} ", style="bold")
        text.append(identity_label(identity) + "\n")
    text.append("\n")
    text.append(f"Ticket #{ticket.id} ", style="bold")
    text.append(f"{ticket.status} · {ticket.priority} · {ticket.assignee or 'unassigned'}\n")
    if ticket.snoozed_until is not None and ticket.status == "snoozed":
        text.append(f"until {ticket.snoozed_until.astimezone():%a %d %b %H:%M}\n", style="dim")
    tags = [tag for tag in ticket.tags.split(",") if tag]
    text.append("tags: ", style="dim")
    text.append(", ".join(printable(tag, single_line=True) for tag in tags) or "none")
    text.append("\n")
    if timeline.other_tickets:
        text.append("\nOther tickets\n", style="bold")
        now = utcnow()
        for other in timeline.other_tickets[:SHOWN_TICKETS]:
            title = printable(other.subject or other.snippet, single_line=True)[:40]
            text.append(f"#{other.id} {other.status:<8} {ago(other.last_message_at, now):>4} ",
                        style="dim")
            text.append(title + "\n")
        hidden = len(timeline.other_tickets) - SHOWN_TICKETS
        if hidden > 0:
            text.append(f"… {hidden} more\n", style="dim")
    return text


class CustomerPanel(Static):
    _shown: Text | None = None

    def show(self, timeline: Timeline | None) -> None:
        text = customer_text(timeline) if timeline is not None else Text()
        # Updating a Static re-lays out the screen: skip it when nothing changed.
        if self._shown is None or text != self._shown:
            self._shown = text
            self.update(text)


class PresenceBar(Static):
    """"bob is writing a reply": shown only while another agent is active on the ticket."""

    def show(self, timeline: Timeline | None) -> None:
        others = timeline.others_active if timeline is not None else []
        if self.display != bool(others):
            self.display = bool(others)
        if others:
            doing = {"reply": "writing a reply", "note": "writing a note"}
            self.update(Text(
                "  ".join(
                    f"⚠ {printable(p.agent, single_line=True)} is "
                    f"{doing.get(p.activity, p.activity)} on this ticket"
                    for p in others
                ),
                style="bold",
            ))
