"""The fake's REST API v10: the routes discord.py calls for commands, interactions, messages, DMs and threads."""

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakediscord import errors, limits, payloads, schema, strict
from tests.fakediscord.bodies import MessageBody, read_body
from tests.fakediscord.errors import ApiError, RateLimited
from tests.fakediscord.gateway import Gateway
from tests.fakediscord.interactions import InteractionKind, InteractionRecord
from tests.fakediscord.models import (
    EPHEMERAL,
    LOADING,
    Callback,
    ChannelKind,
    EventKind,
    FakeChannel,
    Message,
    RegisteredCommand,
)
from tests.fakediscord.world import World

log = logging.getLogger(__name__)

API = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with `Content-Type: application/json` exactly: discord.py parses nothing else as JSON."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


@dataclass
class Fault:
    """A test-injected error for the next `times` requests whose method and path match."""

    method: str
    path_contains: str
    error: ApiError
    times: int = 1


@dataclass
class RestOptions:
    """How strict the fake is: the 3 s acknowledgement deadline (None: not enforced) and token lifetime."""

    token: str
    ack_deadline: float | None = None
    token_lifetime: float = 15 * 60


@dataclass
class Interactions:
    """Every interaction the fake sent, by id and by token."""

    by_id: dict[int, InteractionRecord] = field(default_factory=dict)
    by_token: dict[str, InteractionRecord] = field(default_factory=dict)

    def add(self, record: InteractionRecord) -> None:
        self.by_id[record.id] = record
        self.by_token[record.token] = record


