"""A local stand-in for Slack: the Web API (``/api/<method>``) and response URLs, on loopback.

It records everything the bot sends so tests can assert on the real payloads, and it can be told
to answer a method with an error or a 429 to exercise the bot's handling.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Call:
    path: str
    method: str  # Web API method, or "respond"
    headers: dict[str, str]
    payload: dict[str, Any]


@dataclass
class FakeSlack:
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    overrides: dict[str, Callable[[dict[str, Any]], web.Response | None]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # conversations.info answers; scopes the token "has" (auth.test's x-oauth-scopes header)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    scopes: str = "commands,usergroups:read,chat:write,chat:write.public,channels:read,groups:read"
    # channel → ts → the message as last posted or updated
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    base_url: str = ""
    sockets: list[web.WebSocketResponse] = field(default_factory=list)  # Socket Mode connections
    respond_failures: list[int] = field(default_factory=list)  # HTTP statuses for the next response-URL posts
    # A slow Slack: seconds a Web API method takes to answer (its effect is immediate)
    delays: dict[str, float] = field(default_factory=dict)
    _next_ts: int = 1
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeSlack:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    def new_response_url(self) -> str:
        return f"{self.base_url}/respond/{uuid.uuid4().hex}"

    async def _record(self, call: Call) -> None:
        assert self._changed is not None
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        payload: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.content_type == "application/json":
            payload.update(await request.json())
        elif request.method == "POST":
            payload.update(await request.post())
        await self._record(Call(request.path, method, dict(request.headers), payload))
        response = self._answer(method, payload)
        if self.delays.get(method):  # done at once, answered late: what a slow Slack looks like
            await asyncio.sleep(self.delays[method])
        return response

    def _answer(self, method: str, payload: dict[str, Any]) -> web.Response:
        override = self.overrides.get(method)
        if override is not None:
            response = override(payload)
            if response is not None:
                return response
        if method == "usergroups.users.list":
            group = str(payload.get("usergroup"))
            if group not in self.usergroups:
                return web.json_response({"ok": False, "error": "no_such_subteam"})
            return web.json_response({"ok": True, "users": self.usergroups[group]})
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T0TEST01", "team": "pgct"},
                headers={"x-oauth-scopes": self.scopes},
            )
        if method == "apps.connections.open":
            return web.json_response({"ok": True, "url": self.base_url.replace("http://", "ws://") + "/socket"})
        if method == "conversations.info":
            channel_id = str(payload.get("channel"))
            if channel_id not in self.channels:
                return web.json_response({"ok": False, "error": "channel_not_found"})
            return web.json_response({"ok": True, "channel": {"id": channel_id, **self.channels[channel_id]}})
        channel = str(payload.get("channel"))
        if method == "chat.postMessage":
            ts = f"1700000000.{self._next_ts:06d}"
            self._next_ts += 1
            self.messages.setdefault(channel, {})[ts] = _decoded(payload)
            return web.json_response({"ok": True, "ts": ts, "channel": channel})
        if method == "chat.update":
            ts = str(payload.get("ts"))
            if ts not in self.messages.get(channel, {}):
                return web.json_response({"ok": False, "error": "message_not_found"})
            self.messages[channel][ts] = _decoded(payload)
            return web.json_response({"ok": True, "ts": ts, "channel": channel})
        return web.json_response({"ok": True, "ts": "1700000000.000100", "channel": payload.get("channel")})

    async def _respond(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.text())
        if self.respond_failures:
            status = self.respond_failures.pop(0)
            await self._record(Call(request.path, "respond.failed", dict(request.headers), payload))
            return web.Response(status=status, text="failure injected by the test")
        await self._record(Call(request.path, "respond", dict(request.headers), payload))
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """Slack's Socket Mode server: hello, then envelopes out and acknowledgements back."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0TEST01"}})
        await self._record(Call("/socket", "socket.connected", dict(request.headers), {}))
        self.sockets.append(ws)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await self._record(Call("/socket", "socket.ack", {}, json.loads(message.data)))
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        envelope_id = uuid.uuid4().hex
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind == "slash_commands",
            }
        )
        return envelope_id

    def acked(self, envelope_id: str) -> bool:
        return any(c.payload.get("envelope_id") == envelope_id for c in self.api_calls("socket.ack"))

    def api_calls(self, method: str, channel: str | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.method == method and (channel is None or c.payload.get("channel") == channel)
        ]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Messages in a channel as they stand now (after updates), oldest first."""
        return list(self.messages.get(channel, {}).values())

    def responses_to(self, response_url: str) -> list[dict[str, Any]]:
        path = response_url.removeprefix(self.base_url)
        return [c.payload for c in self.calls if c.method == "respond" and c.path == path]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked whenever a request arrives)."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            while not (value := predicate()):
                await self._changed.wait()
            return value

    async def wait_for_response(self, response_url: str, timeout: float = 5.0) -> dict[str, Any]:
        responses = await self.wait_for(lambda: self.responses_to(response_url), timeout)
        return responses[0]  # type: ignore[no-any-return]


def _decoded(payload: dict[str, Any]) -> dict[str, Any]:
    """Form-encoded calls carry blocks as a JSON string; tests want them as data."""
    message = dict(payload)
    if isinstance(message.get("blocks"), str):
        message["blocks"] = json.loads(message["blocks"])
    return message
