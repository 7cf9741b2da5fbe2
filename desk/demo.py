"""`desk demo`: a month in the life of a small shop's support desk, built through the real paths.

Crema & Co. sells espresso machines (Lumen Uno, Lumen Duo), grinders (Ferro 64, Ferro Mini),
beans and accessories online, and answers customers by email, SMS and Telegram. The script
below is data: people, and conversations made of steps (a customer writes, an agent replies,
notes, assigns, merges...). One small loop plays every step of every conversation in time order:
inbound traffic goes through `desk.ingest.ingest` exactly as the connectors deliver it, replies
and notes through `desk.outbox`, agent actions through `desk.tickets` and `desk.identity`. So
the demo exercises the product, and what it shows is what the product really does with such a
history (threading, reopening, identity links, delivery failures).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from sqlalchemy import func, select
from sqlmodel import Session

from connectors.base import (
    FLAG_AUTO_REPLY,
    FLAG_UNPARSED,
    Attachment,
    IdentityEvidence,
    InboundMessage,
    Receipt,
)
from connectors.mime import html_to_text
from desk import identity as identities
from desk import tickets
from desk.ingest import IngestOptions, ingest
from desk.models import Message
from desk.outbox import (
    add_note,
    claim_for_sending,
    queue_reply,
    record_failure,
    record_sent,
    sms_segments,
)
from desk.store import Store, summary
from desk.timeutil import to_store, use_clock, utcnow

# The connector names and addresses of config.toml.example, so a demo store looks like a real one.
CONNECTORS = {"email": "support-mail", "sms": "sms", "telegram": "chat"}
REGION = "FR"
SUPPORT_ADDRESS = "support@example.com"
SUPPORT_NAME = "Crema & Co. Support"
MAIL_DOMAIN = "mail.example.com"
SMS_NUMBER = "+33757000000"
TWILIO_ACCOUNT = "AC5f1e0c2b9d8a47e3b6c0f4a1d2e3b4c5"
TEAM = ("alice", "bob", "chloé")  # the agents the script is written for
# Messages that arrive this close together on one connector are fetched in one batch.
POLL_INTERVAL = timedelta(minutes=2)
MAX_JITTER = timedelta(minutes=40)

# The demo's service-level targets (unless the config sets its own), so its ticket list flags
# late tickets and the stats screen counts breaches.
DEMO_SLA = {
    "first_response": {"urgent": "30m", "high": "1h", "normal": "4h", "low": "1d"},
    "resolution": {"urgent": "8h", "high": "1d", "normal": "3d", "low": "7d"},
}


# --------------------------------------------------------------------------------------------
# The script's vocabulary


@dataclass(frozen=True, slots=True)
class Person:
    """One address book entry. A real person with two of these is two customers to desk until
    something links them: that is the point of several entries per person below."""

    name: str
    lang: str = "en"
    email: str | None = None
    phone: str | None = None  # E.164
    telegram: int | None = None  # Telegram numeric user id (private chat id too)
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Msg:
    """The customer writes.

    Every step starts with `after`: the delay since the previous step of its conversation
    ("2h", "1d3h", "15m"), or "now-12m" for a step that must happen that long before `now`.
    """

    after: str
    text: str = ""
    via: str | None = None  # default: the conversation's channel
    who: str | None = None  # another Person of the same human (a second mailbox, ...)
    subject: str | None = None  # email: default the thread's ("Re: ..." when answering)
    quote: bool = False  # email: quote our last reply below the text, as mail clients do
    attach: tuple[str, ...] = ()  # keys of ATTACHMENTS
    html: str | None = None  # email: an HTML-only body; the text is its conversion
    contact: bool = False  # Telegram: the user shares their own contact card (their phone)
    auto: bool = False  # an out-of-office answer
    raw: bytes | None = None  # a payload the connector could not parse


@dataclass(frozen=True, slots=True)
class Reply:
    """An agent answers; delivered unless `queued` (not sent yet) or `fail` (provider refused)."""

    after: str
    agent: str
    text: str
    via: str | None = None
    to: str | None = None
    then: str | None = None  # status to move the ticket to with the reply
    queued: bool = False
    fail: str | None = None  # the provider's reason; {to} is the number or address


@dataclass(frozen=True, slots=True)
class Note:
    after: str
    agent: str
    text: str


@dataclass(frozen=True, slots=True)
class Act:
    after: str
    agent: str
    assign: str | None = None
    tags: tuple[str, ...] = ()
    priority: str | None = None
    status: str | None = None
    snooze: str | None = None  # snoozed until this long after the demo's `now`


@dataclass(frozen=True, slots=True)
class Link:
    """An agent attaches an address the customer gave in a message (weak evidence, confirmed)."""

    after: str
    agent: str
    kind: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Merge:
    """An agent merges this conversation's customer into `into`'s customer."""

    after: str
    agent: str
    into: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unmerge:
    after: str
    agent: str


AgentStep = Reply | Note | Act | Link | Merge | Unmerge
Step = Msg | AgentStep


@dataclass(frozen=True, slots=True)
class Conversation:
    who: str  # key of PEOPLE
    ago: str  # when it starts, before `now`
    via: str
    subject: str | None
    steps: tuple[Step, ...]


def C(who: str, ago: str, via: str, subject: str | None, *steps: Step) -> Conversation:
    return Conversation(who, ago, via, subject, steps)


# --------------------------------------------------------------------------------------------
# Attachments: small but real files, so previews and checksums have something true to show


def _png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    rows = b"".join(
        b"\x00" + bytes(channel for x in range(width) for channel in pixel(x, y))
        for y in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def _burr(x: int, y: int) -> tuple[int, int, int]:
    """A steel burr on a wooden worktop, with a chipped wedge."""
    dx, dy = x - 48, y - 36
    radius = (dx * dx + dy * dy) ** 0.5
    if radius < 30 and not (dx > 8 and abs(dy) < 4):
        shade = 150 + int(40 * ((radius // 4) % 2)) - int(radius)
        return shade, shade, shade + 8
    return 150 + (x * 7 + y) % 23, 104 + (y * 3) % 11, 62


def _parcel(x: int, y: int) -> tuple[int, int, int]:
    """A crushed cardboard corner."""
    if y > 44 - x // 3:
        return 70, 52, 40
    return 196 - (x + y) % 17, 160 - (x * y) % 13, 110


def _pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF with a few lines of text (valid xref, opens in any viewer)."""
    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = " ".join(f"({escape(line)}) Tj T*" for line in lines)
    stream = f"BT /F1 11 Tf 56 780 Td 16 TL {text} ET".encode("cp1252")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


ATTACHMENTS: dict[str, Callable[[], Attachment]] = {
    "burr": lambda: Attachment("IMG_2043.png", "image/png", _png(96, 72, _burr)),
    "parcel": lambda: Attachment("carton-abime.png", "image/png", _png(64, 48, _parcel)),
    "purchase-order": lambda: Attachment("BC-2025-044 Cafe des Arts.pdf", "application/pdf", _pdf([
        "CAFE DES ARTS SARL - 14 rue des Capucins, 69001 Lyon",
        "BON DE COMMANDE BC-2025-044",
        "Fournisseur : Crema & Co., devis D-0412",
        "6 x Lumen Duo (kit raccordement eau)    6 x 1 311,20 EUR HT",
        "3 x Ferro 64                            3 x   483,12 EUR HT",
        "Formation barista (1/2 journee)                 offerte",
        "Total HT : 9 316,56 EUR    TVA 20 % : 1 863,31 EUR",
        "Acompte 30 % a la commande, solde a la livraison.",
        "Bon pour accord - Thomas Roux, gerant",
    ])),
}

# An HTML-only message, as some webmail "rich text" modes send them.
MANON_HTML = """<html><body><div dir="ltr" style="font-family:Calibri,sans-serif">
<p>Bonjour,</p>
<p>Nous ouvrons un nouvel espace de pause dans nos bureaux de Nantes et souhaitons commander :</p>
<table border="1" cellpadding="4" style="border-collapse:collapse">
<tr><th>Article</th><th>Qté</th></tr>
<tr><td>Lumen Uno (noir mat)</td><td>1</td></tr>
<tr><td>Ferro Mini</td><td>1</td></tr>
<tr><td>Café Crema Brésil 1 kg</td><td>4</td></tr>
<tr><td>Pichet à lait 600 ml</td><td>2</td></tr>
</table>
<p>Pourriez-vous nous envoyer un <b>devis au nom de la société</b> (Garnier Conseil SAS, SIRET
812 345 678 00021) ? Nous réglons par virement à 30 jours.</p>
<p>Merci d'avance,</p>
<p>Manon Garnier<br>Office manager · Garnier Conseil<br>
<a href="https://garnier-conseil.example.fr">garnier-conseil.example.fr</a></p>
</div></body></html>"""

# A fragment whose headers a relay lost: the email connector keeps it, flagged unparsed.
HEADERLESS_MAIL = (
    b"--=_Part_8812_1093317.1718\r\n"
    b"Content-Type: text/plain; charset=\"utf-8\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Bonjour, livrez-vous en Belgique, et combien co=C3=BBte la livraison d'une Lum=\r\n"
    b"en Duo =C3=A0 Li=C3=A8ge=3F Merci, Ren=C3=A9\r\n\r\n"
    b"--=_Part_8812_1093317.1718\r\n"
    b"Content-Type: image/jpeg; name=\"IMG_0187.jpg\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8M\r\n"
)


# --------------------------------------------------------------------------------------------
# The people

