"""A local server speaking the Twilio REST shapes desk's SMS connector uses: the Messages list
(To and DateSent> filters, paging through a relative next_page_uri), create, fetch, media
lists and media content, and error bodies `{"code", "message", "more_info", "status"}`, behind
HTTP Basic auth. The real `twilio` client talks to it via `api_base`."""

from __future__ import annotations

import base64
import email.utils
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

ACCOUNT = "AC" + "1" * 32
TOKEN = "twilio-test-token"
NUMBER = "+15555550100"


@dataclass
class State:
    messages: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    create_errors: list[tuple[int, int, str]] = field(default_factory=list)  # status, code
    created: list[dict[str, Any]] = field(default_factory=list)
    list_calls: int = 0
    counter: Any = field(default_factory=lambda: itertools.count(1))

    def sid(self, prefix: str = "SM") -> str:
        return f"{prefix}{next(self.counter):032x}"

    def inbound(self, sender: str, body: str, sent: datetime, *,
                media: list[tuple[str, bytes]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        sid = self.sid()
        record = _record(sid, sender, NUMBER, body, "received", "inbound", sent)
        record["num_media"] = str(len(media))
        self.media[sid] = [(self.sid("ME"), kind, data) for kind, data in media]
        self.messages.append(record)
        return record


def _record(sid: str, sender: str, to: str, body: str, status: str, direction: str,
            sent: datetime) -> dict[str, Any]:
    stamp = email.utils.format_datetime(sent.astimezone(UTC))
    return {
        "sid": sid, "account_sid": ACCOUNT, "from": sender, "to": to, "body": body,
        "status": status, "direction": direction, "num_segments": "1", "num_media": "0",
        "price": None, "price_unit": "USD", "error_code": None, "error_message": None,
        "date_created": stamp, "date_updated": stamp, "date_sent": stamp,
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}/Media.json"},
    }


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}",
                              "status": status}, status=status)


def _authorized(request: web.Request) -> bool:
    expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    return request.headers.get("Authorization") == expected


def make_app(state: State) -> web.Application:
    app = web.Application()
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Messages"

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not _authorized(request):
            return _error(401, 20003, "Authenticate")
        return await handler(request)

    app.middlewares.append(auth)

    async def listing(request: web.Request) -> web.Response:
        state.list_calls += 1
        query = request.query
        found = [m for m in state.messages if not query.get("To") or m["to"] == query["To"]]
        if query.get("DateSent>"):
            since = datetime.strptime(query["DateSent>"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC)
            found = [m for m in found
                     if email.utils.parsedate_to_datetime(m["date_sent"]) >= since]
        found.sort(key=lambda m: (email.utils.parsedate_to_datetime(m["date_sent"]), m["sid"]),
                   reverse=True)  # newest first, as Twilio lists them
        size, page = int(query.get("PageSize", 50)), int(query.get("Page", 0))
        chunk = found[page * size : (page + 1) * size]
        more = (page + 1) * size < len(found)
        rest = urlencode([(k, v) for k, v in query.items() if k not in ("Page", "PageToken")])
        next_uri = f"{base}.json?{rest}&Page={page + 1}&PageToken=PA{page + 1}" if more else None
        return web.json_response({
            "messages": chunk, "page": page, "page_size": size, "start": page * size,
            "end": page * size + len(chunk), "uri": str(request.rel_url),
            "first_page_uri": f"{base}.json?{rest}&Page=0", "next_page_uri": next_uri,
            "previous_page_uri": None,
        })

    async def create(request: web.Request) -> web.Response:
        form = await request.post()
        if state.create_errors:
            status, code, message = state.create_errors.pop(0)
            return _error(status, code, message)
        if not form.get("To"):
            return _error(400, 21604, "A 'To' phone number is required.")
        record = _record(state.sid(), str(form["From"]), str(form["To"]), str(form["Body"]),
                         "queued", "outbound-api", datetime.now(UTC))
        state.created.append(record)
        state.messages.append(record)
        return web.json_response(record, status=201)

    async def fetch(request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        for record in state.messages:
            if record["sid"] == sid:
                return web.json_response(record)
        return _error(404, 20404, f"The requested resource {request.path} was not found")

    async def media_list(request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        items = [{"sid": media_sid, "account_sid": ACCOUNT, "parent_sid": sid,
                  "content_type": kind, "date_created": None, "date_updated": None,
                  "uri": f"{base}/{sid}/Media/{media_sid}.json"}
                 for media_sid, kind, _data in state.media.get(sid, [])]
        return web.json_response({"media_list": items, "page": 0, "page_size": 50,
                                  "next_page_uri": None, "uri": str(request.rel_url)})

    async def media_content(request: web.Request) -> web.Response:
        sid, media_sid = request.match_info["sid"], request.match_info["media"]
        for found_sid, kind, data in state.media.get(sid, []):
            if found_sid == media_sid:
                return web.Response(body=data, content_type=kind)
        return _error(404, 20404, "not found")

    app.router.add_get(f"{base}.json", listing)
    app.router.add_post(f"{base}.json", create)
    app.router.add_get(f"{base}/{{sid}}.json", fetch)
    app.router.add_get(f"{base}/{{sid}}/Media.json", media_list)
    app.router.add_get(f"{base}/{{sid}}/Media/{{media}}", media_content)
    return app


async def serve(state: State) -> tuple[web.AppRunner, str]:
    """Start the server on a free loopback port; returns the runner and its api_base."""
    from peers import serve_app

    return await serve_app(make_app(state))
