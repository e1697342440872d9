"""The framework floor: the least Bolt app that answers ``/pgconn list <role>``.

Ack-only function, the work in a lazy listener (``process_before_response=True``), one pooled
query, a plain-text answer through the response URL. No parsing beyond a split, no roles, no
escaping, no Block Kit: whatever the real bot spends beyond this is its own cost.

    python -m bench.floor_app PORT DSN SIGNING_SECRET SLACK_API_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiohttp import web
from psycopg_pool import AsyncConnectionPool
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

QUERY = """
SELECT pid, datname, application_name, client_addr, state, backend_start, state_change
  FROM pg_stat_activity WHERE usename = %s ORDER BY backend_start
"""


async def main(port: int, dsn: str, secret: str, api_url: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open()

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token="xoxb-floor")

    app = AsyncApp(
        client=AsyncWebClient(base_url=api_url),
        signing_secret=secret,
        authorize=authorize,
        process_before_response=True,
    )

    async def ack_only(ack: Any) -> None:
        await ack()

    async def answer(body: dict[str, Any], respond: Any) -> None:
        role = [*str(body.get("text") or "").split(), "", ""][1]
        async with pool.connection() as conn:
            rows = await (await conn.execute(QUERY, (role,))).fetchall()
        await respond(text="\n".join(" ".join(str(v) for v in row) for row in rows) or "none")

    app.command("/pgconn")(ack=ack_only, lazy=[answer])

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", health)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
