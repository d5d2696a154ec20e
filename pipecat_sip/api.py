"""The operations API: health, live calls, dial-out, hang-up, transfer, DTMF, events, metrics.

An HTTP and WebSocket API (FastAPI, served by uvicorn in the SIP server's own
event loop) for operators and orchestration code. Off by default; the
runner starts it with ``--api-port`` / ``SIP_API_PORT``.

| method | path | what |
|---|---|---|
| GET | ``/health`` | 200 while the SIP server runs (503 once stopped) |
| GET | ``/ready`` | 200 while it takes calls; 503 while draining or stopped |
| GET | ``/calls`` | live calls |
| GET | ``/calls/{call_id}`` | one call (live, or among the last ended ones) |
| POST | ``/calls`` | dial out; 202 with the call id once the INVITE is out |
| DELETE | ``/calls/{call_id}`` | hang up |
| POST | ``/calls/{call_id}/transfer`` | blind transfer (REFER, RFC 3515) |
| POST | ``/calls/{call_id}/dtmf`` | send digits (RFC 4733, or SIP INFO) |
| WS | ``/events`` | incoming, dialing, answered, ended, dtmf, transfer events (JSON) |
| GET | ``/metrics`` | Prometheus text format (:mod:`pipecat_sip.metrics`) |
| GET | ``/docs`` | OpenAPI documentation (``/openapi.json``) |

Security: the API binds to 127.0.0.1 by default. Any other bind address
requires a bearer token (``token``, ``SIP_API_TOKEN``): start-up stops
without one. With a token every endpoint but ``/health``, ``/ready`` and the
documentation wants ``Authorization: Bearer <token>`` (the WebSocket also
takes ``?token=``, for browsers). Errors are JSON (``{"detail": ...}``) with
their status: 401 no or wrong token, 404 no such call, 409 the call is not
in a state for it, 422 a malformed body (pydantic's field errors), 501 not
supported, 502 the far end refused, 503 not taking calls.

Example:
    ::

        api = OperationsAPI(server, port=8080)
        await api.start()
        ...
        await api.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import inspect
import ipaddress
import socket
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipecat_sip import call as call_module
from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.metrics import CONTENT_TYPE, ServerMetrics, media_summary
from pipecat_sip.ports import PortPoolExhausted
from pipecat_sip.server import SIPServer

__all__ = [
    "DialHandler",
    "DialRequest",
    "DtmfRequest",
    "OperationsAPI",
    "TransferRequest",
    "check_api_binding",
    "is_loopback",
]

#: Runs a dialled call once answered: ``handler(call, settings)`` (the runner runs the bot).
DialHandler = Callable[[SIPCall, dict[str, Any]], Awaitable[Any]]

#: Ended calls kept for ``GET /calls/{id}``.
ENDED_KEPT = 200
#: Event queue per WebSocket client; past it the oldest events are dropped.
EVENT_QUEUE = 1000
#: Most WebSocket clients at once.
MAX_EVENT_CLIENTS = 32
#: Seconds ``POST /calls`` waits for the INVITE to go out.
DIAL_START_TIMEOUT_S = 10.0

_DIALING: contextvars.ContextVar[asyncio.Future | None] = contextvars.ContextVar(
    "pipecat_sip_api_dialing", default=None
)
_TOKEN_NAME = "token"
_HEADER_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)  # RFC 3261 s.25.1 token
_FORBIDDEN_HEADERS = frozenset(
    {"via", "from", "to", "call-id", "cseq", "contact", "content-length", "content-type",
     "max-forwards", "route", "record-route", "v", "f", "t", "i", "m", "l", "c"}
)  # fmt: skip


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_binding(host: str, token: str | None) -> None:
    """Refuse an API bound beyond loopback without a bearer token.

    Raises:
        ValueError: ``host`` is not a loopback address and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ValueError(
            f"the operations API on {host} (not loopback) needs a bearer token: set SIP_API_TOKEN"
        )