PEOPLE: dict[str, Person] = {
    "lea": Person("Léa Moreau", "fr", email="lea.moreau@orange.fr"),
    "lea-mobile": Person("Léa Moreau", "fr", phone="+33612457890"),
    "antoine": Person("Antoine Girard", "fr", email="a.girard@free.fr"),
    "thomas": Person("Thomas Roux", "fr", email="thomas.roux@cafedesarts-lyon.fr"),
    "camille": Person("Camille Dubois", "fr", email="camille.dubois@laposte.net"),
    "sophie": Person("Sophie Laurent", "fr", email="sophie.laurent@gmail.com"),
    "elodie": Person("Élodie Bernard", "fr", email="elodie.bernard@sfr.fr"),
    "nicolas": Person("Nicolas Fournier", "fr", phone="+33698214375"),
    "nicolas-home": Person("Nicolas Fournier", "fr", email="nico.fournier@gmail.com"),
    "margaux": Person("Margaux Petit", "fr", phone="+33766431298", telegram=6120934587,
                      username="margauxpt"),
    "hugo": Person("Hugo Mercier", "fr", phone="+33678902341", telegram=5543120987,
                   username="hugo_mrc"),
    "manon": Person("Manon Garnier", "fr", email="manon.garnier@outlook.fr"),
    "baptiste": Person("Baptiste Lambert", "fr", email="baptiste.lambert@wanadoo.fr"),
    "julien": Person("Julien Lefèvre", "fr", phone="+33687341256"),
    "paul": Person("Paul Durand", "fr", phone="+33751348862"),
    "fatima": Person("Fatima Benali", "fr", telegram=7012458830, username="fatima_bnl"),
    "amelie": Person("Amélie Chevalier", "fr", email="amelie.chevalier@yahoo.fr"),
    "claire": Person("Claire Rousseau", "fr", email="claire.rousseau@icloud.com"),
    "jonas": Person("Jonas Becker", "de", email="jonas.becker@web.de"),
    "anna": Person("Anna Schmidt", "de", email="anna.schmidt@gmx.de"),
    "anna-tg": Person("Anna Schmidt", "de", telegram=5890123476, username="anna_sch"),
    "lukas": Person("Lukas Wagner", "de", email="lukas.wagner@t-online.de"),
    "katrin": Person("Katrin Hoffmann", "de", telegram=6678123409, username="katrin_hoff"),
    "oliver": Person("Oliver Bennett", "en", email="oliver.bennett@btinternet.com"),
    "emily": Person("Emily Clarke", "en", email="emily.clarke@northwind-design.co.uk"),
    "james": Person("James O'Connor", "en", phone="+353871234598", telegram=5123987645,
                    username="jamesoc"),
    "priya": Person("Priya Patel", "en", email="priya.patel@outlook.com"),
    "michael": Person("Michael Turner", "en", email="mturner@fastmail.com"),
    "grace": Person("Grace Liu", "en", telegram=7234561209, username="graceliu"),
    "kasia": Person("Katarzyna Nowak", "en", email="k.nowak@wp.pl"),
    "sven": Person("Sven Lindqvist", "en", email="sven.lindqvist@telia.se"),
    "mehmet": Person("Mehmet Yılmaz", "en", email="mehmet.yilmaz@gmail.com"),
    "lucia": Person("Lucía Fernández", "es", email="lucia.fernandez@hotmail.es"),
    "javier": Person("Javier Ruiz", "es", phone="+34612873459"),
    "carmen": Person("Carmen Ortega", "es", email="carmen.ortega@telefonica.net"),
    "carmen-tg": Person("Carmen Ortega", "es", telegram=6345098712, username="carmen_bcn"),
    "ken": Person("佐藤 健", "ja", email="satoken@yahoo.co.jp"),
    "misaki": Person("田中 美咲", "ja", telegram=5987123450, username="misaki_t"),
    "giulia": Person("Giulia Romano", "it", email="giulia.romano@libero.it"),
    "marco": Person("Marco Bianchi", "it", telegram=6891234570, username="marcobianchi"),
    "sanne": Person("Sanne de Vries", "nl", email="sanne.devries@ziggo.nl"),
    "joao": Person("João Silva", "pt", email="joao.silva@sapo.pt"),
    "nobody": Person("", "en", email=""),  # the unparsed message: no sender could be read
}

# How agents sign, per customer language (email) — short on SMS and Telegram.
SIGN_OFF = {
    "fr": "Bien cordialement,\n{me}\nCrema & Co. · service client",
    "de": "Viele Grüße\n{me}\nCrema & Co. · Kundenservice",
    "es": "Un saludo,\n{me}\nCrema & Co. · Atención al cliente",
    "it": "Cordiali saluti,\n{me}\nCrema & Co. · Assistenza clienti",
    "en": "Best regards,\n{me}\nCrema & Co. · Customer care",
}


# --------------------------------------------------------------------------------------------
# The conversations. In texts, "{sig}" is the replying agent's sign-off and "{me}" their name,
# "{alice}", "{bob}" and "{chloé}" the names of whoever plays them (see _Builder.agents); a line
# "--" is the "-- " signature separator (its trailing space would not survive editors).

