"""Who is who: normalising addresses, resolving a sender to a customer, merge and unmerge.

Deterministic and explainable: an exact identity match first; strong evidence (a contact the
user shared of themselves, an answer to a message we sent) links automatically; weak evidence
(same name, a number quoted in a signature) is only suggested. Merge and unmerge are lossless
and audited as Events, so unmerge restores exactly the state before the merge.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import idna
import phonenumbers
from sqlalchemy import func, select, update
from sqlmodel import Session

from desk.models import Customer, Event, Identity, Message, Ticket
from desk.store import record_event
from desk.timeutil import utcnow

KINDS = ("email", "phone", "telegram")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_ASCII_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")


class IdentityError(ValueError):
    """A value that cannot be an identity of its kind; the message says why."""


@lru_cache(maxsize=65536)
def normalize_email(address: str) -> str:
    """Lower-case the address and write its domain in IDNA ASCII form (xn--…)."""
    cleaned = address.strip().strip("<>").strip()
    local, at, domain = cleaned.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in cleaned):
        raise IdentityError(f"not an email address: {address!r}")
    domain = domain.rstrip(".").lower()
    if domain.isascii() and "xn--" not in domain:
        if not _ASCII_DOMAIN.fullmatch(domain):
            raise IdentityError(f"not a valid email domain: {domain!r}")
        return f"{local.lower()}@{domain}"
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise IdentityError(f"not a valid email domain: {domain!r}") from exc
    return f"{local.lower()}@{ascii_domain.lower()}"


@lru_cache(maxsize=65536)
def normalize_phone(number: str, region: str = "US") -> str:
    """The number in E.164 (+33612345678); national forms are read in `region`."""
    try:
        parsed = phonenumbers.parse(number, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise IdentityError(f"not a phone number: {number!r} ({exc})") from exc
    if not phonenumbers.is_possible_number(parsed) or not phonenumbers.is_valid_number(parsed):
        raise IdentityError(f"not a valid phone number in region {region.upper()}: {number!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_telegram(user_id: str | int) -> str:
    """A Telegram numeric user id as a string."""
    value = str(user_id).strip()
    if not re.fullmatch(r"-?\d{1,20}", value):
        raise IdentityError(f"not a Telegram numeric user id: {user_id!r}")
    return str(int(value))


def normalize(kind: str, value: str, region: str = "US") -> str:
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value, region)
    if kind == "telegram":
        return normalize_telegram(value)
    raise IdentityError(f"unknown identity kind {kind!r}; expected one of {', '.join(KINDS)}")


def normalize_lenient(kind: str, value: str, region: str = "US") -> str:
    """Like normalize, but keeps what a provider really sent when it is not a valid identity
    (an SMS short code, an alphanumeric sender id, a broken From:) so the message is not lost."""
    try:
        return normalize(kind, value, region)
    except IdentityError:
        return value.strip().lower()


def display_phone(e164: str) -> str:
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


# --------------------------------------------------------------------------------------------
# Resolution


def find_customer(session: Session, kind: str, value: str) -> int | None:
    """The customer owning an already-normalised identity, following merges."""
    customer_id = session.execute(
        select(Identity.customer_id).where(Identity.kind == kind, Identity.value == value)
    ).scalar()
    return live_customer(session, customer_id) if customer_id is not None else None


def live_customer(session: Session, customer_id: int) -> int:
    """Follow merged_into to the surviving customer."""
    seen = set()
    while customer_id not in seen:
        seen.add(customer_id)
        merged_into = session.execute(
            select(Customer.merged_into).where(Customer.id == customer_id)
        ).scalar()
        if merged_into is None:
            return customer_id
        customer_id = merged_into
    return customer_id


def resolve(
    session: Session,
    kind: str,
    value: str,
    *,
    name: str | None = None,
    display: str | None = None,
    region: str = "US",
    now: datetime | None = None,
) -> int:
    """The customer for a sender, created with its identity when unknown."""
    normalized = normalize(kind, value, region)
    existing = find_customer(session, kind, normalized)
    if existing is not None:
        return existing
    now = now or utcnow()
    customer = Customer(name=name or display or value, created_at=now, updated_at=now)
    session.add(customer)
    session.flush()
    session.add(
        Identity(
            customer_id=customer.id, kind=kind, value=normalized, display=display, created_at=now
        )
    )
    session.flush()
    return customer.id  # type: ignore[return-value]


def link_identity(
    session: Session,
    customer_id: int,
    kind: str,
    value: str,
    *,
    actor: str,
    region: str = "US",
    display: str | None = None,
    reason: str = "linked by hand",
) -> Identity:
    """Attach an identity to a customer. If it belongs to another customer, the two are merged
    (the caller shows the evidence first); an identity already theirs is left alone."""
    normalized = normalize(kind, value, region)
    now = utcnow()
    owner = session.execute(
        select(Identity).where(Identity.kind == kind, Identity.value == normalized)
    ).scalar_one_or_none()
    customer_id = live_customer(session, customer_id)
    if owner is not None:
        owner_customer = live_customer(session, owner.customer_id)
        if owner_customer != customer_id:
            # The older customer survives, so the ids agents already know keep working.
            survivor, absorbed = sorted((customer_id, owner_customer))
            merge(session, survivor, absorbed, actor=actor, reason=reason)
        return owner
    identity = Identity(
        customer_id=customer_id,
        kind=kind,
        value=normalized,
        display=display,
        source="manual" if actor != "system" else "evidence",
        created_at=now,
    )
    session.add(identity)
    session.flush()
    record_event(session, "identity_linked", actor=actor, customer_id=customer_id,
                 identity_id=identity.id, kind=kind, value=normalized, reason=reason)
    return identity


# --------------------------------------------------------------------------------------------
# Merge and unmerge


class MergeError(ValueError):
    pass


def merge(
    session: Session, target_id: int, source_id: int, *, actor: str, reason: str = ""
) -> Event:
    """Fold customer `source_id` into `target_id`: its identities, tickets and messages move;
    `source_id` stays as a tombstone. The Event records exactly what moved, for unmerge."""
    target_id = live_customer(session, target_id)
    source_id = live_customer(session, source_id)
    if target_id == source_id:
        raise MergeError(f"customer {target_id} cannot be merged with itself")
    target = session.get(Customer, target_id)
    source = session.get(Customer, source_id)
    if target is None or source is None:
        raise MergeError(f"no such customer: {source_id if source is None else target_id}")
    moved = {
        "identities": _ids(session, Identity, Identity.customer_id == source_id),
        "tickets": _ids(session, Ticket, Ticket.customer_id == source_id),
        "messages": _ids(session, Message, Message.customer_id == source_id),
    }
    _move(session, moved, target_id)
    now = utcnow()
    source.merged_into = target_id
    source.updated_at = now
    target.updated_at = now
    previous_name = target.name
    if not target.name and source.name:
        target.name = source.name
    merge_event = Event(
        created_at=now,
        kind="merge",
        actor=actor,
        customer_id=target_id,
        data=json.dumps(
            {
                "target": target_id,
                "source": source_id,
                "moved": moved,
                "target_name_before": previous_name,
                "reason": reason,
            }
        ),
    )
    # Reload what the bulk updates changed, but keep the returned event usable once the
    # session is closed (callers print its id).
    session.flush()
    session.expire_all()
    session.add(merge_event)
    session.flush()
    return merge_event


def unmerge(session: Session, source_id: int, *, actor: str) -> Event:
    """Undo the merge of customer `source_id`: everything it owned before goes back to it."""
    source = session.get(Customer, source_id)
    if source is None or source.merged_into is None:
        raise MergeError(f"customer {source_id} is not merged into another customer")
    merge_event, data = None, {}
    for candidate in session.execute(
        select(Event)
        .where(Event.kind == "merge", Event.customer_id == source.merged_into)
        .order_by(Event.id.desc())
    ).scalars():
        data = json.loads(candidate.data)
        if data.get("source") == source_id:
            merge_event = candidate
            break
    if merge_event is None:
        raise MergeError(f"no merge record for customer {source_id}")
    target_id = data["target"]
    dependants = session.execute(
        select(func.count()).where(Customer.merged_into == source_id)
    ).scalar_one()
    if live_customer(session, target_id) != target_id or dependants:
        raise MergeError(
            f"customer {source_id} was merged into {target_id}, which has itself been merged"
            " or absorbed others since: unmerge those first"
        )
    moved = data["moved"]
    _move(session, moved, source_id)
    # Messages that arrived while merged, on tickets that go back, go back with them.
    for chunk in _chunks(moved["tickets"]):
        session.execute(
            update(Message)
            .where(Message.ticket_id.in_(chunk), Message.customer_id == target_id)
            .values(customer_id=source_id),
            execution_options={"synchronize_session": False},
        )
    target = session.get(Customer, target_id)
    now = utcnow()
    if target is not None:
        target.name = data.get("target_name_before", target.name)
        target.updated_at = now
    source.merged_into = None
    source.updated_at = now
    unmerge_event = Event(
        created_at=now,
        kind="unmerge",
        actor=actor,
        customer_id=source_id,
        data=json.dumps({"target": target_id, "source": source_id, "merge_event": merge_event.id}),
    )
    session.flush()
    session.expire_all()
    session.add(unmerge_event)
    session.flush()
    return unmerge_event


def _move(session: Session, moved: dict[str, list[int]], customer_id: int) -> None:
    """Give the listed identities, tickets and messages to `customer_id`."""
    for model, ids in (
        (Identity, moved["identities"]),
        (Ticket, moved["tickets"]),
        (Message, moved["messages"]),
    ):
        for chunk in _chunks(ids):
            session.execute(
                update(model).where(model.id.in_(chunk)).values(customer_id=customer_id),
                execution_options={"synchronize_session": False},
            )


def _ids(session: Session, model: type, *where: object) -> list[int]:
    return list(session.execute(select(model.id).where(*where).order_by(model.id)).scalars())


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# --------------------------------------------------------------------------------------------
# Suggestions (weak evidence: shown to an agent, never applied on its own)


@dataclass(frozen=True, slots=True)
class Suggestion:
    customer_id: int
    other_id: int
    evidence: str


_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE_IN_TEXT = re.compile(r"(?:\+|00)?\d[\d .()-]{7,}\d")


def suggestions(session: Session, customer_id: int, *, region: str = "US") -> list[Suggestion]:
    """Other customers who may be the same person, each with the evidence in words."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        return []
    found: dict[int, str] = {}
    if customer.name.strip():
        for other_id in session.execute(
            select(Customer.id).where(
                func.lower(Customer.name) == customer.name.strip().lower(),
                Customer.id != customer_id,
                Customer.merged_into.is_(None),
            ).limit(10)
        ).scalars():
            found.setdefault(other_id, f"same name: {customer.name}")
    recent_texts = session.execute(
        select(Message.text)
        .where(Message.customer_id == customer_id, Message.direction == "in")
        .order_by(Message.id.desc())
        .limit(20)
    ).scalars()
    for body in recent_texts:
        tail = body[-1500:]  # signatures live at the end; bounded work on huge messages
        candidates: list[tuple[str, str]] = []
        candidates += [("email", m) for m in _EMAIL_IN_TEXT.findall(tail)]
        candidates += [("phone", m) for m in _PHONE_IN_TEXT.findall(tail)]
        for kind, raw in candidates:
            try:
                value = normalize(kind, raw, region)
            except IdentityError:
                continue
            other = find_customer(session, kind, value)
            if other is not None and other != customer_id:
                found.setdefault(other, f"{kind} {value} appears in their message")
    return [Suggestion(customer_id, other, why) for other, why in found.items()]