def _no_controls(value: str, what: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class DialRequest(BaseModel):
    """``POST /calls``: a call to place.

    Attributes:
        target: Whom to call: a SIP URI (``sip:alice@pbx.example.com``) or,
            with a trunk configured, a number.
        caller_id: Our identity: the From user (a number or name).
        display_name: Our From display name.
        headers: Extra INVITE headers (``X-Campaign: 42``); none of the
            headers the dialog owns (Via, From, To, Call-ID, CSeq, Contact,
            Route, ...).
        settings: Per-call bot settings, handed to the bot (the runner's
            ``runner_args.body``).
        timeout: Seconds to wait for an answer.
    """

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=256)
    caller_id: str | None = Field(default=None, min_length=1, max_length=64)
    display_name: str | None = Field(default=None, max_length=64)
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    settings: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(default=60.0, gt=0, le=600)

    @field_validator("target", "caller_id", "display_name")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None:
            _no_controls(value, "text")
            if '"' in value:
                raise ValueError("must not contain double quotes")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if any(c.isspace() for c in value) or "<" in value or ">" in value:
            raise ValueError("must be a SIP URI or a number, without spaces or angle brackets")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or len(name) > 64 or not set(name) <= _HEADER_NAME_CHARS:
                raise ValueError(f"header name {name!r} is not a SIP token")
            if name.lower() in _FORBIDDEN_HEADERS:
                raise ValueError(f"header {name} is the dialog's own")
            if len(text) > 512:
                raise ValueError(f"header {name} is longer than 512 characters")
            _no_controls(text, f"header {name}")
        return value


class TransferRequest(BaseModel):
    """``POST /calls/{id}/transfer``: where to transfer the call (REFER, RFC 3515).

    Attributes:
        target: The transfer target's SIP URI (the Refer-To).
        timeout: Seconds to wait for the transfer's outcome (NOTIFY sipfrag).
    """

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=256)
    timeout: float = Field(default=30.0, gt=0, le=300)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        _no_controls(value, "target")
        if any(c.isspace() for c in value) or "<" in value or ">" in value:
            raise ValueError("must be a SIP URI without spaces or angle brackets")
        return value


class DtmfRequest(BaseModel):
    """``POST /calls/{id}/dtmf``: digits to send.

    Attributes:
        digits: ``0-9``, ``*``, ``#``, ``A-D``; 1-32 of them, sent one after another.
        duration_ms: Length of each press, ms.
        method: ``"rfc4733"`` (in the RTP stream; in-band tones when the peer
            offered no telephone-event) or ``"info"`` (SIP INFO, when supported).
    """

    model_config = ConfigDict(extra="forbid")

    digits: str = Field(pattern=r"^[0-9*#A-Da-d]{1,32}$")
    duration_ms: int = Field(default=100, ge=40, le=2000)
    method: Literal["rfc4733", "info"] = "rfc4733"


class CallStarted(BaseModel):
    """The answer to ``POST /calls``.

    Attributes:
        call_id: The new call's Call-ID (``GET /calls/{call_id}``, events).
        state: Its signalling state now.
    """

    call_id: str
    state: str


def call_view(call: SIPCall) -> dict[str, Any]:
    """What the API shows of a call (``GET /calls/{id}``): data, state, duration, quality."""
    info = call.info
    media = call.media
    quality: dict[str, Any] = media_summary(media)
    extra = getattr(call, "quality", None)
    if extra is None and media is not None:
        extra = getattr(media, "quality", None)
    if callable(extra):
        try:
            extra = extra()
        except Exception:
            extra = None
    if extra is not None:
        quality["call_quality"] = _plain(extra)
    return {
        "call_id": call.call_id,
        "direction": info.direction,
        "state": "terminated" if call.ended else str(call.state),
        "from": info.from_uri,
        "from_display_name": info.from_display_name,
        "to": info.to_uri,
        "to_display_name": info.to_display_name,
        "request_uri": info.request_uri,
        "remote_address": f"{info.remote_address[0]}:{info.remote_address[1]}",
        "transport": info.transport,
        "codec": info.codec or None,
        "sample_rate": info.sample_rate,
        "ptime_ms": info.ptime,
        "telephone_event": info.telephone_event,
        "held": call.held,
        "answered": call.answered_at is not None,
        "duration_s": round(call.duration, 3),
        "end_reason": call.end_reason,
        "quality": quality,
    }