CONVERSATIONS: tuple[Conversation, ...] = (
    C("lea", "9d", "email", "Moulin Ferro 64 bloqué après 5 semaines",
      Msg("0", """
        Bonjour,

        J'ai acheté chez vous un moulin Ferro 64 il y a cinq semaines (commande CR-10231).
        Depuis deux jours il faisait un petit bruit de craquement en début de mouture, et ce
        matin il s'est complètement bloqué : le moteur force, ça sent un peu le chaud, et plus
        rien ne sort.

        Je l'ai débranché tout de suite. Est-ce que je peux l'ouvrir moi-même pour regarder,
        ou est-ce que ça annule la garantie ? Je n'ai pas envie de faire une bêtise.

        Merci d'avance pour votre aide,
        Léa

        --
        Léa Moreau
        06 12 45 78 90
        """),
      Act("40m", "alice", assign="alice", tags=("bug", "warranty"), priority="high"),
      Reply("1h", "alice", """
        Bonjour Léa,

        Merci de nous avoir écrit aussi vite, et bravo d'avoir débranché le moulin : c'est
        exactement le bon réflexe.

        Vous pouvez l'ouvrir sans risque pour la garantie. Videz la trémie, retirez les trois
        vis de la bague de réglage, puis soulevez la meule supérieure. Un bruit de craquement
        suivi d'un blocage vient très souvent d'un petit caillou resté dans les grains.

        Pourriez-vous nous envoyer une photo des meules, ainsi que le numéro de série (sous
        le moulin, commençant par F64-) ?

        {sig}
        """),
      Msg("3h", """
        Bonjour {alice},

        Vous aviez raison : il y avait un petit caillou coincé entre les meules ! Par contre
        la meule du bas est ébréchée à un endroit, je vous mets une photo.

        Le numéro de série est F64-2403-01187. Les grains venaient de chez vous, c'était le
        Brésil Cerrado (lot 24-118 sur le sachet).

        Léa
        """, quote=True, attach=("burr",)),
      Note("30m", "alice", """
        Meule inférieure ébréchée par un caillou. Normalement hors garantie (corps étranger),
        mais le caillou vient de notre Brésil lot 24-118 : on prend en charge le jeu de meules
        et on signale le lot à la torréfaction.
        """),
      Note("2h", "bob", """
        Meules 64 mm : 3 jeux en stock. Je peux en expédier un demain matin en Colissimo
        suivi. Lot 24-118 signalé à l'atelier, deux autres retours similaires ce mois-ci.
        """),
      Link("5m", "alice", "phone", "+33612457890",
           "number in the signature of her email about order CR-10231"),
      Reply("10m", "alice", """
        Bonjour Léa,

        Merci pour la photo. Le caillou venait de nos propres grains, donc nous prenons tout en
        charge : un jeu de meules neuf part demain matin en Colissimo suivi, sans frais.

        Le remplacement prend un quart d'heure : une notice illustrée sera dans le colis, et je
        reste disponible par mail ou par SMS à ce numéro si vous bloquez.

        {sig}
        """),
      Msg("20h", """
        Merci beaucoup, c'est très commercial de votre part !

        Je ne suis pas très bricoleuse, j'espère que j'y arriverai. Il faut un outil
        particulier ?
        """, quote=True),
      Reply("1h", "alice", """
        Bonjour Léa,

        Un simple tournevis Torx T20 suffit ; les vis sont parfois serrées, appuyez bien
        avant de tourner. Il y a aussi une vidéo de 4 minutes sur crema.example.com/ferro64.

        {sig}
        """),
      Msg("2d", "Bonjour c'est Léa Moreau, colis bien reçu. Les vis du haut sont hyper serrées, "
          "je ne veux pas les abîmer. Une astuce ?", via="sms", who="lea-mobile"),
      Reply("25m", "alice", "Bonjour Léa ! Moulin à plat sur la table, tournevis bien vertical "
            "et appuyez fort avant de tourner, d'un coup sec. Si ça résiste, un élastique entre "
            "la vis et le tournevis aide. {me}, Crema & Co.", via="sms"),
      Msg("1h", "Ça a marché, meules changées ! Par contre maintenant le café coule en 12 "
          "secondes, c'est de l'eau", via="sms", who="lea-mobile"),
      Reply("15m", "alice", "Normal après un changement de meules : il faut refaire le point "
            "zéro. Serrez jusqu'à ce que les meules frottent à peine, puis revenez de 2 "
            "graduations et ajustez de là. {me}", via="sms"),
      Msg("2h", "28 secondes pour 36 g, parfait !! Merci mille fois", via="sms",
          who="lea-mobile"),
      Msg("2d", """
        Re-bonjour,

        Dernière petite chose : depuis le remontage, le couvercle de la trémie ne se clipse
        plus, il tombe dès que je le touche. Je crois que j'ai tordu un ergot en forçant.
        C'est une pièce que vous vendez séparément ?

        Léa

        --
        Léa Moreau
        06 12 45 78 90
        """, subject="Couvercle de trémie Ferro 64"),
    ),
    C("antoine", "6d", "email", "INADMISSIBLE : 2e Lumen Duo reçue cassée (commande CR-10198)",
      Msg("0", """
        Bonjour,

        C'est la DEUXIÈME fois que je reçois une Lumen Duo cassée. La première avait le
        réservoir fendu, vous m'en avez renvoyé une autre, et celle-ci arrive avec le carton
        éventré et le porte-filtre tordu. À 1 490 €, je trouve ça inadmissible.

        J'ai attendu trois semaines, j'ai posé deux demi-journées pour réceptionner ces colis,
        et je n'ai toujours pas de machine. Je commence sérieusement à regretter de ne pas
        avoir acheté en magasin.

        J'attends une réponse rapide et une vraie solution, pas un énième échange.

        Antoine Girard
        """),
      Act("20m", "bob", assign="bob", tags=("shipping", "refund"), priority="urgent"),
      Reply("40m", "bob", """
        Bonjour Monsieur Girard,

        Je suis sincèrement désolé : deux machines abîmées de suite, c'est inacceptable et je
        comprends votre colère.

        Je vous propose deux solutions, à votre choix :
        1. une troisième Lumen Duo, contrôlée à la main par notre atelier et livrée par
           transporteur spécialisé sur rendez-vous ;
        2. le remboursement intégral, avec reprise de la machine chez vous à nos frais.

        Pourriez-vous m'envoyer une photo du carton ? Elle nous sert pour la réclamation
        auprès du transporteur.

        {sig}
        """),
      Msg("2h", """
        Je ne veux pas d'une troisième machine. Je veux être remboursé, et que quelqu'un vienne
        reprendre ce colis, je ne vais pas le porter au relais moi-même.

        Voilà la photo du carton.
        """, quote=True, attach=("parcel",)),
      Note("30m", "bob", """
        Deux colis endommagés sur le même trajet Lyon → Rennes : réclamation ouverte chez le
        transporteur (dossier R-88213). Remboursement au-dessus de 500 € : il faut une
        validation.
        """),
      Note("1h", "alice", "OK pour le remboursement intégral + reprise à domicile. Ajoute un "
           "bon d'achat de 50 € en geste commercial."),
      Reply("20m", "bob", """
        Bonjour Monsieur Girard,

        C'est noté : nous vous remboursons intégralement (1 490 €), et un transporteur passera
        reprendre la machine chez vous demain entre 8 h et 13 h. Vous n'avez rien à emballer,
        il apporte un carton adapté.

        Nous vous offrons aussi un bon d'achat de 50 €, valable un an, en dédommagement du
        temps perdu.

        {sig}
        """),
      Msg("1d", """
        Le transporteur n'est jamais venu. J'ai encore posé une demi-journée pour rien.
        C'est une blague ?
        """, quote=True),
      Reply("1h", "bob", """
        Bonjour Monsieur Girard,

        Je viens d'avoir le transporteur : le chauffeur n'avait pas l'enlèvement sur sa
        tournée. C'est une erreur de leur part, mais c'est à nous de vous en excuser.
        L'enlèvement est reprogrammé demain, avec un créneau de deux heures (9 h – 11 h) et un
        appel du chauffeur 30 minutes avant.

        {sig}
        """),
      Msg("1d", "Bon. Enlèvement fait ce matin. J'attends maintenant le remboursement.",
          quote=True),
      Reply("3h", "bob", """
        Bonjour Monsieur Girard,

        Le remboursement de 1 490 € a été émis aujourd'hui sur la carte utilisée pour la
        commande ; il apparaît sous 3 à 5 jours ouvrés selon les banques. Le bon d'achat de
        50 € vous a été envoyé par mail séparé.

        {sig}
        """),
      Msg("2d", """
        Toujours rien sur mon compte. Vous m'avez dit 3 à 5 jours, on y est.
        J'aimerais une preuve du remboursement (référence de l'opération), sinon je fais
        opposition auprès de ma banque.

        Antoine Girard
        """, quote=True),
    ),
    C("thomas", "21d", "email", "Devis : 6 machines + 3 moulins pour notre café (Lyon)",
      Msg("0", """
        Bonjour,

        Nous ouvrons le mois prochain un café-librairie à Lyon (1er arrondissement) et nous
        aimerions équiper le comptoir chez vous :
        - 6 Lumen Duo (dont une pour l'espace formation) ;
        - 3 moulins Ferro 64.

        Pourriez-vous nous faire un devis professionnel ? Les délais nous importent beaucoup :
        l'ouverture est prévue le 1er du mois prochain.

        Bien à vous,

        --
        Thomas Roux
        Gérant · Café des Arts
        14 rue des Capucins, 69001 Lyon
        04 78 27 11 09
        """),
      Act("1h", "bob", assign="bob", tags=("vip", "b2b")),
      Reply("2h", "bob", """
        Bonjour Monsieur Roux,

        Merci pour votre demande, et félicitations pour l'ouverture !

        Pour 6 Lumen Duo et 3 Ferro 64, nous pouvons vous proposer une remise professionnelle
        de 12 %, soit 9 316,56 € HT au total, avec une demi-journée de formation barista
        offerte sur place. Les machines sont en stock : livraison sous 8 à 10 jours ouvrés
        après l'acompte de 30 %.

        Le devis détaillé D-0412 est disponible dans votre espace professionnel.

        {sig}
        """),
      Msg("1d", """
        Merci pour la réactivité.

        Trois questions avant de signer :
        1. Les Lumen Duo peuvent-elles être raccordées au réseau d'eau (sans réservoir) ?
        2. Quelle garantie pour un usage professionnel, autour de 150 cafés par jour ?
        3. Pouvez-vous livrer sur palette avec hayon ? Notre rue est piétonne le matin.
        """, quote=True),
      Reply("3h", "bob", """
        Bonjour Monsieur Roux,

        1. Oui : un kit de raccordement (arrivée d'eau 3/8" et évacuation) est inclus pour
           les six machines, posé lors de la formation.
        2. En usage professionnel la garantie est de 12 mois pièces et main-d'œuvre, avec
           prêt d'une machine sous 48 h en cas de panne.
        3. Oui, livraison sur palette avec hayon, l'après-midi, sur rendez-vous.

        {sig}
        """),
      Msg("1d20h", """
        Parfait. Vous trouverez ci-joint notre bon de commande signé (BC-2025-044). L'acompte
        partira dès réception de la facture pro forma.

        Thomas
        """, quote=True, attach=("purchase-order",)),
      Note("30m", "bob", "Usage pro confirmé : garantie 12 mois seulement, Thomas est d'accord. "
           "Acompte 30 % = 3 354,56 € TTC. Facture pro forma envoyée par la compta."),
      Reply("1h", "bob", """
        Bonjour Monsieur Roux,

        Bon de commande bien reçu, merci ! La facture pro forma (acompte de 3 354,56 € TTC)
        vient de vous être envoyée par notre comptabilité. Dès réception du virement, nous
        réservons le transporteur.

        {sig}
        """),
      Msg("1d", "Virement de l'acompte fait ce matin. Bonne journée, Thomas", quote=True),
      Reply("4h", "bob", """
        Bonjour Monsieur Roux,

        Acompte reçu, merci. Vos deux palettes partent jeudi ; le transporteur vous appellera
        pour fixer le créneau de livraison. Notre formateur, Karim, vous contactera pour la
        demi-journée de formation.

        {sig}
        """),
      Msg("6d", """
        Bonjour,

        Livraison reçue, tout est installé, merci ! Un petit souci cependant : sur l'une des
        machines (n° LD-2405-00412), le manomètre de pression pompe ne revient pas à zéro
        quand la machine est à l'arrêt, il reste bloqué vers 2 bars.

        Thomas
        """, quote=True),
      Reply("2h", "bob", """
        Bonjour Monsieur Roux,

        C'est un défaut connu sur une petite série de manomètres : il n'affecte pas
        l'extraction, mais nous vous en envoyons un neuf dès aujourd'hui. Karim le posera lors
        de la formation si vous préférez ne pas y toucher.

        {sig}
        """, then="pending"),
      Msg("3d", """
        Manomètre reçu et posé par Karim pendant la formation, tout fonctionne. L'équipe est
        ravie, et l'inauguration a lieu samedi : vous êtes les bienvenus !

        Thomas
        """, quote=True),
      Reply("1h", "bob", """
        Bonjour Thomas,

        Merci pour l'invitation, nous essaierons de passer ! Très belle ouverture à toute
        l'équipe du Café des Arts.

        {sig}
        """, then="resolved"),
    ),
    C("camille", "12d", "email", "Facture au nom de ma société",
      Msg("0", """
        Bonjour,

        J'ai passé la commande CR-10249 (un Ferro Mini et deux paquets de café) depuis mon
        compte personnel, mais j'aurais besoin d'une facture au nom de ma société pour la
        passer en frais professionnels.

        Est-ce possible ?

        Camille Dubois
        """),
      Act("30m", "chloé", tags=("billing",)),
      Reply("3h", "chloé", """
        Bonjour Camille,

        Bien sûr. Pourriez-vous me donner la raison sociale, l'adresse de facturation et, si
        vous en avez un, le numéro de TVA intracommunautaire ?

        {sig}
        """),
      Msg("2h", """
        Merci ! Voici :
        Dubois Traduction EURL
        8 allée des Tilleuls, 35000 Rennes
        TVA FR 27 853 201 447

        Camille
        """, quote=True),
      Reply("1d", "chloé", """
        Bonjour Camille,

        Voilà qui est fait : la facture corrigée (FA-2025-0871) est disponible dans votre
        espace client, au nom de Dubois Traduction EURL. L'ancienne a été annulée.

        {sig}
        """, then="resolved"),
    ),
    C("sophie", "3d", "email", "Merci !",
      Msg("0", """
        Bonjour à toute l'équipe,

        Juste un petit mot pour vous dire merci. J'ai reçu ma Lumen Uno la semaine dernière, et
        la personne qui m'a conseillée au téléphone avant l'achat avait raison sur tout : le
        Ferro Mini suffit largement pour deux cafés par jour, et la buse vapeur est un bonheur.

        Mon premier latte art ressemble plus à une patate qu'à un cœur, mais ça viendra !

        Belle journée,
        Sophie

        --
        Sophie Laurent
        """),
      Reply("5h", "alice", """
        Bonjour Sophie,

        Quel plaisir de lire votre message, merci ! Je le transmets à toute l'équipe.

        Pour le cœur : lait bien froid, pichet rempli au tiers, et versez d'assez haut au début
        puis rapprochez-vous de la tasse à la fin. La patate est une étape obligée, promis.

        {sig}
        """, then="resolved"),
    ),
    C("elodie", "11d", "email", "Remboursement du kit détartrant retourné",
      Msg("0", """
        Bonjour,

        Je vous ai renvoyé le kit détartrant commandé par erreur (commande CR-10236) ; le suivi
        indique qu'il vous a été livré il y a cinq jours. Pouvez-vous me confirmer le
        remboursement ?

        Cordialement,
        Élodie Bernard
        """),
      Act("1h", "chloé", tags=("refund",)),
      Reply("1h", "chloé", """
        Bonjour Élodie,

        Nous avons bien reçu votre retour, merci. Le remboursement de 18,90 € a été effectué
        aujourd'hui sur votre moyen de paiement ; comptez quelques jours selon votre banque.

        {sig}
        """, then="resolved"),
      Msg("6d", """
        Bonjour,

        Presque une semaine plus tard, je n'ai toujours rien reçu sur mon compte. Pouvez-vous
        vérifier ?

        Élodie
        """, quote=True),
      Note("1h", "chloé", "Vérifié avec la compta : le remboursement n'est jamais parti, le "
           "retour avait été saisi sur la mauvaise commande. Relancé aujourd'hui, "
           "référence RB-20931."),
      Act("5m", "chloé", assign="chloé"),
    ),
    C("nicolas", "15d", "sms", None,
      Msg("0", "Bonjour, Nicolas Fournier, commande CR-10077. Pouvez vous m'envoyer la facture "
          "par mail a n.fournier@atelier-fournier.fr ? Merci"),
      Link("1h", "alice", "email", "n.fournier@atelier-fournier.fr",
           "address the customer gave by SMS for his invoice"),
      Reply("5m", "alice", """
        Bonjour Nicolas,

        Comme demandé par SMS, voici le lien vers votre facture CR-10077 :
        https://crema.example.com/factures/CR-10077 (valable 30 jours).

        {sig}
        """, via="email"),
      Msg("2h", """
        Merci ! Petite correction : la facture doit être au nom de l'Atelier Fournier SARL,
        pas à mon nom (même adresse). Je vous réponds depuis mon adresse perso, la
        messagerie du bureau est en panne ce soir.

        Nicolas
        """, via="email", who="nicolas-home", quote=True),
      Reply("20h", "alice", """
        Bonjour Nicolas,

        C'est corrigé : la facture est désormais au nom de l'Atelier Fournier SARL, au même
        lien que précédemment.

        {sig}
        """, via="email", to="nico.fournier@gmail.com", then="resolved"),
    ),
    C("margaux", "5d", "telegram", None,
      Msg("0", "Bonjour ! J'ai un abonnement café chez vous (1 kg par mois). Je pars trois "
          "semaines le mois prochain, est-ce que je peux le suspendre sans le résilier ?"),
      Msg("1m", contact=True),
      Reply("1h", "alice", "Bonjour Margaux ! Oui, bien sûr : vous pouvez le suspendre depuis "
            "votre espace client, ou je le fais pour vous. Quelles dates ?"),
      Msg("3h", "Bonjour, c'est Margaux (on parlait sur Telegram). Du 2 au 23 svp. Et a la reprise "
          "je peux passer sur l'Ethiopie Sidamo ?", via="sms"),
      Reply("40m", "alice", "C'est fait : pas de livraison du 2 au 23 le mois prochain, "
            "reprise avec l'Éthiopie Sidamo. Bonnes vacances ! {me}, Crema & Co.", via="sms",
            then="pending"),
    ),
    C("hugo", "4d", "telegram", None,
      Msg("0", "Salut, ma commande CR-10402 est marquée expédiée depuis 3 jours mais le suivi "
          "ne bouge plus du tout"),
      Msg("1m", contact=True),
      Reply("1h", "chloé", "Bonjour Hugo ! Merci pour le numéro, j'ai retrouvé votre commande. "
            "Le colis est resté bloqué au centre de tri de Gonesse, j'ai ouvert une "
            "réclamation : il devrait repartir aujourd'hui."),
      Msg("1d", "Reçu ce matin 👍 merci pour la relance !"),
      Act("30m", "chloé", status="resolved"),
    ),
    C("manon", "20h", "email", "Commande pour nos bureaux",
      Msg("0", html=MANON_HTML),
    ),
    C("baptiste", "4d", "email", "Fuite d'eau au niveau du groupe (Lumen Uno)",
      Msg("0", """
        Bonjour,

        Ma Lumen Uno (achetée il y a un an) fuit au niveau du groupe pendant l'extraction : de
        l'eau coule le long du porte-filtre et finit dans la grille. Le café reste bon mais
        il y a une flaque à chaque fois.

        Je suis joignable par téléphone si c'est plus simple.

        --
        Baptiste Lambert
        Tél. 06 45 12 98 70
        """),
      Act("1h", "alice", assign="alice", tags=("bug",)),
      Link("2m", "alice", "phone", "+33645129870", "number in the signature of his email"),
      Reply("3m", "alice", "Bonjour Baptiste, ici {me} de Crema & Co. au sujet de la fuite de "
            "votre Lumen Uno : pourriez-vous m'envoyer une photo du joint de groupe ? Merci !",
            via="sms", fail="21211: The 'To' number {to} is not a valid phone number."),
      Note("5m", "alice", "SMS refusé par Twilio (21211) : le numéro de sa signature doit "
           "contenir une faute de frappe. Je repasse par mail et je lui demande de vérifier."),
      Reply("5m", "alice", """
        Bonjour Baptiste,

        J'ai essayé de vous joindre par SMS, mais le numéro de votre signature semble
        incorrect. Pouvez-vous le vérifier ?

        En attendant : une fuite autour du porte-filtre vient presque toujours du joint de
        groupe, qui durcit avec le temps. Pourriez-vous regarder s'il est craquelé ou
        aplati ?

        {sig}
        """, via="email"),
      Msg("6h", """
        Oups, en effet : c'est le 06 45 12 89 70, j'ai inversé deux chiffres.

        J'ai regardé le joint, il est tout craquelé sur un côté, et il y a un peu de calcaire
        autour de la douchette.

        Baptiste
        """, quote=True),
      Reply("2h", "alice", """
        Bonjour Baptiste,

        Merci, c'est bien le joint. Nous vous envoyons gratuitement un joint neuf et une
        douchette (ils se changent ensemble), avec la notice. Livraison prévue d'ici deux
        jours ; je reviens vers vous à ce moment-là pour vérifier que tout est rentré dans
        l'ordre.

        {sig}
        """),
      Act("5m", "alice", status="snoozed", snooze="2d"),
    ),
    C("julien", "8d", "sms", None,
      Msg("0", "Bonjour, j'ai commandé un Ferro Mini il y a 10 jours (CR-10288) et toujours "
          "rien. Le suivi dit 'en attente de prise en charge' depuis une semaine. C'est "
          "normal ? Julien Lefèvre"),
      Reply("1h", "bob", "Bonjour Julien, toutes nos excuses : le Ferro Mini était en rupture "
            "chez notre fournisseur. Il part demain, vous recevrez le nouveau suivi par SMS. "
            "{me}, Crema & Co."),
      Msg("20m", "Ok merci pour la réponse rapide"),
      Reply("1d", "bob", "Votre Ferro Mini est parti : suivi Colissimo 6A23481729310, "
            "livraison prévue après-demain. Bonne dégustation ! {me}", then="resolved"),
    ),
    C("paul", "3h", "sms", None,
      Msg("0", "Bonsoir, la Lumen Uno est elle compatible avec les dosettes ESE ? Je n'ai pas "
          "encore de moulin. Merci"),
    ),
    C("fatima", "1d", "telegram", None,
      Msg("0", "Bonjour, le voyant orange de ma Lumen Uno clignote depuis hier. C'est le "
          "détartrage ? Comment on fait ?"),
      Reply("45m", "alice", "Bonjour Fatima ! Oui, c'est le rappel de détartrage. Videz le "
            "réservoir, mettez-y 500 ml d'eau avec un sachet de détartrant, puis maintenez le "
            "bouton vapeur 5 secondes : la machine fait le cycle toute seule (20 min)."),
      Msg("2h", "Merci ! Je n'ai pas de détartrant sous la main, je peux utiliser du vinaigre "
          "blanc ?"),
      Act("5m", "alice", assign="alice"),
    ),
    C("amelie", "2d", "email", "Carte cadeau jamais reçue",
      Msg("0", """
        Bonjour,

        J'ai acheté une carte cadeau de 100 € sur votre site le week-end dernier pour
        l'anniversaire de mon père (commande CR-10371). Elle devait être envoyée par mail à
        son adresse, mais il n'a rien reçu, même dans les indésirables, et l'anniversaire
        est samedi.

        Pouvez-vous me la renvoyer, ou me l'envoyer directement ?

        Merci,
        Amélie Chevalier
        """),
      Act("2h", "bob", assign="bob", tags=("billing",)),
    ),
    C("claire", "6h", "email", "Lumen Uno ou Lumen Duo pour débuter ?",
      Msg("0", """
        Bonjour,

        Je voudrais me mettre à l'espresso et j'hésite entre la Lumen Uno et la Lumen Duo.
        Nous buvons surtout des cappuccinos, deux le matin et parfois un l'après-midi.

        La Duo vaut-elle vraiment 800 € de plus pour un usage comme le nôtre ? Et quel moulin
        me conseillez-vous avec ?

        Merci pour vos conseils,
        Claire Rousseau
        """),
    ),
    C("jonas", "5d", "email", "Rechnung CR-10311 – USt-IdNr. fehlt (Reverse Charge)",
      Msg("0", """
        Guten Tag,

        für unsere Bestellung CR-10311 (2× Ferro 64 für unser Büro in Köln) haben wir eine
        Rechnung mit 20 % französischer Mehrwertsteuer erhalten. Als Unternehmen mit
        USt-IdNr. (DE 298 114 572) müsste die Rechnung im Reverse-Charge-Verfahren ohne
        Mehrwertsteuer ausgestellt werden.

        Könnten Sie uns bitte eine korrigierte Rechnung schicken und die zu viel gezahlte
        Steuer erstatten?

        Mit freundlichen Grüßen
        Jonas Becker

        --
        Jonas Becker
        Einkauf · Becker & Lang Architekten GmbH
        """),
      Act("3h", "chloé", tags=("billing",)),
      Msg("2d", """
        Guten Tag,

        gibt es hierzu schon einen Stand? Unsere Buchhaltung möchte den Monat abschließen.

        Danke und viele Grüße
        Jonas Becker
        """),
    ),
    C("anna", "24d", "email", "Mahlgrad Ferro 64 – Espresso läuft zu schnell",
      Msg("0", """
        Hallo,

        ich habe letzte Woche den Ferro 64 bekommen. Egal wie fein ich einstelle, der Espresso
        läuft in 15 Sekunden durch und schmeckt sauer. Mit meinem alten Mahlwerk hatte ich
        das Problem nicht. Mache ich etwas falsch?

        Viele Grüße
        Anna Schmidt
        """),
      Reply("2h", "bob", """
        Hallo Anna,

        danke für Ihre Nachricht! Der Ferro 64 wird ab Werk grob eingestellt. Drehen Sie den
        Ring im Uhrzeigersinn über die Markierung "0" hinaus, bis die Scheiben leicht
        schleifen, und gehen Sie dann zwei Striche zurück. Von dort aus finden Sie Ihren
        Mahlgrad in 25 bis 30 Sekunden.

        {sig}
        """),
      Msg("1d", """
        Danke, das war's! Jetzt 27 Sekunden und er schmeckt endlich schokoladig.

        Anna
        """, quote=True),
      Act("1h", "bob", status="resolved"),
    ),
    C("anna-tg", "3d", "telegram", None,
      Msg("0", "Hallo! Ich habe vor ein paar Wochen bei euch den Ferro 64 gekauft und damals per "
          "E-Mail super Hilfe bekommen. Jetzt möchte ich noch die Lumen Uno bestellen – gibt "
          "es für Bestandskunden den Bundle-Rabatt?"),
      Merge("30m", "bob", into="anna",
            reason="same name; she mentions her email exchange about the Ferro 64"),
      Reply("10m", "bob", "Hallo Anna, schön, wieder von Ihnen zu hören! Ja: mit dem Code "
            "BUNDLE10 bekommen Sie 10 % auf die Lumen Uno, da der Ferro 64 weniger als drei "
            "Monate alt ist."),
      Msg("1h", "Super, danke! Bestellung ist raus 😊"),
      Act("20m", "bob", status="resolved"),
    ),
    C("lukas", "7d", "email", "Lieferung nach Deutschland verspätet – CR-10265",
      Msg("0", """
        Hallo,

        meine Bestellung CR-10265 (Lumen Duo) wurde vor neun Tagen verschickt, aber die
        DHL-Sendungsverfolgung zeigt seit fünf Tagen nur "Die Sendung wurde im Start-Paketzentrum
        bearbeitet". Wissen Sie, was da los ist?

        Gruß
        Lukas Wagner
        """),
      Reply("4h", "chloé", """
        Hallo Lukas,

        das Paket wurde von unserem französischen Transporteur an DHL übergeben; solche
        Übergaben dauern leider manchmal einige Tage länger. Ich habe bei DHL nachgefragt und
        melde mich, sobald ich eine Antwort habe.

        {sig}
        """),
      Msg("2d", """
        Hallo,

        immer noch nichts, die Sendungsverfolgung steht jetzt seit einer Woche still. Langsam
        mache ich mir Sorgen, dass das Paket verloren ist.

        Lukas
        """, quote=True),
      Reply("3h", "chloé", """
        Hallo Lukas,

        ich habe einen Nachforschungsauftrag bei DHL eröffnet (Nr. 7730-118-522). DHL
        antwortet innerhalb von 48 Stunden. Falls das Paket bis dahin nicht auftaucht,
        schicken wir Ihnen sofort eine neue Maschine – Sie müssen nichts weiter tun.

        {sig}
        """),
      Act("2m", "chloé", assign="chloé", tags=("shipping",), status="snoozed", snooze="1d"),
    ),
    C("katrin", "17d", "telegram", None,
      Msg("0", "Hallo, welche Größe hat das Milchkännchen, 350 oder 600 ml? Ich mache meistens "
          "zwei Cappuccini gleichzeitig."),
      Reply("1h", "chloé", "Hallo Katrin! Für zwei Cappuccini nehmen Sie das 600-ml-Kännchen, "
            "etwa bis zur Unterkante der Ausgießnase füllen."),
      Msg("10m", "Danke!"),
      Act("10m", "chloé", status="resolved"),
    ),
    C("oliver", "6d", "email", "Ferro 64 retention – is 0.3 g normal?",
      Msg("0", """
        Hi there,

        Quick question about my new Ferro 64. When I weigh beans in and grounds out, I'm
        consistently about 0.3 g short (18.0 g in, 17.7 g out). Is that normal retention for
        this grinder, or is something stuck in the chute?

        Also, is it safe to use the bellows every time? I've read mixed opinions.

        Cheers,
        Oliver

        --
        Oliver Bennett
        Bristol, UK
        """),
      Reply("5h", "alice", """
        Hi Oliver,

        Thanks for weighing it so carefully! 0.2–0.4 g is normal for the Ferro 64 while the
        burrs are new; it usually settles around 0.1 g after a couple of kilos.

        The bellows are safe to use every time: two or three firm pumps after grinding
        push out most of what is left in the chute.

        {sig}
        """),
      Msg("1d", """
        Brilliant, thanks. One more: how often should I clean the burrs? I go through
        about 250 g a week, mostly medium roasts.
        """, quote=True),
      Reply("2h", "alice", """
        Hi Oliver,

        At 250 g a week, a brush-out every two weeks and a full clean (burrs out, brush and
        vacuum) every two or three months is plenty. Avoid water and rice; grinder cleaning
        tablets are fine once a month.

        Let us know if the retention doesn't settle down.

        {sig}
        """, then="pending"),
    ),
    C("emily", "10d", "email", "Warranty registration for Lumen Duo",
      Msg("0", """
        Hello,

        I received my Lumen Duo as a gift and would like to register it for the extended
        warranty, but the form on your website says "order number not found". I don't have the
        order number, as it was bought by my brother.

        What do you need from me?

        Kind regards,
        Emily Clarke
        Northwind Design Studio
        """),
      Reply("3h", "alice", """
        Hi Emily,

        No problem at all: we can register it from the serial number instead. Could you send us
        a photo of the label under the drip tray (it starts with LD-)?

        {sig}
        """),
      Msg("2m", """
        Thank you for your email. I am out of the office until next week with limited access
        to email. For urgent studio matters, please contact hello@northwind-design.co.uk.

        Emily Clarke
        """, subject="Automatic reply: Re: Warranty registration for Lumen Duo", auto=True),
      Msg("4d", """
        Hi {alice},

        Back from holiday! The serial number is LD-2402-00981.

        Emily
        """, quote=True),
      Reply("1h", "alice", """
        Hi Emily,

        All done: your Lumen Duo LD-2402-00981 is registered for the 3-year extended warranty,
        starting from the delivery date. Enjoy the machine!

        {sig}
        """, then="resolved"),
    ),
    C("james", "19d", "sms", None,
      Msg("0", "Hi, ordered the Ferro Mini last week, tracking says delivered but nothing in my "
          "letterbox. Order CR-10164. James O'Connor"),
      Reply("2h", "bob", "Hi James, sorry about that! An Post marked it 'delivered to "
            "neighbour' at 11:42 yesterday, could you check next door? If not, we'll send "
            "another. {me}, Crema & Co."),
      Msg("3h", "Found it at the neighbour's! Sorry for the hassle, thanks"),
      Act("5m", "bob", status="resolved"),
    ),
    C("james", "2d", "telegram", None,
      Msg("0", "Hi, it's James again (Ferro Mini, I texted you a few weeks ago), Telegram is "
          "easier for me. The handle came loose and the little grub screw fell out somewhere. "
          "Any chance of a spare?"),
      Msg("1m", contact=True),
      Reply("2h", "bob", "Hi James, found your order, thanks for sharing your number! A spare "
            "grub screw and the 2 mm hex key are in the post today. A drop of thread locker "
            "will keep it in place."),
      Act("1m", "bob", assign="bob", tags=("warranty",), status="pending"),
    ),
    C("priya", "1d12h", "email", "Charged twice for my bean subscription",
      Msg("0", """
        Hello,

        My bank statement shows two payments of €24.90 to Crema & Co. on the same day, both
        for my monthly bean subscription. I only have one subscription (and received one
        bag).

        Could you refund the duplicate payment, please?

        Thanks,
        Priya Patel
        """),
      Act("1h", "alice", assign="alice", tags=("billing", "refund"), priority="high"),
      Reply("30m", "alice", """
        Hi Priya,

        You're right, and I'm sorry: our payment provider retried a renewal that had in fact
        succeeded. I've refunded the duplicate €24.90 today; it will show on your statement
        within 3–5 working days.

        {sig}
        """),
      Msg("3h", """
        Thanks {alice}, but I've just been charged a THIRD time this morning, another €24.90.
        Can you please make sure this stops? I'm starting to worry about giving you my card
        details.

        Priya
        """, quote=True),
    ),
    C("michael", "28d", "email", "Do you ship to the US?",
      Msg("0", """
        Hi,

        Do you ship to the United States? I'm particularly interested in the Lumen Duo and
        the Ferro Mini, and in your beans.

        Thanks,
        Michael Turner
        Portland, OR
        """),
      Reply("6h", "chloé", """
        Hi Michael,

        We do ship beans and accessories (including the Ferro Mini) to the US, usually in
        5–7 days. The Lumen machines, however, are built for 230 V only, so we don't sell
        them outside Europe.

        {sig}
        """),
      Msg("1d", "Got it, thanks. I'll go for the Ferro Mini and two bags of the Ethiopia then.",
          quote=True),
      Act("1h", "chloé", status="resolved"),
    ),
    C("michael", "3d", "email", "Customs charge on my order CR-10390",
      Msg("0", """
        Hi,

        My order CR-10390 arrived today, but UPS asked me for $38.60 in duties and fees before
        handing it over. Your site says shipping to the US is "duties paid". What happened?

        Michael
        """),
      Reply("4h", "chloé", """
        Hi Michael,

        You're right, that order was shipped DDP and you should not have paid anything. If you
        send us the UPS receipt (or its reference), we'll refund the $38.60 straight away.

        {sig}
        """),
      Msg("1d", """
        Thanks. The UPS invoice reference is 1Z-FR-88412063, dated the day of delivery.

        Michael
        """, quote=True),
    ),
    C("grace", "14d", "telegram", None,
      Msg("0", "Hi! Is the 58 mm bottomless portafilter compatible with the Lumen Uno?"),
      Reply("40m", "alice", "Hi Grace! Yes, the Lumen Uno has a standard 58 mm group, so the "
            "bottomless portafilter fits. Great for spotting channeling!"),
      Msg("5m", "Ordered, thanks 🙏"),
      Act("2m", "alice", status="resolved"),
    ),
    C("kasia", "26d", "email", "Invoice for order CR-10043",
      Msg("0", """
        Hello,

        Could you send me a VAT invoice for order CR-10043? I need it for my employer's
        home-office allowance.

        Best regards,
        Katarzyna Nowak
        """),
      Reply("2h", "chloé", """
        Hello Katarzyna,

        Of course: your invoice is available at https://crema.example.com/invoices/CR-10043
        (the link stays valid for 30 days).

        {sig}
        """, then="resolved"),
    ),
    C("sven", "1d20h", "email", "Tamper size for Lumen Duo",
      Msg("0", """
        Hi,

        Which tamper size fits the Lumen Duo baskets exactly: 58 mm or 58.5 mm?

        Thanks,
        Sven
        """),
      Reply("1h", "alice", """
        Hi Sven,

        Our baskets are precision 58 mm baskets, so a 58.5 mm tamper is the snuggest fit.

        {sig}
        """, then="resolved"),
    ),
    C("mehmet", "27d", "email", "Lumen Duo steam wand leaking at the knob",
      Msg("0", """
        Hello,

        The steam knob on my Lumen Duo drips when the wand is closed, and some steam escapes
        around the knob while steaming. The machine is 14 months old.

        Regards,
        Mehmet Yılmaz
        """),
      Reply("3h", "bob", """
        Hello Mehmet,

        This is the steam valve seal, a wear part covered by the 2-year warranty. We're
        sending you a new seal and the tool to fit it (10 minutes, video included).

        {sig}
        """),
      Msg("2d", "Fitted the new seal, no more drips. Thank you!", quote=True),
      Act("30m", "bob", status="resolved"),
    ),
    C("lucia", "3d", "email", "Falta el cestillo doble en mi pedido CR-10355",
      Msg("0", """
        Hola,

        Ayer recibí mi Lumen Uno (pedido CR-10355), pero en la caja solo venía el cestillo
        simple; el doble no está, y es el que más voy a usar.

        ¿Me lo podéis enviar, por favor?

        Gracias,

        --
        Lucía Fernández
        Valencia
        """),
      Act("2h", "alice", assign="alice", tags=("shipping",)),
      Reply("5m", "alice", """
        Hola Lucía:

        Disculpa las molestias. Te enviamos hoy mismo el cestillo doble, sin coste, por
        mensajería urgente.

        {sig}
        """),
      Msg("1d", "¡Gracias! ¿Me podéis mandar el número de seguimiento?", quote=True),
    ),
    C("javier", "9d", "sms", None,
      Msg("0", "Hola, ¿enviáis a Canarias? Quiero pedir la Lumen Uno. Gracias"),
      Reply("1h", "chloé", "Hola Javier: sí, enviamos a Canarias en 5-7 días; el IGIC se paga "
            "a la entrega. {me}, Crema & Co."),
      Msg("30m", "Vale, gracias!"),
      Act("5m", "chloé", status="resolved"),
    ),
    C("carmen", "13d", "email", "Molienda para cafetera italiana",
      Msg("0", """
        Hola,

        Quiero comprar el café Colombia para mi cafetera italiana. ¿Qué molienda me
        recomendáis? ¿Lo podéis moler vosotros?

        Un saludo,
        Carmen Ortega
        Sevilla
        """),
      Reply("3h", "chloé", """
        Hola Carmen:

        Sí, lo molemos para ti: al hacer el pedido elige "molido – cafetera italiana" (una
        molienda media-fina, un poco más gruesa que para espresso).

        {sig}
        """),
      Msg("2h", "¡Muchas gracias!", quote=True),
      Act("10m", "chloé", status="resolved"),
    ),
    C("carmen-tg", "4d", "telegram", None,
      Msg("0", "Hola, es mi primer pedido con vosotros: ¿el café Colombia viene en grano o "
          "molido? Vivo en Barcelona, ¿cuánto tarda en llegar?"),
      Merge("20m", "chloé", into="carmen", reason="same name: Carmen Ortega"),
      Unmerge("10m", "chloé"),
      Note("2m", "chloé", "Fusión deshecha: esta Carmen vive en Barcelona y es su primer "
           "pedido; la de email es de Sevilla. Mismo nombre, otra persona."),
      Reply("5m", "chloé", "¡Hola Carmen! Viene en grano, pero al pedir puedes elegir la "
            "molienda. A Barcelona llega en 2-3 días laborables.", then="pending"),
    ),
    C("ken", "22d", "email", "日本での使用について（電圧）",
      Msg("0", """
        Crema & Co. ご担当者様

        はじめまして。東京在住の佐藤と申します。
        Lumen Duo の購入を検討しておりますが、日本の電圧は100V（50Hz）です。
        このモデルは100Vでも使用できますでしょうか。変圧器が必要な場合は、推奨の容量を
        教えていただけますと助かります。

        また、日本への送料と関税についても教えてください。

        よろしくお願いいたします。

        --
        佐藤 健
        """),
      Reply("8h", "chloé", """
        佐藤様 / Dear Mr Sato,

        Thank you for your interest! The Lumen Duo is designed for 220–240 V only. It can run
        from a step-up transformer, but with its two boilers it needs at least 3,000 VA, and
        a transformer is not covered by our warranty, so we honestly would not recommend it.

        Our beans and the Ferro Mini hand grinder ship to Japan in about 7 days (€29); import
        duties are charged on delivery.

        {sig}
        """),
      Msg("1d", """
        ご丁寧にありがとうございます。
        変圧器は大きすぎるので、今回はLumen Duoは見送ります。
        100V対応モデルが出ましたら、ぜひ教えてください。

        佐藤
        """, quote=True),
      Act("30m", "chloé", status="resolved"),
    ),
    C("misaki", "1d", "telegram", None,
      Msg("0", "こんにちは！先週注文したコーヒー豆（注文番号 CR-10377）がまだ届いていません。"
          "追跡番号を教えていただけますか？"),
      Reply("3h", "alice", "こんにちは Misaki! Your beans left Paris 5 days ago with La Poste "
            "(tracking LX 204 118 395 FR). They should reach Japan Post in the next few days."),
      Msg("20h", "ありがとうございます！追跡を見たら、税関で止まっているみたいです…"
          "何か書類が必要ですか？"),
      Reply("now-12m", "alice", "Japanese customs sometimes hold parcels of coffee for 2–4 days. "
            "No documents are needed from you: the invoice is on the parcel. If it is still "
            "held on Monday, tell us and we'll call them.", queued=True),
    ),
    C("giulia", "2d", "email", "Reso Lumen Uno – diritto di recesso",
      Msg("0", """
        Buongiorno,

        ho ricevuto la Lumen Uno dieci giorni fa (ordine CR-10344) ma purtroppo è troppo
        grande per la mia cucina. La macchina è stata usata due volte e l'imballo è integro.

        Vorrei esercitare il diritto di recesso: come devo procedere per la restituzione e il
        rimborso?

        Cordiali saluti,

        --
        Giulia Romano
        Torino
        """),
      Act("3h", "chloé", assign="chloé", tags=("refund",)),
      Reply("10m", "chloé", """
        Buongiorno Giulia,

        nessun problema: le abbiamo inviato via email un'etichetta di reso prepagata. Basta
        stamparla, applicarla sull'imballo originale e consegnare il pacco a un punto BRT.
        Il rimborso viene emesso entro 5 giorni dalla ricezione.

        {sig}
        """),
      Msg("20h", """
        Grazie! Ho consegnato il pacco stamattina, il codice di tracciamento BRT è
        0581 2276 4410 9.

        Giulia
        """, quote=True),
    ),
    C("marco", "18d", "telegram", None,
      Msg("0", "Ciao! Posso mettere in pausa l'abbonamento al caffè per tutto il mese prossimo?"),
      Reply("1h", "alice", "Ciao Marco! Fatto: nessuna consegna il mese prossimo, poi si riparte "
            "con la stessa miscela."),
      Msg("10m", "Perfetto, grazie mille!"),
      Act("1m", "alice", status="resolved"),
    ),
    C("sanne", "8d", "email", "Adres wijzigen / change of delivery address CR-10301",
      Msg("0", """
        Goedemiddag,

        Ik ben net verhuisd en zie dat mijn bestelling CR-10301 nog naar mijn oude adres gaat.
        Sorry, in English: could you change the delivery address to Prinsengracht 412-2,
        1016 JB Amsterdam? The order has not shipped yet according to my account.

        Met vriendelijke groet,
        Sanne de Vries
        """),
      Reply("1h", "bob", """
        Hi Sanne,

        Caught just in time: the address of CR-10301 is now Prinsengracht 412-2, 1016 JB
        Amsterdam, and it ships tomorrow.

        {sig}
        """),
      Msg("30m", "Dank je wel! Thanks a lot.", quote=True),
      Act("5m", "bob", status="resolved"),
    ),
    C("joao", "5d", "email", "Garantia da Lumen Duo em Portugal",
      Msg("0", """
        Boa tarde,

        Estou a pensar comprar a Lumen Duo e vivo em Lisboa. A garantia de 2 anos também é
        válida em Portugal? Em caso de avaria, tenho de enviar a máquina para França?

        Obrigado,
        João Silva
        """),
      Reply("1d", "bob", """
        Olá João,

        Thank you for your message (in English, I'm afraid my Portuguese is not good enough!).
        Yes, the 2-year warranty applies everywhere in the EU. If the machine fails, we collect
        it from your home at our expense and repair it in Lyon, usually within 10 days.

        {sig}
        """, then="pending"),
    ),
    C("nobody", "2d3h", "email", None,
      Msg("0", raw=HEADERLESS_MAIL),
    ),
)


