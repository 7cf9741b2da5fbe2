"""A local Bot API server speaking the shapes desk's Telegram connector uses: getMe,
getUpdates (offset, limit, long-poll timeout), sendMessage, getFile, file downloads, and error
bodies with `parameters.retry_after`. The real python-telegram-bot talks to it via `api_base`.
Tests queue updates and errors through its `state`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token"
BOT = {"id": 123456, "is_bot": True, "first_name": "Desk", "username": "desk_test_bot"}


@dataclass
class State:
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    send_errors: list[dict[str, Any]] = field(default_factory=list)  # next sendMessage answers
    confirmed_up_to: int = 0
    update_ids: Any = field(default_factory=lambda: itertools.count(1000))
    message_ids: Any = field(default_factory=lambda: itertools.count(1))
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def push(self, message: dict[str, Any], *, edited: bool = False) -> dict[str, Any]:
        async with self.changed:
            update = {"update_id": next(self.update_ids),
                      "edited_message" if edited else "message": message}
            self.updates.append(update)
            self.changed.notify_all()
        return update

    def message(self, user: dict[str, Any], text: str | None = None, *,
                chat: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        found = {"message_id": next(self.message_ids), "date": int(time.time()),
                 "chat": chat or {"id": user["id"], "type": "private",
                                  "first_name": user["first_name"]},
                 "from": user, **fields}
        if text is not None:
            found["text"] = text
        return found


def make_app(state: State) -> web.Application:
    app = web.Application()

    def ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    def error(code: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=code)

    async def params(request: web.Request) -> dict[str, Any]:
        found: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                found.update(await request.json())
            else:
                found.update({k: v for k, v in (await request.post()).items()
                              if isinstance(v, str)})
        return found

    async def method(request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return error(401, "Unauthorized")
        name, p = request.match_info["method"].lower(), await params(request)
        if name == "getme":
            return ok(BOT)
        if name == "getupdates":
            offset = int(p.get("offset") or 0)
            limit, timeout = int(p.get("limit", 100)), float(p.get("timeout", 0))
            async with state.changed:
                if offset:  # confirms every update before it, as Telegram does
                    state.confirmed_up_to = max(state.confirmed_up_to, offset - 1)
                    state.updates[:] = [u for u in state.updates if u["update_id"] >= offset]
                if not state.updates and timeout:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            state.changed.wait_for(lambda: bool(state.updates)), timeout)
                return ok(state.updates[:limit])
        if name == "sendmessage":
            if state.send_errors:
                failure = state.send_errors.pop(0)
                return error(failure["error_code"], failure["description"],
                             **failure.get("parameters", {}))
            if not p.get("text"):
                return error(400, "Bad Request: message text is empty")
            chat_id = int(p["chat_id"])
            sent = {"message_id": next(state.message_ids), "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private"},
                    "from": {k: BOT[k] for k in ("id", "is_bot", "first_name", "username")},
                    "text": p["text"]}
            if p.get("reply_parameters"):
                reply = json.loads(p["reply_parameters"])
                sent["reply_to_message"] = {"message_id": reply["message_id"],
                                            "date": sent["date"], "chat": sent["chat"]}
            state.sent.append(sent)
            return ok(sent)
        if name == "getfile":
            file_id = p["file_id"]
            if file_id not in state.files:
                return error(400, "Bad Request: invalid file_id")
            return ok({"file_id": file_id, "file_unique_id": f"u-{file_id}",
                       "file_size": len(state.files[file_id]), "file_path": f"photos/{file_id}"})
        if name in ("deletewebhook", "close", "logout"):
            return ok(True)
        return error(404, "Not Found")

    async def download(request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != TOKEN:
            return web.Response(status=401)
        file_id = request.match_info["path"].rpartition("/")[2]
        if file_id not in state.files:
            return web.Response(status=404)
        return web.Response(body=state.files[file_id])

    app.router.add_route("*", "/bot{token}/{method}", method)
    app.router.add_get("/file/bot{token}/{path:.+}", download)
    return app


async def serve(state: State) -> tuple[web.AppRunner, str]:
    """Start the server on a free loopback port; returns the runner and its api_base."""
    from peers import serve_app

    return await serve_app(make_app(state))