def _plain(value: Any) -> Any:
    """A dataclass or object as JSON-able data (best effort, for quality statistics)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return {k: v for k, v in vars(value).items() if not k.startswith("_")}


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OperationsAPI:
    """The operations API of one :class:`~pipecat_sip.server.SIPServer` (see the module doc).

    Args:
        server: The SIP server (started before :meth:`start`).
        host: Address to listen on (default loopback).
        port: TCP port; 0 picks a free one (see :attr:`port` after start).
        token: Bearer token; required when ``host`` is not loopback.
        dial_handler: Runs each call placed with ``POST /calls`` once it is
            answered, with the request's settings (the runner runs the bot
            function); None holds the call until it is hung up.
        metrics: The metrics collector for ``/metrics``; default a new one
            (closed on :meth:`stop`).

    Raises:
        ValueError: Not loopback and no token (see :func:`check_api_binding`).
    """

    def __init__(
        self,
        server: SIPServer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        dial_handler: DialHandler | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        check_api_binding(host, token)
        self.server = server
        self.host = host
        self.port = port
        self.token = token or None
        self.dial_handler = dial_handler
        self._own_metrics = metrics is None
        self.metrics = metrics if metrics is not None else ServerMetrics(server)
        self.app = self._build_app()
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.events_dropped = 0
        """Events dropped because a WebSocket client's queue was full."""
        self._tasks: set[asyncio.Task] = set()
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._serve_task: asyncio.Task | None = None
        server.add_call_observer(self._on_call)

    @property
    def url(self) -> str:
        """``http://host:port`` of the API (after :meth:`start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Listen and serve in the running event loop; returns once it accepts connections.

        Raises:
            OSError: The port cannot be bound.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws_max_size=65536,
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._serve_task = asyncio.ensure_future(self._uvicorn.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not self._uvicorn.started:
            if self._serve_task.done():
                self._serve_task.result()  # raises what stopped it
                raise OSError(f"operations API on {self.url} did not start")
            if loop.time() > deadline:
                raise OSError(f"operations API on {self.url} did not start in 10 s")
            await asyncio.sleep(0.01)
        logger.info(f"operations API on {self.url} (docs: {self.url}/docs)")

    async def stop(self) -> None:
        """Close the event streams, stop serving, stop observing the server (idempotent)."""
        self.server.remove_call_observer(self._on_call)
        for queue in list(self._clients):
            self._put(queue, None)
        for task in list(self._tasks):
            task.cancel()
        if self._uvicorn is not None and self._serve_task is not None:
            self._uvicorn.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._serve_task), 5.0)
            except TimeoutError:
                self._uvicorn.force_exit = True
                self._serve_task.cancel()
            except Exception:
                logger.exception("operations API: error while stopping")
        self._uvicorn = None
        self._serve_task = None
        if self._own_metrics:
            self.metrics.close()

    async def __aenter__(self) -> OperationsAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- events -----------------------------------------------------------------------
    def emit(self, kind: str, call: SIPCall | None = None, **fields: Any) -> None:
        """Send an event to every ``/events`` client: ``{"type", "time", "call_id", ...}``."""
        event: dict[str, Any] = {"type": kind, "time": time.time()}
        if call is not None:
            event["call_id"] = call.call_id
            event["direction"] = call.info.direction
        event.update(fields)
        for queue in list(self._clients):
            self._put(queue, event)

    def _put(self, queue: asyncio.Queue, event: dict[str, Any] | None) -> None:
        while queue.full():
            queue.get_nowait()
            self.events_dropped += 1
        queue.put_nowait(event)

    def _on_call(self, what: str, call: SIPCall) -> None:
        if what == "started":
            fut = _DIALING.get()
            if fut is not None and not fut.done() and call.info.direction == "outbound":
                fut.set_result(call)
            info = call.info
            kind = "incoming" if info.direction == "inbound" else "dialing"
            self.emit(kind, call, **{"from": info.from_uri, "to": info.to_uri})
            self._spawn(self._watch(call))
        elif what == "ended":
            view = call_view(call)
            self._ended[call.call_id] = view
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
            self.emit("ended", call, reason=call.end_reason, duration_s=view["duration_s"])

    async def _watch(self, call: SIPCall) -> None:
        try:
            await call.wait_answered()
        except (CallFailed, asyncio.CancelledError):
            return
        media = call.media
        self.emit("answered", call, codec=call.info.codec or None)
        if media is not None and hasattr(media, "dtmf_listeners"):
            media.dtmf_listeners.append(lambda key: self.emit("dtmf", call, digit=key))

    def _spawn(self, coro: Any, context: contextvars.Context | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the app ------------------------------------------------------------------------
    def _authorized(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    def _build_app(self) -> FastAPI:
        # The route functions reach this object through a weak proxy: FastAPI
        # caches every dependency and endpoint callable in module-level LRU
        # caches, which would otherwise keep this API, its server and every
        # call it saw alive after stop().
        api = weakref.proxy(self)
        app = FastAPI(
            title="pipecat-sip operations API",
            version="1",
            description=(
                "Live calls of one pipecat-sip instance: inspect, dial out, hang up, "
                "transfer, send DTMF; events over a WebSocket; Prometheus metrics."
            ),
        )
        bearer = HTTPBearer(auto_error=False)

        async def auth(
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        ) -> None:
            if not api._authorized(credentials.credentials if credentials else None):
                raise HTTPException(
                    401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
                )

        protected = [Depends(auth)]

        @app.exception_handler(Exception)
        async def internal_error(request: Request, exc: Exception) -> JSONResponse:
            logger.opt(exception=exc).error(f"operations API: {request.method} {request.url.path}")
            return JSONResponse({"detail": "internal error"}, status_code=500)

        @app.get("/health", tags=["status"], summary="The SIP server runs")
        async def health() -> JSONResponse:
            up = api.server.endpoint is not None
            body = {"status": "ok" if up else "stopped", "calls": len(api.server.calls)}
            return JSONResponse(body, status_code=200 if up else 503)

        @app.get("/ready", tags=["status"], summary="New calls are taken (not draining)")
        async def ready() -> JSONResponse:
            accepting = api.server.accepting
            body = {"ready": accepting, "draining": not accepting, "calls": len(api.server.calls)}
            return JSONResponse(body, status_code=200 if accepting else 503)

        @app.get("/metrics", tags=["status"], dependencies=protected, summary="Prometheus")
        async def metrics() -> Response:
            return Response(api.metrics.render(), media_type=CONTENT_TYPE)

        @app.get("/calls", tags=["calls"], dependencies=protected, summary="Live calls")
        async def list_calls() -> dict[str, Any]:
            calls = [call_view(call) for call in list(api.server.calls.values())]
            return {"calls": calls, "count": len(calls)}

        @app.get("/calls/{call_id}", tags=["calls"], dependencies=protected, summary="One call")
        async def get_call(call_id: str) -> dict[str, Any]:
            call = api.server.calls.get(call_id)
            if call is not None:
                return call_view(call)
            ended = api._ended.get(call_id)
            if ended is not None:
                return ended
            raise HTTPException(404, "no such call")

        @app.post(
            "/calls",
            tags=["calls"],
            dependencies=protected,
            status_code=202,
            response_model=CallStarted,
            summary="Dial out",
        )
        async def dial(request: DialRequest) -> CallStarted:
            call = await api._dial(request)
            return CallStarted(call_id=call.call_id, state=str(call.state))

        @app.delete("/calls/{call_id}", tags=["calls"], dependencies=protected, summary="Hang up")
        async def hangup(call_id: str) -> dict[str, Any]:
            call = api._live(call_id)
            await call.hangup()
            return {"call_id": call_id, "end_reason": call.end_reason}

        @app.post(
            "/calls/{call_id}/transfer",
            tags=["calls"],
            dependencies=protected,
            summary="Blind transfer (REFER)",
        )
        async def transfer(call_id: str, request: TransferRequest) -> dict[str, Any]:
            call = api._live(call_id)
            method = getattr(call, "transfer", None)
            if method is None:
                raise HTTPException(501, "transfer is not supported by this version")
            if not call.established:
                raise HTTPException(409, f"the call is {call.state}, not established")
            failed = getattr(call_module, "TransferFailed", CallFailed)
            api.emit("transfer", call, target=request.target, status="started")
            try:
                await method(request.target, timeout=request.timeout)
            except failed as exc:
                api.emit("transfer", call, target=request.target, status="failed", error=str(exc))
                raise HTTPException(502, f"transfer failed: {exc}") from None
            api.emit("transfer", call, target=request.target, status="done")
            return {"call_id": call_id, "target": request.target, "status": "done"}

        @app.post(
            "/calls/{call_id}/dtmf", tags=["calls"], dependencies=protected, summary="Send DTMF"
        )
        async def dtmf(call_id: str, request: DtmfRequest) -> dict[str, Any]:
            call = api._live(call_id)
            if not call.established or call.media is None:
                raise HTTPException(409, f"the call is {call.state}, not established")
            digits = request.digits.upper()
            if request.method == "info":
                send_info = getattr(call, "send_info_dtmf", None)
                if send_info is None:
                    raise HTTPException(501, "DTMF by SIP INFO is not supported by this version")
                for digit in digits:
                    result = send_info(digit, request.duration_ms)
                    if inspect.isawaitable(result):
                        await result
            else:
                for digit in digits:
                    call.media.send_dtmf(digit, request.duration_ms)
            return {"call_id": call_id, "digits": digits, "method": request.method}

        @app.websocket("/events")
        async def events(websocket: WebSocket) -> None:
            presented = websocket.query_params.get(_TOKEN_NAME)
            header = websocket.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                presented = header[7:].strip()
            if not api._authorized(presented):
                await websocket.close(code=1008)
                return
            if len(api._clients) >= MAX_EVENT_CLIENTS:
                await websocket.close(code=1013)
                return
            await websocket.accept()
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_QUEUE)
            api._clients.add(queue)
            reader = asyncio.ensure_future(api._drain_client(websocket))
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, reader}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        break  # the client went away
                    event = getter.result()
                    if event is None:
                        await websocket.close(code=1001)
                        break
                    await websocket.send_json(event)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                api._clients.discard(queue)
                reader.cancel()

        return app

    @staticmethod
    async def _drain_client(websocket: WebSocket) -> None:
        """Read (and ignore) what the client sends, to notice when it leaves."""
        try:
            while True:
                message = await websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return

    def _live(self, call_id: str) -> SIPCall:
        call = self.server.calls.get(call_id)
        if call is None:
            if call_id in self._ended:
                raise HTTPException(409, "the call has ended")
            raise HTTPException(404, "no such call")
        return call

    async def _dial(self, request: DialRequest) -> SIPCall:
        server = self.server
        if not server.accepting:
            raise HTTPException(503, "not taking calls (draining or stopped)")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[SIPCall] = loop.create_future()
        context = contextvars.copy_context()
        context.run(_DIALING.set, started)
        task = self._spawn(self._run_dial(request, started), context=context)
        try:
            return await asyncio.wait_for(asyncio.shield(started), DIAL_START_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            raise HTTPException(504, "the INVITE did not go out in time") from None
        except PortPoolExhausted:
            raise HTTPException(503, "no RTP port free") from None
        except CallFailed as exc:
            raise HTTPException(502, f"call failed: {exc}") from None
        except ValueError as exc:
            raise HTTPException(400, f"cannot call {request.target!r}: {exc}") from None

    async def _run_dial(self, request: DialRequest, started: asyncio.Future) -> None:
        server = self.server
        kwargs: dict[str, Any] = {
            "display_name": request.display_name,
            "headers": list(request.headers.items()),
            "timeout": request.timeout,
        }
        if request.caller_id is not None:
            parameters = inspect.signature(server.call).parameters
            kwargs["caller_id" if "caller_id" in parameters else "from_user"] = request.caller_id
        call: SIPCall | None = None
        try:
            call = await server.call(request.target, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
                return
            if not isinstance(exc, CallFailed):
                logger.opt(exception=exc).error(f"operations API: dialling {request.target} failed")
            return
        try:
            with logger.contextualize(call_id=call.call_id):
                if self.dial_handler is not None:
                    await self.dial_handler(call, dict(request.settings))
                else:
                    await call.wait_ended()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(f"{call}: dial handler failed")
        finally:
            if not call.ended:
                await call.hangup()