# --------------------------------------------------------------------------------------------
# Building


@dataclass(slots=True)
class _Thread:
    """What one conversation has produced so far."""

    ticket_id: int | None = None
    email_ids: list[str] = field(default_factory=list)  # Message-IDs, oldest first
    subject: str | None = None  # of the last email
    last_reply: tuple[datetime, str] | None = None  # our last email: when, and its text


def _delta(spec: str) -> timedelta:
    parts = re.findall(r"(\d+)([dhm])", spec)
    if spec != "0" and "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"demo script: not a delay: {spec!r}")
    units = {"d": "days", "h": "hours", "m": "minutes"}
    return sum((timedelta(**{units[u]: int(n)}) for n, u in parts), timedelta())


def _text(source: str) -> str:
    lines = inspect.cleandoc(source).splitlines()
    return "\n".join("-- " if line == "--" else line for line in lines)


def _attribution(lang: str, when: datetime, who: str) -> str:
    """The line mail clients write above a quote, in the customer's language."""
    day, clock = f"{when.day:02d}/{when.month:02d}/{when.year}", f"{when:%H:%M}"
    return {
        "fr": f"Le {day} à {clock}, {who} a écrit :",
        "de": f"Am {when.day:02d}.{when.month:02d}.{when.year} um {clock} schrieb {who}:",
        "es": f"El {day}, a las {clock}, {who} escribió:",
        "it": f"Il giorno {day} alle {clock} {who} ha scritto:",
        "ja": f"{when.year}年{when.month}月{when.day}日 {clock} {who}:",
        "pt": f"Em {day} às {clock}, {who} escreveu:",
        "nl": f"Op {when.day:02d}-{when.month:02d}-{when.year} om {clock} schreef {who}:",
    }.get(lang, f"On {when:%a}, {when.day} {when:%b} {when.year} at {clock}, {who} wrote:")