class Rest:
    """Route handlers over the shared World; register with `add_to(app)`."""

    def __init__(
        self, world: World, gateway: Gateway, interactions: Interactions, options: RestOptions
    ) -> None:
        self.world = world
        self.gateway = gateway
        self.interactions = interactions
        self.options = options
        self.faults: list[Fault] = []
        self.unexpected: list[str] = []

    def add_to(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        app.router.add_routes(self._routes())
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.get_attachment)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)

    def _routes(self) -> list[web.RouteDef]:
        r = [
            ("GET", "/users/@me", self.get_me),
            ("GET", "/users/{user_id}", self.get_user),
            ("POST", "/users/@me/channels", self.create_dm),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.webhook_execute),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.webhook_get),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.webhook_edit),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.webhook_delete),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.get_history),
            ("POST", "/channels/{channel_id}/messages", self.create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.thread_from_message),
            ("POST", "/channels/{channel_id}/threads", self.thread_without_message),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.get_roles),
            ("GET", "/guilds/{guild_id}/members", self.get_members),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
        ]
        return [web.route(method, API + path, handler) for method, path, handler in r]

    # -- plumbing ------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        injected = False
        try:
            self._check_documented(request)
            self._check_auth(request)
            injected = True
            self._inject_fault(request)
            injected = False
            return await handler(request)
        except ApiError as exc:
            if strict.is_refusal(exc) and not injected:
                self.world.strict.refusals.append(f"{request.method} {request.path}: {exc}")
            if exc.status >= 500:
                log.warning("fake discord: answering %s %s with %s", request.method, request.path, exc)
            self.world.record(EventKind.FAULT, detail=f"{request.method} {request.path}: {exc}")
            response = json_response(exc.body(), exc.status)
            if isinstance(exc, RateLimited):
                response.headers.update(exc.headers())
            return response
        except web.HTTPNotFound:
            return self._unknown_route(request)
        except web.HTTPMethodNotAllowed:
            return self._unknown_route(request)
        except Exception as exc:
            # A bug in the fake, not a Discord answer: fail the test loudly (4xx so webhooks don't retry).
            log.exception("FAKE DISCORD: internal error on %s %s", request.method, request.path)
            self.unexpected.append(f"{request.method} {request.path_qs} raised {exc!r}")
            return json_response({"message": f"fake discord internal error: {exc!r}", "code": 0}, 400)

    def _check_documented(self, request: web.Request) -> None:
        """Every API route the fake serves must be one Discord documents (the vendored OpenAPI spec)."""
        if not request.path.startswith(API):
            return
        if schema.validator().operation(request.method, request.path[len(API) :]) is None:
            self.world.strict.undocumented.append(f"{request.method} {request.path}")
            raise web.HTTPNotFound()
        self.world.strict.requests += 1

    async def _body(self, request: web.Request) -> MessageBody:
        """The request body, validated against its documented schema as Discord would (400 50035)."""
        body = await read_body(request)
        self._validate(request, body.payload)
        return body

    def _validate(self, request: web.Request, payload: Any) -> None:
        try:
            schema.validator().validate(request.method, request.path[len(API) :], payload)
        except ApiError as exc:
            self.world.strict.schema_failures.append(f"{request.method} {request.path}: {exc}")
            raise
        self.world.strict.bodies += 1

    def _check_auth(self, request: web.Request) -> None:
        path = request.path
        if not path.startswith(API) or path.startswith((f"{API}/webhooks/", f"{API}/interactions/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.options.token}":
            raise errors.unauthorized()

    def _inject_fault(self, request: web.Request) -> None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fault.path_contains in request.path:
                fault.times -= 1
                raise fault.error

    def _unknown_route(self, request: web.Request) -> web.Response:
        route = f"{request.method} {request.path_qs}"
        self.unexpected.append(route)
        self.world.record(EventKind.UNKNOWN_ROUTE, detail=route)
        log.error("FAKE DISCORD: UNKNOWN ROUTE %s — the fake does not implement it", route)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    # -- identity and commands -----------------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response(payloads.user(self.world.bot_user) | {"verified": True, "mfa_enabled": False})

    async def get_user(self, request: web.Request) -> web.Response:
        found = self.world.users.get(int(request.match_info["user_id"]))
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(payloads.user(found))

    async def get_application(self, request: web.Request) -> web.Response:
        w = self.world
        return json_response(
            {
                "id": str(w.application_id),
                "name": w.bot_user.name,
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": payloads.user(w.bot_user),
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "bot": payloads.user(w.bot_user),
                "interactions_endpoint_url": None,
            }
        )

    async def get_gateway(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.gateway.url, "shards": 1, "session_start_limit": limit})

    def _scope(self, request: web.Request) -> int | None:
        if int(request.match_info["app_id"]) != self.world.application_id:
            raise ApiError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        return self.world.guild(int(guild_id)).id

    async def get_commands(self, request: web.Request) -> web.Response:
        return json_response([c.raw for c in self.world.commands.get(self._scope(request), [])])

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        body = json.loads(await request.read())
        self._validate(request, body)
        for command in body:
            if (problem := limits.check_command(command)) is not None:
                raise problem
        registered = [self._register(command, scope) for command in body]
        self.world.commands[scope] = registered
        self.world.record(EventKind.COMMANDS_SYNCED, detail=f"{len(registered)} commands, guild={scope}")
        return json_response([c.raw for c in registered])

    def _register(self, command: dict[str, Any], guild_id: int | None) -> RegisteredCommand:
        previous = next((c for c in self.world.commands.get(guild_id, []) if c.name == command["name"]), None)
        command_id = previous.id if previous else self.world.ids.next()
        raw = {
            "id": str(command_id),
            "application_id": str(self.world.application_id),
            "version": str(self.world.ids.next()),
            "type": command.get("type", 1),
            "description": command.get("description", ""),
            "options": command.get("options", []),
            "default_member_permissions": command.get("default_member_permissions"),
            "dm_permission": command.get("dm_permission", True),
            "nsfw": command.get("nsfw", False),
        } | {k: v for k, v in command.items() if k not in ("id",)}
        if raw["default_member_permissions"] is not None:
            raw["default_member_permissions"] = str(raw["default_member_permissions"])  # a string, as Discord
        if guild_id is not None:
            raw["guild_id"] = str(guild_id)
        return RegisteredCommand(
            command_id,
            raw["name"],
            raw["type"],
            raw["description"],
            raw["options"] or [],
            guild_id,
            raw["default_member_permissions"],
            raw,
        )

    # -- interaction callbacks -----------------------------------------------------------------

    async def interaction_callback(self, request: web.Request) -> web.Response:
        received = time.monotonic()
        record = self.interactions.by_id.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["token"]:
            raise errors.unknown_interaction()
        body = await self._body(request)
        deadline = self.options.ack_deadline
        if record.expired or (deadline is not None and self.world.clock.now() - record.issued_at > deadline):
            raise errors.unknown_interaction()
        if record.callback is not None:
            raise errors.already_acknowledged()
        kind = int(body.payload.get("type", 0))
        data = body.payload.get("data")
        message = self._apply_callback(record, kind, MessageBody(data or {}, body.files))
        callback = Callback(
            record.id, kind, data, received, received - record.sent_at, message.id if message else None
        )
        record.callback = callback
        self.world.record(EventKind.CALLBACK, callback=callback, interaction_id=record.id, message=message)
        return json_response(self._callback_answer(record, kind, message))

    def _apply_callback(self, record: InteractionRecord, kind: int, body: MessageBody) -> Message | None:
        if kind == 4:
            return self._response_message(record, body, flags=0)
        if kind == 5:
            return self._response_message(record, MessageBody({}), flags=LOADING | _flags(body) & EPHEMERAL)
        if kind in (6, 7) and record.kind in (InteractionKind.COMPONENT, InteractionKind.MODAL_SUBMIT):
            return self._update_source(record, body if kind == 7 else None)
        if kind == 9 and record.kind in (InteractionKind.COMMAND, InteractionKind.COMPONENT):
            limits.check_modal(body.payload)
            record.modal = body.payload
            return None
        if kind == 8 and record.kind is InteractionKind.AUTOCOMPLETE:
            limits.check_choices(body.payload)
            return None
        raise errors.invalid_form(
            "type", f"callback type {kind} is invalid for a {record.kind.name} interaction"
        )

    def _response_message(self, record: InteractionRecord, body: MessageBody, flags: int) -> Message:
        channel = self.world.channel(record.channel.id)
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(body.payload, sizes, self.world.upload_limit(channel))
        if flags & LOADING == 0 and not _has_content(body):
            raise errors.empty_message()
        message = self.world.create_message(
            channel,
            self.world.bot_user,
            body,
            flags=flags,
            type=20 if record.kind is InteractionKind.COMMAND else 0,
            interaction_id=record.id,
            interaction_user=record.user,
            interaction_type=int(record.kind),
            webhook_id=self.world.application_id,
        )
        record.original_id = message.id
        return message

    def _update_source(self, record: InteractionRecord, body: MessageBody | None) -> Message | None:
        source = record.source_message
        if source is None and body is None:
            return None  # a modal opened by a command: Discord accepts the deferred update, nothing changes
        if source is None:
            raise errors.invalid_form("type", "an update (7) needs the message the component was on")
        if source.deleted:
            raise errors.unknown_message()
        record.original_id = source.id
        if body is None:
            return None
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(
            body.payload, sizes, self.world.upload_limit(self.world.channel(source.channel_id))
        )
        return self.world.edit_message(source, body)

    def _callback_answer(
        self, record: InteractionRecord, kind: int, message: Message | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"interaction": {"id": str(record.id), "type": int(record.kind)}}
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            answer["interaction"] |= {
                "response_message_id": str(message.id),
                "response_message_loading": message.loading,
                "response_message_ephemeral": message.ephemeral,
            }
            resource["message"] = payloads.message(message)
        answer["resource"] = resource
        return answer

    # -- webhooks: follow-ups and the original response ----------------------------------------

    def _webhook_record(self, request: web.Request) -> InteractionRecord:
        if int(request.match_info["app_id"]) != self.world.application_id:
            raise errors.unknown_webhook()
        record = self.interactions.by_token.get(request.match_info["token"])
        if record is None or not record.token_alive(self.world.clock.now(), self.options.token_lifetime):
            raise errors.invalid_webhook_token()
        if record.callback is None:
            raise errors.unknown_webhook()
        return record

    def _webhook_message(self, record: InteractionRecord, message_ref: str) -> Message:
        message_id = record.original_id if message_ref == "@original" else int(message_ref)
        if message_id is None or (message_id != record.original_id and message_id not in record.followup_ids):
            raise errors.unknown_message()
        message = self.world.messages.get(message_id)
        if message is None or message.deleted:
            raise errors.unknown_message()
        self.world.channel(message.channel_id)
        return message

    async def webhook_execute(self, request: web.Request) -> web.Response:
        record = self._webhook_record(request)
        body = await self._body(request)
        channel = self.world.channel(record.channel.id)
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(body.payload, sizes, self.world.upload_limit(channel))
        if not _has_content(body):
            raise errors.empty_message()
        message = self._complete_deferred(record, body) or self.world.create_message(
            channel,
            self.world.bot_user,
            body,
            interaction_id=record.id,
            interaction_user=record.user,
            interaction_type=int(record.kind),
            webhook_id=self.world.application_id,
        )
        record.followup_ids.append(message.id)
        if request.query.get("wait", "false").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(payloads.message(message))

    def _complete_deferred(self, record: InteractionRecord, body: MessageBody) -> Message | None:
        """Discord's rule: the first follow-up to a deferred (type 5) response *is* that response — it
        replaces the "thinking…" message, and the ACK's flags, not the follow-up's, decide if it is ephemeral."""
        original = self.world.messages.get(record.original_id or 0)
        if original is None or original.deleted or not original.loading:
            return None
        body.payload.pop("flags", None)
        return self.world.edit_message(original, body)

    async def webhook_get(self, request: web.Request) -> web.Response:
        record = self._webhook_record(request)
        return json_response(
            payloads.message(self._webhook_message(record, request.match_info["message_id"]))
        )

    async def webhook_edit(self, request: web.Request) -> web.Response:
        record = self._webhook_record(request)
        message = self._webhook_message(record, request.match_info["message_id"])
        body = await self._body(request)
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(
            body.payload, sizes, self.world.upload_limit(self.world.channel(message.channel_id))
        )
        return json_response(payloads.message(self.world.edit_message(message, body)))

    async def webhook_delete(self, request: web.Request) -> web.Response:
        record = self._webhook_record(request)
        self.world.delete_message(
            self._webhook_message(record, request.match_info["message_id"]), "by the bot"
        )
        return web.Response(status=204)

    # -- channels and messages -----------------------------------------------------------------

    def _channel(self, request: web.Request) -> FakeChannel:
        return self.world.channel(int(request.match_info["channel_id"]))

    def _message(self, request: web.Request) -> Message:
        channel_id, message_id = int(request.match_info["channel_id"]), int(request.match_info["message_id"])
        message = self.world.message(channel_id, message_id)
        if message.ephemeral:
            raise errors.unknown_message()  # only the interaction's webhook routes reach ephemeral messages
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        return json_response(payloads.channel(channel, self.world.users.get(channel.recipient_id or 0)))

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.kind is ChannelKind.DM and not self.world.users[channel.recipient_id or 0].dms_open:
            raise errors.cannot_dm()
        if channel.kind in (ChannelKind.FORUM, ChannelKind.CATEGORY):
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        body = await self._body(request)
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(body.payload, sizes, self.world.upload_limit(channel))
        if not _has_content(body):
            raise errors.empty_message()
        message = self.world.create_message(channel, self.world.bot_user, body)
        return json_response(payloads.message(message))

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(payloads.message(self._message(request)))

    async def get_history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = int(request.query.get("limit", 50))
        found = [m for m in self.world.messages.values() if m.channel_id == channel.id and not m.deleted]
        found = [m for m in found if not m.ephemeral]
        return json_response([payloads.message(m) for m in reversed(found)][:limit])

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.world.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = await self._body(request)
        sizes = [len(f.data) for f in body.files.values()]
        limits.check_message(body.payload, sizes, self.world.upload_limit(self._channel(request)))
        return json_response(payloads.message(self.world.edit_message(message, body)))

    async def delete_message(self, request: web.Request) -> web.Response:
        self.world.delete_message(self._message(request), "by the bot")
        return web.Response(status=204)

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request)
        return web.Response(status=204)

    async def create_dm(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user = self.world.users.get(int(body.payload.get("recipient_id", 0)))
        if user is None:
            raise ApiError(400, 50035, "Invalid Form Body: recipient_id: unknown user")
        channel = self.world.dm_channel(user)
        self.world.record(EventKind.DM_CHANNEL, detail=str(user.id))
        return json_response(payloads.channel(channel, user))

    # -- threads -------------------------------------------------------------------------------

    async def thread_from_message(self, request: web.Request) -> web.Response:
        parent = self._channel(request)
        message = self._message(request)
        if message.thread_id is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = await self._body(request)
        thread = self._new_thread(parent, body.payload, ChannelKind.PUBLIC_THREAD, thread_id=message.id)
        message.thread_id = thread.id
        data = payloads.channel(thread)
        await self.gateway.dispatch_if_connected("THREAD_CREATE", data | {"newly_created": True})
        return json_response(data)

    async def thread_without_message(self, request: web.Request) -> web.Response:
        parent = self._channel(request)
        body = await self._body(request)
        if parent.kind is ChannelKind.FORUM:
            return await self._forum_post(parent, body)
        if parent.kind is not ChannelKind.TEXT:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        kind = ChannelKind(int(body.payload.get("type") or ChannelKind.PRIVATE_THREAD))
        thread = self._new_thread(parent, body.payload, kind)
        data = payloads.channel(thread)
        await self.gateway.dispatch_if_connected("THREAD_CREATE", data | {"newly_created": True})
        return json_response(data)

    async def _forum_post(self, forum: FakeChannel, body: MessageBody) -> web.Response:
        starter = MessageBody(body.payload.get("message") or {}, body.files)
        limits.check_message(
            starter.payload, [len(f.data) for f in body.files.values()], self.world.upload_limit(forum)
        )
        if not _has_content(starter):
            raise errors.empty_message()
        thread = self._new_thread(forum, body.payload, ChannelKind.PUBLIC_THREAD)
        # A forum post's starter message shares the thread's id, as on Discord.
        message = self.world.create_message(thread, self.world.bot_user, starter, message_id=thread.id)
        data = payloads.channel(thread)
        await self.gateway.dispatch_if_connected("THREAD_CREATE", data | {"newly_created": True})
        return json_response(data | {"message": payloads.message(message)})

    def _new_thread(
        self, parent: FakeChannel, payload: dict[str, Any], kind: ChannelKind, thread_id: int | None = None
    ) -> FakeChannel:
        name = str(payload.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise errors.invalid_form("name", "Must be between 1 and 100 in length.")
        thread = FakeChannel(
            thread_id or self.world.ids.next(),
            name,
            kind,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.world.bot_user.id,
        )
        self.world.channels[thread.id] = thread
        self.world.record(EventKind.THREAD_CREATE, detail=f"{thread.id} in {parent.id}")
        return thread

    # -- guilds --------------------------------------------------------------------------------

    async def get_guild(self, request: web.Request) -> web.Response:
        w = self.world
        guild_id = w.guild(int(request.match_info["guild_id"])).id
        data = payloads.guild(w.guilds[guild_id], w.guild_roles(guild_id), [], [])
        return json_response(data)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self.world.guild(int(request.match_info["guild_id"]))
        channels = [c for c in self.world.guild_channels(guild.id) if not c.is_thread]
        return json_response([payloads.channel(c) for c in channels])

    async def get_roles(self, request: web.Request) -> web.Response:
        guild = self.world.guild(int(request.match_info["guild_id"]))
        return json_response([payloads.role(r) for r in self.world.guild_roles(guild.id)])

    async def get_members(self, request: web.Request) -> web.Response:
        guild = self.world.guild(int(request.match_info["guild_id"]))
        limit = int(request.query.get("limit", 1))
        return json_response([payloads.member(m) for m in self.world.guild_members(guild.id)][:limit])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self.world.guild(int(request.match_info["guild_id"]))
        return json_response(payloads.member(self.world.member(guild.id, int(request.match_info["user_id"]))))

    # -- files ---------------------------------------------------------------------------------

    async def get_attachment(self, request: web.Request) -> web.Response:
        attachment = self.world.attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        content_type = attachment.content_type or "application/octet-stream"
        return web.Response(body=attachment.data, headers={"Content-Type": content_type})


def _flags(body: MessageBody) -> int:
    return int(body.payload.get("flags") or 0)


def _has_content(body: MessageBody) -> bool:
    p = body.payload
    return bool(
        p.get("content") or p.get("embeds") or p.get("components") or body.files or p.get("attachments")
    )
