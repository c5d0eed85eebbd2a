"""Sending one message to one channel: email over SMTP, a signed JSON webhook, a chat incoming webhook.

Each sender raises :class:`ChannelError` with a reason a person can act on; the caller decides about retries.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import orjson

from crossdock import __version__
from crossdock.alerts.messages import chat_payload, plain_text
from crossdock.config.models import EmailChannel, SlackChannel, WebhookChannel
from crossdock.connectors.webhook import sign_timestamped

log = logging.getLogger("crossdock.alerts")

Channel = EmailChannel | WebhookChannel | SlackChannel

USER_AGENT = f"crossdock/{__version__} (alerts)"
#: characters of a refusing server's answer kept in the reason
ANSWER_CHARS = 200


class ChannelError(Exception):
    """A message could not be delivered; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def send(channel: Channel, subject: str, message: dict[str, Any], session: aiohttp.ClientSession) -> None:
    """Deliver ``message`` through ``channel``, or raise :class:`ChannelError`."""
    if isinstance(channel, EmailChannel):
        await asyncio.to_thread(send_email, channel, subject, plain_text(message))
    elif isinstance(channel, WebhookChannel):
        body = orjson.dumps({"subject": subject, **message})
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **channel.headers}
        if channel.hmac_secret:
            headers[channel.signature_header] = sign_timestamped(channel.hmac_secret, body, int(time.time()))
        await _post(session, channel.url, body, headers, channel.timeout)
    else:
        body = orjson.dumps(chat_payload({"title": subject, **{k: v for k, v in message.items() if k != "title"}}))
        await _post(
            session, channel.url, body, {"Content-Type": "application/json", "User-Agent": USER_AGENT}, channel.timeout
        )


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    try:
        async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status >= 300:
                answer = (await resp.text(errors="replace"))[:ANSWER_CHARS].strip()
                raise ChannelError(f"HTTP {resp.status} from the receiver" + (f": {answer}" if answer else ""))
    except TimeoutError:
        raise ChannelError(f"no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise ChannelError(f"cannot reach the receiver: {exc}") from None


def send_email(channel: EmailChannel, subject: str, body: str) -> None:
    """One email over SMTP (blocking: run it in a thread). TLS certificates are checked against the host name."""
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = channel.from_
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=channel.from_.rpartition("@")[2] or None)
    mail["User-Agent"] = USER_AGENT
    mail.set_content(body)
    context = ssl.create_default_context()
    where = f"{channel.host}:{channel.effective_port}"
    try:
        smtp: smtplib.SMTP
        if channel.security == "tls":
            smtp = smtplib.SMTP_SSL(channel.host, channel.effective_port, timeout=channel.timeout, context=context)
        else:
            smtp = smtplib.SMTP(channel.host, channel.effective_port, timeout=channel.timeout)
        with smtp:
            if channel.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise ChannelError(
                        f"the SMTP server at {where} does not offer STARTTLS; set security: tls (port 465) or, "
                        "for a relay you trust on your own network, security: none"
                    )
                smtp.starttls(context=context)
            if channel.username:
                smtp.login(channel.username, channel.password or "")
            refused = smtp.send_message(mail)
    except ChannelError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(f"the SMTP server at {where} refused the login: {_smtp_reply(exc)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(f"the SMTP server at {where} refused every recipient: {', '.join(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        raise ChannelError(f"the SMTP server at {where} answered {_smtp_reply(exc)}") from None
    except (TimeoutError, smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise ChannelError(f"cannot send through {where}: {exc or type(exc).__name__}") from None
    if refused:
        # the others have it: trying again would send them a second copy
        log.warning("alert email through %s: refused for %s, sent to the rest", where, ", ".join(refused))


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {text}".strip()
