"""The daily digest through the real bot: at its time the housekeeper of one of two replicas posts
it to the digest channel, once."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import message_text


async def test_the_digest_is_posted_once_by_one_of_two_replicas(start_approval_bot: Any) -> None:
    # 00:00 UTC has always passed today: the digest is due at once.
    first = await start_approval_bot(digest_channel="C0DIGEST", digest_time="00:00")
    second = await start_approval_bot(digest_channel="C0DIGEST", digest_time="00:00")
    posted = await first.slack.wait_for(lambda: first.slack.channel_messages("C0DIGEST"), timeout=10)
    text = message_text(posted[0])
    assert "pgconn-bot daily digest" in text and "No role hit its connection limit." in text, text
    for bot in (first, second):  # more rounds of both housekeepers: still one
        await bot.server.runtime.housekeeper.run_once()
    assert len(first.slack.channel_messages("C0DIGEST")) == 1
