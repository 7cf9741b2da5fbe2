"""Canned replies from `[[canned]]`: their text with `{customer.name}`-style variables filled."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VARIABLE = re.compile(r"\{([a-z_]+\.[a-z_]+)\}")


def variables(*, customer_name: str, agent_name: str, ticket_id: int | None = None,
              subject: str | None = None) -> dict[str, str]:
    first = customer_name.split()[0] if customer_name.strip() else ""
    return {
        "customer.name": customer_name,
        "customer.first_name": first,
        "agent.name": agent_name,
        "ticket.id": str(ticket_id) if ticket_id is not None else "",
        "ticket.subject": subject or "",
    }


def expand(template: str, values: Mapping[str, str]) -> str:
    """`template` with each known `{a.b}` replaced; unknown ones stay as written so the agent
    sees them before sending. Values are inserted once, never expanded again."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


KNOWN = tuple(variables(customer_name="", agent_name=""))
