"""desk.folding: the quoted history and signatures an agent can collapse in a message."""

from __future__ import annotations

import pytest

from desk.folding import Fold, fold_regions, split_lines


def folded(text: str) -> list[tuple[str, list[str]]]:
    """Each fold as (kind, the lines it hides): what the agent would see collapsed."""
    lines = split_lines(text)
    return [(f.kind, lines[f.start_line : f.end_line]) for f in fold_regions(text)]


def test_plain_text_has_nothing_to_fold() -> None:
    assert fold_regions("") == []
    assert fold_regions("Hello,\n\nmy order never arrived.\n\nJane\n") == []


def test_quote_run_with_english_attribution() -> None:
    text = (
        "Thanks, that worked!\n"
        "\n"
        "On Tue, 3 Mar 2026, Jane Support wrote:\n"
        "> Could you try restarting it?\n"
        "> Regards\n"
    )
    assert fold_regions(text) == [Fold(2, 5, "quote", "3 quoted lines")]


@pytest.mark.parametrize(
    "attribution",
    [
        "Le mar. 3 mars 2026 à 10:00, Jane <jane@example.fr> a écrit :",
        "Am 03.03.2026 um 10:00 schrieb Jane Doe <jane@example.de>:",
        "El mar, 3 mar 2026 a las 10:00, Jane escribió:",
        "Jane Doe <jane@example.com> wrote:",
    ],
)
def test_attribution_in_other_languages_is_folded_with_the_quote(attribution: str) -> None:
    text = f"Merci !\n\n{attribution}\n> ligne un\n> ligne deux\n"
    assert folded(text) == [("quote", [attribution, "> ligne un", "> ligne deux"])]


def test_wrapped_attribution_over_two_lines() -> None:
    text = (
        "OK\n"
        "\n"
        "On Tue, 3 Mar 2026 at 10:00, A Very Long Support Team Name <\n"
        "support@example.com> wrote:\n"
        "\n"
        "> one\n"
        "> two\n"
    )
    [fold] = fold_regions(text)
    assert (fold.start_line, fold.end_line) == (2, 7)


def test_text_above_a_one_line_attribution_is_not_swallowed() -> None:
    text = "On my side it still fails.\nOn Tue, 3 Mar 2026, Jane wrote:\n> a\n> b\n"
    assert [(f.start_line, f.end_line) for f in fold_regions(text)] == [(1, 4)]


def test_single_quoted_line_is_not_folded() -> None:
    text = "> Is it broken?\nYes, since Monday.\n"
    assert fold_regions(text) == []


def test_inline_replies_fold_each_quote_run_separately() -> None:
    text = (
        "> First question?\n"
        "> Second line of it\n"
        "Answer one.\n"
        "> Only one quoted line\n"
        "Answer two.\n"
        "> Third question?\n"
        ">\n"
        "> > nested older quote\n"
        "Answer three.\n"
    )
    assert [(f.start_line, f.end_line, f.summary) for f in fold_regions(text)] == [
        (0, 2, "2 quoted lines"),
        (5, 8, "3 quoted lines"),
    ]


def test_blank_lines_between_quoted_paragraphs_stay_in_one_fold() -> None:
    text = "Reply\n\n> para one\n> more\n\n> para two\n> more\n\n"
    assert fold_regions(text) == [Fold(2, 7, "quote", "5 quoted lines")]


def test_outlook_original_message_folds_to_the_end() -> None:
    text = (
        "Hello, see below.\n"
        "\n"
        "-----Original Message-----\n"
        "From: Support <support@example.com>\n"
        "Sent: Tuesday, March 3, 2026 10:00 AM\n"
        "To: Jane\n"
        "Subject: RE: order\n"
        "\n"
        "Old text that was not quoted with '>'.\n"
        "More old text.\n"
        "\n"
    )
    [fold] = fold_regions(text)
    assert fold.kind == "quote"
    assert (fold.start_line, fold.end_line) == (2, 10)
    assert fold.summary == "8 quoted lines"


def test_outlook_header_block_without_separator_line() -> None:
    text = (
        "Please find the form attached.\r\n"
        "\r\n"
        "________________________________\r\n"
        "From: Support <support@example.com>\r\n"
        "Sent: Tuesday, March 3, 2026 10:00\r\n"
        "To: Jane Doe <jane@example.com>\r\n"
        "Subject: Your ticket\r\n"
        "\r\n"
        "Old text.\r\n"
    )
    [fold] = fold_regions(text)
    assert (fold.start_line, fold.end_line) == (2, 9)