def _quoted(lang: str, when: datetime, text: str) -> str:
    who = f"{SUPPORT_NAME} <{SUPPORT_ADDRESS}>"
    body = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    return f"{_attribution(lang, when, who)}\n{body}"


def _display(agent: str) -> str:
    return agent[:1].upper() + agent[1:]


class _Builder:
    def __init__(self, store: Store, now: datetime, agent: str, seed: int) -> None:
        self.store = store
        self.now = now
        self.rng = random.Random(seed)
        self.clock = now
        # Who plays the script's agents: the person running the demo plays "alice", so that
        # their own queue ("mine") has something in it; a teammate of that name swaps roles.
        self.agents = {alias: alias for alias in TEAM}
        if agent in self.agents:
            self.agents[agent] = "alice"
        self.agents["alice"] = agent
        self.customers: dict[str, int] = {}  # Person key -> the customer its first message made
        self.chat_message_ids: dict[int, int] = {}
        self.update_id = self.rng.randrange(180_000_000, 190_000_000)
        self.options = IngestOptions(region=REGION)

    # ---- the schedule ---------------------------------------------------------------------

    def schedule(self) -> list[tuple[datetime, int, int, Conversation, Step]]:
        """Every step of every conversation with its time, in the order it happens.

        Conversations older than a day start in the morning; jitter only shortens delays
        (by up to 15 %, at most MAX_JITTER), so no seed can push a step past `now`, reorder a
        conversation or move a reply out of the working day the script gave it.
        """
        timeline = []
        for index, conversation in enumerate(CONVERSATIONS):
            nominal = self.now - _delta(conversation.ago)
            recent = _delta(conversation.ago) < timedelta(days=1)
            moment = nominal if recent else self.morning_before(nominal)
            for position, step in enumerate(conversation.steps):
                if step.after.startswith("now-"):
                    anchored = self.now - _delta(step.after.removeprefix("now-"))
                    if anchored < nominal:
                        raise ValueError(f"demo script: step {position} of {conversation.who!r}"
                                         " is anchored before the step it follows")
                    nominal = moment = anchored
                else:
                    delay = _delta(step.after)
                    nominal += delay
                    moment += delay - min(delay * 0.15, MAX_JITTER) * self.rng.random()
                if nominal > self.now:
                    raise ValueError(
                        f"demo script: step {position} of {conversation.who!r} falls after now"
                    )
                timeline.append((moment, index, position, conversation, step))
        timeline.sort(key=lambda item: item[:3])
        return timeline

    def morning_before(self, moment: datetime) -> datetime:
        """A time between 07:00 and 11:00 UTC, on `moment`'s day or the one before, not after it:
        customers mostly write in the morning, and agents then answer in working hours."""
        start = moment.replace(hour=7, minute=0, second=0, microsecond=0)
        start += timedelta(minutes=self.rng.randrange(0, 240))
        return start if start <= moment else start - timedelta(days=1)

    # ---- playing it -----------------------------------------------------------------------

    def run(self) -> None:
        threads = [_Thread() for _ in CONVERSATIONS]
        batch: list[tuple[_Thread, str, InboundMessage]] = []
        with use_clock(lambda: self.clock):
            for moment, index, _position, conversation, step in self.schedule():
                thread = threads[index]
                if isinstance(step, Msg):
                    message = self.inbound(conversation, thread, step, moment)
                    if batch and (
                        batch[0][2].connector != message.connector
                        or moment - (batch[0][2].sent_at or moment) > POLL_INTERVAL
                    ):
                        self.flush(batch)
                    batch.append((thread, step.who or conversation.who, message))
                    continue
                self.flush(batch)
                self.clock = moment
                self.store.write(lambda s, c=conversation, t=thread, st=step, m=moment:
                                 self.act(s, c, t, st, m))
            self.flush(batch)

    def flush(self, batch: list[tuple[_Thread, str, InboundMessage]]) -> None:
        """Ingest what one connector fetched together, as `desk sync` would."""
        if not batch:
            return
        last = max(to_store(m.sent_at) or self.clock for _t, _p, m in batch)
        self.clock = last + timedelta(seconds=self.rng.randrange(5, 90))  # the polling delay
        ingest(self.store, [message for _t, _p, message in batch], options=self.options)
        with self.store.session() as session:
            for thread, person, message in batch:
                row = session.execute(
                    select(Message.ticket_id, Message.customer_id).where(
                        Message.connector == message.connector,
                        Message.provider_id == message.provider_id,
                    )
                ).one()
                if row.ticket_id is not None:
                    thread.ticket_id = row.ticket_id
                self.customers.setdefault(person, row.customer_id)
        batch.clear()

    def act(
        self, session: Session, conversation: Conversation, thread: _Thread, step: AgentStep,
        moment: datetime,
    ) -> None:
        agent = self.agents[step.agent]
        if isinstance(step, Link | Merge | Unmerge):
            self.act_on_customer(session, conversation, step, agent)
            return
        if thread.ticket_id is None:
            raise ValueError(f"demo script: {conversation.who!r} has no ticket before {step!r}")
        ticket_id = thread.ticket_id
        tickets.mark_read(session, ticket_id)  # an agent reads a ticket before acting on it
        if isinstance(step, Reply):
            self.reply(session, conversation, thread, step, agent, moment)
        elif isinstance(step, Note):
            add_note(session, ticket_id, self.render(step.text, "en"), agent=agent)
        elif isinstance(step, Act):
            if step.assign is not None:
                tickets.assign(session, ticket_id, self.agents[step.assign], actor=agent)
            if step.tags:
                tickets.add_tags(session, ticket_id, step.tags, actor=agent)
            if step.priority is not None:
                tickets.set_priority(session, ticket_id, step.priority, actor=agent)
            if step.status is not None:
                until = self.now + _delta(step.snooze) if step.snooze else None
                tickets.set_status(session, ticket_id, step.status, actor=agent,
                                   snooze_until=until)

    def act_on_customer(
        self, session: Session, conversation: Conversation, step: Link | Merge | Unmerge,
        agent: str,
    ) -> None:
        own = self.customers[conversation.who]
        if isinstance(step, Link):
            identities.link_identity(
                session, identities.live_customer(session, own), step.kind, step.value,
                actor=agent, region=REGION, reason=step.reason,
            )
        elif isinstance(step, Merge):
            identities.merge(session, self.customers[step.into], own, actor=agent,
                             reason=step.reason)
        else:
            identities.unmerge(session, own, actor=agent)

    def reply(
        self, session: Session, conversation: Conversation, thread: _Thread, step: Reply,
        agent: str, moment: datetime,
    ) -> None:
        person = PEOPLE[conversation.who]
        text = self.render(step.text, person.lang, agent)
        message = queue_reply(
            session, thread.ticket_id, text, agent=agent,  # type: ignore[arg-type]
            channel=step.via or conversation.via, to=step.to,
            connectors_by_channel=CONNECTORS, then_status=step.then,
        )
        if step.queued:
            return
        claim_for_sending(session, message.id)  # type: ignore[arg-type]
        if step.fail:
            reason = step.fail.replace("{to}", message.recipient or "")
            record_failure(session, message.id, reason, permanent=True)  # type: ignore[arg-type]
            return
        receipt = self.receipt(message, moment)
        record_sent(session, message.id, receipt)  # type: ignore[arg-type]
        if message.channel == "email":
            thread.email_ids.append(receipt.provider_id)
            thread.subject = message.subject
            thread.last_reply = (moment, text)

    def receipt(self, message: Message, moment: datetime) -> Receipt:
        if message.channel == "email":
            return Receipt(f"{self.token(24)}.{moment:%Y%m%d%H%M%S}@{MAIL_DOMAIN}")
        if message.channel == "sms":
            return Receipt("SM" + self.token(32), status="queued")
        chat = int(message.recipient or 0)
        return Receipt(f"{chat}:{self.next_chat_message(chat)}", sent_at=moment)

    # ---- inbound messages, shaped like the connectors' ------------------------------------

    def inbound(
        self, conversation: Conversation, thread: _Thread, step: Msg, moment: datetime
    ) -> InboundMessage:
        if step.raw is not None:
            return self.unparsed(step.raw, moment)
        person = PEOPLE[step.who or conversation.who]
        channel = step.via or conversation.via
        text = self.render(step.text, person.lang)
        if step.quote and thread.last_reply is not None:
            when, quoted = thread.last_reply
            text = f"{text}\n\n{_quoted(person.lang, when, quoted)}"
        if channel == "email":
            return self.email(conversation, thread, step, person, text, moment)
        if channel == "sms":
            return self.sms(person, text, moment)
        return self.telegram(person, step, text, moment)

    def email(
        self, conversation: Conversation, thread: _Thread, step: Msg, person: Person, text: str,
        moment: datetime,
    ) -> InboundMessage:
        if person.email is None:
            raise ValueError(f"demo script: {person.name} has no email address")
        domain = person.email.rpartition("@")[2]
        provider_id = f"{self.token(20)}@mail.{domain}"
        if thread.email_ids:
            last = thread.subject or conversation.subject or ""
            subject = step.subject or (last if last.lower().startswith("re:") else f"Re: {last}")
            in_reply_to, references = thread.email_ids[-1], thread.email_ids[-10:]
        else:
            subject = step.subject or conversation.subject
            in_reply_to, references = None, []
        attachments = [ATTACHMENTS[key]() for key in step.attach]
        if step.html is not None:
            text = html_to_text(step.html)
        message = InboundMessage(
            connector=CONNECTORS["email"], channel="email", provider_id=provider_id,
            sender=person.email, sender_name=person.name, recipients=[SUPPORT_ADDRESS],
            subject=subject, text=text, html=step.html, sent_at=moment,
            in_reply_to=in_reply_to, references=references, attachments=attachments,
            flags={FLAG_AUTO_REPLY} if step.auto else set(),
        )
        message.raw = _rfc822(message)
        thread.email_ids.append(provider_id)
        thread.subject = subject
        return message

    def sms(self, person: Person, text: str, moment: datetime) -> InboundMessage:
        if person.phone is None:
            raise ValueError(f"demo script: {person.name} has no phone")
        sid = "SM" + self.token(32)
        payload = {
            "account_sid": TWILIO_ACCOUNT, "api_version": "2010-04-01", "body": text,
            "date_created": format_datetime(moment), "date_sent": format_datetime(moment),
            "date_updated": format_datetime(moment), "direction": "inbound",
            "error_code": None, "error_message": None, "from": person.phone,
            "messaging_service_sid": None, "num_media": "0",
            "num_segments": str(sms_segments(text)[1]), "price": None,
            "price_unit": "USD", "sid": sid, "status": "received", "to": SMS_NUMBER,
            "uri": f"/2010-04-01/Accounts/{TWILIO_ACCOUNT}/Messages/{sid}.json",
        }  # fmt: skip
        return InboundMessage(
            connector=CONNECTORS["sms"], channel="sms", provider_id=sid, sender=person.phone,
            recipients=[SMS_NUMBER], text=text, sent_at=moment,
            raw=json.dumps(payload, ensure_ascii=False).encode(),
        )

    def telegram(self, person: Person, step: Msg, text: str, moment: datetime) -> InboundMessage:
        if person.telegram is None:
            raise ValueError(f"demo script: {person.name} has no Telegram account")
        chat = person.telegram
        message_id = self.next_chat_message(chat)
        first, _, last = person.name.partition(" ")
        user = {"id": chat, "is_bot": False, "first_name": first, "last_name": last,
                "username": person.username, "language_code": person.lang}
        body: dict[str, object] = {
            "message_id": message_id, "from": user, "date": int(moment.timestamp()),
            "chat": {"id": chat, "first_name": first, "last_name": last,
                     "username": person.username, "type": "private"},
        }
        evidence = []
        if step.contact:
            if person.phone is None:
                raise ValueError(f"demo script: {person.name} has no phone to share")
            body["contact"] = {"phone_number": person.phone, "first_name": first,
                               "last_name": last, "user_id": chat}
            text = f"Shared contact: {person.name}, {identities.display_phone(person.phone)}"
            evidence = [IdentityEvidence("phone", person.phone, display=person.name)]
        else:
            body["text"] = text
        self.update_id += 1
        update = {"update_id": self.update_id, "message": body}
        return InboundMessage(
            connector=CONNECTORS["telegram"], channel="telegram",
            provider_id=f"{chat}:{message_id}", sender=str(chat), sender_name=person.name,
            sender_display=f"@{person.username}", text=text, sent_at=moment,
            raw=json.dumps(update, ensure_ascii=False).encode(), evidence=evidence,
            extra={"chat_id": chat},
        )

    def unparsed(self, raw: bytes, moment: datetime) -> InboundMessage:
        # What the email connector hands over for mail it cannot read: no sender, the raw
        # bytes as text, and an id made from their hash since there is no Message-ID.
        return InboundMessage(
            connector=CONNECTORS["email"], channel="email",
            provider_id="sha256:" + hashlib.sha256(raw).hexdigest(), sender="",
            text=raw.decode("utf-8", "replace").replace("\r\n", "\n"), sent_at=moment, raw=raw,
            flags={FLAG_UNPARSED},
        )

    # ---- small helpers --------------------------------------------------------------------

    def render(self, source: str, lang: str, agent: str | None = None) -> str:
        """A script text with its placeholders filled in."""
        text = _text(source)
        if agent is not None:
            text = text.replace("{sig}", SIGN_OFF.get(lang, SIGN_OFF["en"]))
            text = text.replace("{me}", _display(agent))
        for alias, real in self.agents.items():
            text = text.replace("{" + alias + "}", _display(real))
        return text

    def token(self, length: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))

    def next_chat_message(self, chat: int) -> int:
        # Telegram numbers a private chat's messages in one sequence, both directions.
        current = self.chat_message_ids.get(chat) or self.rng.randrange(40, 400)
        self.chat_message_ids[chat] = current + 1
        return current + 1


