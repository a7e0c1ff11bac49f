"""The fake gateway websocket: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME and dispatches."""

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakediscord import payloads
from tests.fakediscord.errors import FakeDiscordError
from tests.fakediscord.models import EventKind
from tests.fakediscord.world import World

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS = 0, 1, 2, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11


@dataclass
class Session:
    """One identified bot session; it outlives its websocket so the bot can RESUME it."""

    id: str
    number: int
    shard: list[int] | None
    intents: int
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    resumable: bool = True
    ready: bool = False
    missed: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Gateway:
    """Serves `GET /gateway` websockets; dispatches go to the newest identified session."""

    def __init__(self, world: World, token: str, heartbeat_interval: float) -> None:
        self.world = world
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.url = ""
        self.sessions: list[Session] = []
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def current(self) -> Session | None:
        live = [s for s in self.sessions if s.resumable]
        return live[-1] if live else None

    @property
    def connected(self) -> bool:
        current = self.current
        return current is not None and current.ready and current.ws is not None and not current.ws.closed

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: Session | None = None
        try:
            await ws.send_str(
                json.dumps({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval * 1000}})
            )
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(frame.data)
                except ValueError:
                    log.error("FAKE DISCORD: gateway frame is not JSON: %.200r", frame.data)
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                session = await self._on_frame(ws, payload, session)
        finally:
            self._sockets.discard(ws)
            self._on_closed(ws, session)
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: dict[str, Any], session: Session | None
    ) -> Session | None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == HEARTBEAT:
            await ws.send_str(json.dumps({"op": HEARTBEAT_ACK}))
        elif op == IDENTIFY:
            return await self._identify(ws, data)
        elif op == RESUME:
            return await self._resume(ws, data)
        elif op == REQUEST_MEMBERS and session is not None:
            await self._send_members(session, data)
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        if data.get("token") != self.token:
            log.warning("fake gateway: IDENTIFY with a wrong token")
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        session = Session(
            secrets.token_hex(16), len(self.sessions) + 1, data.get("shard"), data.get("intents", 0)
        )
        session.ws = ws
        self._supersede()
        self.sessions.append(session)
        async with session.lock:  # nothing may slip in between READY and the guilds
            await self._write(session, "READY", self._ready(session))
            for guild_id in self.world.guilds:
                await self._write(session, "GUILD_CREATE", self.guild_payload(guild_id))
            session.ready = True
        self.world.record(EventKind.IDENTIFY, detail=session.id)
        log.info("fake gateway: session %d identified (%s)", session.number, session.id)
        return session

    def _supersede(self) -> None:
        """A new IDENTIFY means the bot restarted: older sessions can no longer be resumed."""
        for old in self.sessions:
            old.resumable = False
            if old.missed:
                log.warning(
                    "fake gateway: %d events for session %d were never delivered", len(old.missed), old.number
                )
                self.world.record(
                    EventKind.FAULT, detail=f"{len(old.missed)} events lost with session {old.number}"
                )
                old.missed = []

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = next((s for s in self.sessions if s.id == data.get("session_id")), None)
        if session is None or not session.resumable or data.get("token") != self.token:
            await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
            return None
        async with session.lock:  # replay in order before anything new goes out
            session.ws = ws
            missed, session.missed = session.missed, []
            for frame in missed:
                await ws.send_str(json.dumps(frame))
            await self._write(session, "RESUMED", {})
        self.world.record(EventKind.RESUME, detail=session.id)
        log.info("fake gateway: session %d resumed, replayed %d events", session.number, len(missed))
        return session

    def _on_closed(self, ws: web.WebSocketResponse, session: Session | None) -> None:
        if session is None or session.ws is not ws:
            return
        # discord.py's own close races a 4000 against its 1000, so the code cannot tell a restart
        # from a dropped connection: the session stays resumable until a new IDENTIFY supersedes it.
        session.ws = None
        self.world.record(EventKind.SESSION_CLOSED, detail=f"{session.id} code={ws.close_code}")
        log.info("fake gateway: session %d socket closed with %s", session.number, ws.close_code)

    async def _send_members(self, session: Session, data: dict[str, Any]) -> None:
        guild_id = int(data["guild_id"])
        members = [payloads.member(m) for m in self.world.guild_members(guild_id)]
        chunk = {"guild_id": str(guild_id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._send(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _ready(self, session: Session) -> dict[str, Any]:
        bot = payloads.user(self.world.bot_user) | {"verified": True, "mfa_enabled": False}
        ready: dict[str, Any] = {
            "v": 10,
            "user": bot,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.world.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "application": {"id": str(self.world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        return ready

    def guild_payload(self, guild_id: int) -> dict[str, Any]:
        w = self.world
        return payloads.guild(
            w.guild(guild_id), w.guild_roles(guild_id), w.guild_channels(guild_id), w.guild_members(guild_id)
        )

    async def _send(self, session: Session, event: str, data: dict[str, Any]) -> None:
        async with session.lock:
            await self._write(session, event, data)

    async def _write(self, session: Session, event: str, data: dict[str, Any]) -> None:
        """Number and send one dispatch (caller holds the session's lock); queue it while disconnected."""
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        if session.ws is None or session.ws.closed:
            session.missed.append(frame)
            return
        await session.ws.send_str(json.dumps(frame))

    # -- used by the test-facing API -----------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the bot, or queue it for the bot's RESUME while its socket is down."""
        session = self.current
        if session is None:
            raise FakeDiscordError(f"no bot session to send {event} to; await fake.wait_connected() first")
        await self._send(session, event, data)

    async def dispatch_if_connected(self, event: str, data: dict[str, Any]) -> None:
        """Send an event the bot would see but can live without (e.g. THREAD_CREATE)."""
        if self.current is not None:
            await self._send(self.current, event, data)

    async def disconnect(self, code: int = 4000, resumable: bool = True) -> None:
        """Close the bot's socket from the server side, as Discord does on its own restarts."""
        session = self.current
        if session is None or session.ws is None:
            return
        session.resumable = resumable
        await session.ws.close(code=code)

    async def invalidate(self) -> None:
        """Tell the bot its session is gone (op 9, not resumable): it must IDENTIFY again."""
        session = self.current
        if session is None or session.ws is None:
            return
        session.resumable = False
        await session.ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))

    async def reconnect(self) -> None:
        """Ask the bot to reconnect and resume (op 7)."""
        session = self.current
        if session is not None and session.ws is not None:
            await session.ws.send_str(json.dumps({"op": RECONNECT, "d": None}))

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001)
