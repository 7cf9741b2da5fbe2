"""Who is who: address normalisation, resolution, links, merge/unmerge and suggestions."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import count
from sqlalchemy import select, text

from desk import identity
from desk.identity import IdentityError, MergeError
from desk.ingest import IngestOptions, ingest
from desk.models import Customer, Event, Identity, Message, Ticket

FR = IngestOptions(region="FR")

# ---------------------------------------------------------------------------- phone numbers


@pytest.mark.parametrize("written", ["06 12 34 56 78", "+33 6 12 34 56 78", "0033612345678"])
def test_french_numbers_in_every_form_are_one_e164_number(written: str) -> None:
    assert identity.normalize_phone(written, "FR") == "+33612345678"


@pytest.mark.parametrize(
    ("written", "region", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "FR", "+14155552671"),  # international form ignores the region
        ("020 7946 0018", "GB", "+442079460018"),
        ("030 901820", "DE", "+4930901820"),
    ],
)
def test_national_numbers_are_read_in_their_region(written: str, region: str, e164: str) -> None:
    assert identity.normalize_phone(written, region) == e164


@pytest.mark.parametrize("bad", ["12", "abc", ""])
def test_an_invalid_number_is_a_clear_identity_error(bad: str) -> None:
    with pytest.raises(IdentityError) as caught:
        identity.normalize_phone(bad, "FR")
    message = str(caught.value)
    assert "phone number" in message
    assert repr(bad) in message  # says which value was refused


def test_normalize_lenient_keeps_short_codes_and_sender_ids() -> None:
    # An SMS short code or an alphanumeric sender id is not a phone number, but the message
    # they sent must still be stored under a stable sender.
    assert identity.normalize_lenient("phone", "36179", "FR") == "36179"
    assert identity.normalize_lenient("phone", " AcmeBank ", "FR") == "acmebank"
    # ...while a real number is still normalised.
    assert identity.normalize_lenient("phone", "06 12 34 56 78", "FR") == "+33612345678"


# ---------------------------------------------------------------------------- email, telegram


def test_email_addresses_are_case_insensitive() -> None:
    assert identity.normalize_email("Jane@Example.COM") == "jane@example.com"
    assert identity.normalize_email(" <jane@example.com> ") == "jane@example.com"


def test_international_domains_compare_equal_to_their_ascii_form() -> None:
    assert identity.normalize_email("user@Bücher.de") == "user@xn--bcher-kva.de"
    assert identity.normalize_email("user@Bücher.de") == identity.normalize_email(
        "user@xn--bcher-kva.de"
    )


@pytest.mark.parametrize(
    "bad", ["jane", "jane@", "@example.com", "jane doe@example.com", "", "user@bücher..de"]
)
def test_invalid_email_addresses_raise(bad: str) -> None:
    with pytest.raises(IdentityError, match="email"):
        identity.normalize_email(bad)


def test_telegram_ids_are_numeric_strings() -> None:
    assert identity.normalize_telegram(" 123456789 ") == "123456789"
    assert identity.normalize_telegram(123456789) == "123456789"
    for bad in ("@jane", "12a", ""):
        with pytest.raises(IdentityError, match="Telegram"):
            identity.normalize_telegram(bad)


def test_unknown_identity_kind_is_refused() -> None:
    with pytest.raises(IdentityError, match="unknown identity kind 'fax'"):
        identity.normalize("fax", "123")


# ---------------------------------------------------------------------------- resolution


def test_resolve_creates_a_customer_then_finds_it_by_any_spelling(store) -> None:
    with store.transaction() as session:
        created = identity.resolve(session, "email", "Jane@Example.COM", name="Jane Doe")
    with store.transaction() as session:
        again = identity.resolve(session, "email", "jane@example.com")
        phone = identity.resolve(session, "phone", "06 12 34 56 78", region="FR", name="Paul")
        phone_again = identity.resolve(session, "phone", "+33612345678")
    assert again == created
    assert phone_again == phone != created
    with store.session() as session:
        assert session.get(Customer, created).name == "Jane Doe"
        values = session.execute(select(Identity.kind, Identity.value).order_by(Identity.id)).all()
    assert values == [("email", "jane@example.com"), ("phone", "+33612345678")]


def test_link_identity_by_hand_makes_the_customer_reachable_there(store, inbound) -> None:
    ingest(store, [inbound(sender="jane@example.com", sender_name="Jane")])
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        identity.link_identity(session, jane, "phone", "06 12 34 56 78", actor="alice",
                               region="FR")
    with store.session() as session:
        assert identity.find_customer(session, "phone", "+33612345678") == jane
        linked = session.execute(
            select(Identity).where(Identity.kind == "phone")
        ).scalar_one()
        assert linked.source == "manual"
        event = session.execute(select(Event).where(Event.kind == "identity_linked")).scalar_one()
    assert event.actor == "alice"
    assert json.loads(event.data)["value"] == "+33612345678"
    # An SMS from that number now lands on Jane, not on a new customer.
    ingest(store, [inbound("sms text", channel="sms", sender="+33 6 12 34 56 78")], options=FR)
    assert count(store, Customer) == 1


def test_linking_an_identity_owned_by_another_customer_merges_them(store, inbound) -> None:
    ingest(store, [inbound(sender="jane@example.com"),
                   inbound(channel="sms", sender="+33612345678")], options=FR)
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        phone_owner = identity.find_customer(session, "phone", "+33612345678")
        assert jane != phone_owner
        identity.link_identity(session, jane, "phone", "+33 6 12 34 56 78", actor="alice",
                               region="FR")
    with store.session() as session:
        assert session.get(Customer, phone_owner).merged_into == jane
        assert identity.find_customer(session, "phone", "+33612345678") == jane
        owners = set(session.execute(select(Message.customer_id)).scalars())
    assert owners == {jane}


# ---------------------------------------------------------------------------- merge / unmerge


def _snapshot(store) -> dict[str, list[tuple]]:
    """Every row of the customer-owned tables, without updated_at columns."""
    tables = {}
    with store.engine.connect() as conn:
        for table in ("customer", "identity", "ticket", "message"):
            result = conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            keep = [i for i, name in enumerate(result.keys()) if name != "updated_at"]
            tables[table] = [tuple(row[i] for i in keep) for row in result]
    return tables


def _two_customers(store, inbound) -> tuple[int, int, int]:
    ingest(
        store,
        [
            inbound("first email", sender="jane@example.com", sender_name="Jane"),
            inbound("second email", sender="jane@example.com", sender_name="Jane"),
            inbound("an sms", channel="sms", sender="+33612345678"),
            inbound("another sms", channel="sms", sender="+33612345678"),
            inbound("someone else", sender="bob@example.org", sender_name="Bob"),
        ],
        options=FR,
    )
    with store.transaction() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        sms = identity.find_customer(session, "phone", "+33612345678")
        bob = identity.find_customer(session, "email", "bob@example.org")
        # An unnamed target takes the source's name on merge; unmerge must give it back.
        session.get(Customer, jane).name = ""
    return jane, sms, bob


def test_merge_then_unmerge_restores_the_exact_prior_state(store, inbound) -> None:
    jane, sms, _bob = _two_customers(store, inbound)
    before = _snapshot(store)
    with store.session() as session:
        sms_identities = set(session.execute(
            select(Identity.id).where(Identity.customer_id == sms)).scalars())
        sms_tickets = set(session.execute(
            select(Ticket.id).where(Ticket.customer_id == sms)).scalars())
        sms_messages = set(session.execute(
            select(Message.id).where(Message.customer_id == sms)).scalars())
    assert sms_identities and sms_tickets and len(sms_messages) == 2

    with store.transaction() as session:
        identity.merge(session, jane, sms, actor="alice", reason="same person")

    with store.session() as session:
        tombstone = session.get(Customer, sms)
        assert tombstone is not None and tombstone.merged_into == jane
        assert session.get(Customer, jane).name == "+33612345678"
        for model, ids in ((Identity, sms_identities), (Ticket, sms_tickets),
                           (Message, sms_messages)):
            owners = set(session.execute(
                select(model.customer_id).where(model.id.in_(ids))).scalars())
            assert owners == {jane}
        assert identity.find_customer(session, "phone", "+33612345678") == jane
    assert _snapshot(store) != before

    with store.transaction() as session:
        identity.unmerge(session, sms, actor="alice")

    assert _snapshot(store) == before
    with store.session() as session:
        kinds = session.execute(select(Event.kind).order_by(Event.id)).scalars().all()
        assert identity.find_customer(session, "phone", "+33612345678") == sms
    assert [k for k in kinds if k in ("merge", "unmerge")] == ["merge", "unmerge"]


def test_unmerge_of_a_customer_that_was_never_merged_raises(store, inbound) -> None:
    jane, _sms, _bob = _two_customers(store, inbound)
    with store.transaction() as session, pytest.raises(MergeError, match="not merged"):
        identity.unmerge(session, jane, actor="alice")


def test_a_customer_cannot_be_merged_with_itself(store, inbound) -> None:
    jane, _sms, _bob = _two_customers(store, inbound)
    with store.transaction() as session, pytest.raises(MergeError, match="itself"):
        identity.merge(session, jane, jane, actor="alice")


# ---------------------------------------------------------------------------- suggestions


def test_suggestions_find_the_same_name_and_a_phone_in_a_signature(store, inbound) -> None:
    ingest(
        store,
        [
            inbound("Where is my parcel?\n\nThanks,\nJane Doe\nMobile: 06 12 34 56 78",
                    sender="jane@example.com", sender_name="Jane Doe"),
            inbound("parcel?", channel="sms", sender="+33612345678"),
            inbound("hello", sender="jane.doe@work.example", sender_name="jane doe",
                    at=timedelta(hours=1)),
            inbound("unrelated", sender="bob@example.org", sender_name="Bob"),
        ],
        options=FR,
    )
    with store.session() as session:
        jane = identity.find_customer(session, "email", "jane@example.com")
        sms = identity.find_customer(session, "phone", "+33612345678")
        namesake = identity.find_customer(session, "email", "jane.doe@work.example")
        bob = identity.find_customer(session, "email", "bob@example.org")
        found = {s.other_id: s.evidence for s in identity.suggestions(session, jane, region="FR")}
    assert set(found) == {sms, namesake}
    assert bob not in found
    assert "+33612345678" in found[sms]
    assert "same name" in found[namesake]
    # Weak evidence is only suggested: nobody was merged.
    with store.session() as session:
        assert session.execute(
            select(Customer.id).where(Customer.merged_into.is_not(None))
        ).first() is None


def test_unmerge_takes_back_messages_that_arrived_while_merged(store, inbound) -> None:
    ingest(store, [inbound("a", sender="carmen@example.com", sender_name="Carmen Ortega")])
    ingest(store, [inbound("b", channel="telegram", sender="777", sender_name="Carmen Ortega",
                           at=timedelta(minutes=5))])
    with store.transaction() as session:
        identity.merge(session, 1, 2, actor="chloe")
    ingest(store, [inbound("c", channel="telegram", sender="777", at=timedelta(hours=1))])
    with store.transaction() as session:
        identity.unmerge(session, 2, actor="chloe")
    with store.session() as session:
        rows = session.execute(select(Message.text, Message.customer_id, Ticket.customer_id)
                               .join(Ticket, Ticket.id == Message.ticket_id)).all()
    # every message belongs to the customer whose ticket it is on
    assert all(message_owner == ticket_owner for _text, message_owner, ticket_owner in rows)
    assert {text: owner for text, owner, _t in rows} == {"a": 1, "b": 2, "c": 2}