def _rfc822(message: InboundMessage) -> bytes:
    """The message as the customer's mail server delivered it, for the raw-source view."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = formataddr((message.sender_name or "", message.sender))
    mail["To"] = formataddr((SUPPORT_NAME, SUPPORT_ADDRESS))
    mail["Subject"] = message.subject or ""
    mail["Date"] = format_datetime(message.sent_at)  # type: ignore[arg-type]
    mail["Message-ID"] = f"<{message.provider_id}>"
    if message.in_reply_to:
        mail["In-Reply-To"] = f"<{message.in_reply_to}>"
        mail["References"] = " ".join(f"<{ref}>" for ref in message.references)
    if FLAG_AUTO_REPLY in message.flags:
        mail["Auto-Submitted"] = "auto-replied"
    if message.html is not None:
        mail.set_content(message.html, subtype="html")
    else:
        mail.set_content(message.text)
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        mail.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                            filename=attachment.filename)
    return mail.as_bytes()


def build_demo(
    store: Store, *, now: datetime | None = None, agent: str = "alice", seed: int = 7
) -> dict[str, int]:
    """Fill an empty store with Crema & Co.'s last month of support; returns `summary()`.

    Deterministic for a given `now`, `agent` and `seed`. While it runs, desk's own clock reads
    the script's time (see `desk.timeutil.use_clock`), so do not run other desk work in the same
    process at the same time.
    """
    now = to_store(now) or utcnow()
    with store.session() as session:
        if session.execute(select(func.count()).select_from(Message)).scalar_one():
            raise ValueError("the store already holds messages: the demo needs an empty store")
    _Builder(store, now, agent, seed).run()
    with store.session() as session:
        return summary(session)