def test_german_outlook_header_block() -> None:
    text = "Danke.\n\nVon: Support\nGesendet: Dienstag\nAn: Jane\nBetreff: Ticket\n\nAlt.\n"
    [fold] = fold_regions(text)
    assert fold.start_line == 2


def test_a_from_line_in_the_customers_own_words_is_not_history() -> None:
    text = "From: my account page I cannot log in.\nSent it twice already.\nPlease help.\n"
    assert fold_regions(text) == []


def test_forwarded_message_is_content_not_folded_history() -> None:
    text = (
        "Please look at what I received:\n"
        "\n"
        "---------- Forwarded message ---------\n"
        "From: Shop <shop@example.com>\n"
        "Date: Tue, 3 Mar 2026 at 10:00\n"
        "Subject: Your order\n"
        "To: <jane@example.com>\n"
        "\n"
        "Your order was cancelled.\n"
    )
    assert fold_regions(text) == []


def test_rfc3676_signature() -> None:
    text = "Thanks!\n\n-- \nJane Doe\nACME Corp | +33 1 23 45 67 89\n"
    assert folded(text) == [("signature", ["-- ", "Jane Doe", "ACME Corp | +33 1 23 45 67 89"])]
    assert fold_regions(text)[0].summary == "signature (3 lines)"


def test_signature_above_quoted_history_ends_where_the_quote_starts() -> None:
    text = (
        "Works now, thanks.\n"
        "-- \n"
        "Jane\n"
        "\n"
        "On Mon, 2 Mar 2026, Support wrote:\n"
        "> try this\n"
        "> and that\n"
    )
    assert [(f.kind, f.start_line, f.end_line) for f in fold_regions(text)] == [
        ("signature", 1, 3),
        ("quote", 4, 7),
    ]


def test_bare_double_dash_is_a_signature_only_when_short() -> None:
    assert [f.kind for f in fold_regions("Bye\n--\nJane\n")] == ["signature"]
    long_tail = "Steps:\n--\n" + "".join(f"step {i}\n" for i in range(20))
    assert fold_regions(long_tail) == []


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my iPhone",
        "Sent from my Galaxy",
        "Get Outlook for iOS",
        "Envoyé de mon iPhone",
        "Von meinem iPhone gesendet",
    ],
)
def test_trailing_sent_from_my_phone_line(line: str) -> None:
    text = f"Yes please cancel it.\n\n{line}\n"
    assert folded(text) == [("signature", [line])]


def test_sent_from_my_phone_above_quoted_history() -> None:
    text = "Yes.\n\nSent from my iPhone\n\nOn 3 Mar 2026, at 10:00, Support wrote:\n> a\n> b\n"
    assert [(f.kind, f.start_line, f.end_line) for f in fold_regions(text)] == [
        ("signature", 2, 3),
        ("quote", 4, 7),
    ]


def test_sent_from_in_the_middle_of_text_is_not_a_signature() -> None:
    text = "Sent from my iPhone, the photo shows the damage.\nCan you refund?\n"
    assert fold_regions(text) == []


def test_folds_are_sorted_disjoint_and_inside_the_text() -> None:
    text = (
        "> a\n> b\nreply\n-- \nsig\n\nOn x, Y wrote:\n> c\n> d\n"
        "-----Original Message-----\nFrom: z\n> e\n> f\n"
    )
    folds = fold_regions(text)
    count = len(split_lines(text))
    previous_end = 0
    for fold in folds:
        assert previous_end <= fold.start_line < fold.end_line <= count
        previous_end = fold.end_line
    assert [f.kind for f in folds] == ["quote", "signature", "quote", "quote"]


def test_text_is_not_changed_and_crlf_is_handled() -> None:
    text = "Hi\r\n\r\nOn Tue, Jane wrote:\r\n> one\r\n> two\r\n"
    before = str(text)
    assert fold_regions(text) == [Fold(2, 5, "quote", "3 quoted lines")]
    assert text == before


def test_fold_is_immutable() -> None:
    fold = Fold(0, 2, "quote", "2 quoted lines")
    with pytest.raises(AttributeError):
        fold.start_line = 1  # type: ignore[misc]
