"""A PJSIP softphone (pjsua2) driven by JSON lines on stdin; run by tests/helpers/pjsua.py.

This script runs in its own process so that PJSIP's threads and event loop
never mix with the test's asyncio loop. Everything pjsua2 does happens on
this process's main thread: the library is created with no worker threads
(``threadCnt = 0``, ``mainThreadOnly``), and the main loop alternates
``libHandleEvents(10 ms)`` with reading commands from stdin (fd 0, no
thread). Audio runs on the null sound device (it only gives the conference
bridge its clock); a WAV player is each call's microphone and a WAV
recorder keeps what each call heard.

Protocol (one JSON object per line; fd 1 is kept for it and the C library's
own stdout goes to stderr):

- in: ``{"id": 7, "cmd": "call", ...}``; out: ``{"id": 7, "ok": true,
  "result": ...}`` or ``{"id": 7, "ok": false, "error": "..."}``.
- out, unsolicited: ``{"event": "call_state", "call": 1, "state":
  "CONFIRMED", ...}`` (see ``_emit`` calls for every kind).

Commands: ``init``, ``account``, ``call``, ``answer``, ``hangup``, ``dtmf``,
``hold``, ``resume``, ``reinvite``, ``update``, ``transfer``, ``info``,
``register``, ``remove_account``, ``quit``; see the ``_cmd_*`` methods for their arguments.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
import traceback
from typing import Any

import pjsua2 as pj

_MAX_LINE = 1 << 20
_MAX_MSG_CHARS = 8000

_STATES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}
_MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}
_TRANSPORTS = {
    "udp": pj.PJSIP_TRANSPORT_UDP,
    "tcp": pj.PJSIP_TRANSPORT_TCP,
    "tls": pj.PJSIP_TRANSPORT_TLS,
}
_PRACK = {
    "off": pj.PJSUA_100REL_NOT_USED,
    "optional": pj.PJSUA_100REL_OPTIONAL,
    "required": pj.PJSUA_100REL_MANDATORY,
}
_TIMER = {
    "off": pj.PJSUA_SIP_TIMER_INACTIVE,
    "optional": pj.PJSUA_SIP_TIMER_OPTIONAL,
    "required": pj.PJSUA_SIP_TIMER_REQUIRED,
    "always": pj.PJSUA_SIP_TIMER_ALWAYS,
}
_SRTP = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "required": pj.PJMEDIA_SRTP_MANDATORY,
}
_DTMF = {"rfc4733": pj.PJSUA_DTMF_METHOD_RFC2833, "info": pj.PJSUA_DTMF_METHOD_SIP_INFO}
_DTMF_NAMES = {v: k for k, v in _DTMF.items()}


class _Out:
    """Writes protocol lines to the saved stdout (fd 1 is redirected to stderr)."""

    def __init__(self) -> None:
        self._fd = os.dup(1)
        os.dup2(2, 1)

    def write(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self._fd, data) :]


OUT: _Out | None = None
APP: App | None = None


def _emit(event: str, **fields: Any) -> None:
    assert OUT is not None
    OUT.write({"event": event, **fields})


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MSG_CHARS else text[:_MAX_MSG_CHARS] + "...(clipped)"


def _headers(option: pj.SipTxOption, headers: list[list[str]] | None) -> None:
    for name, value in headers or ():
        h = pj.SipHeader()
        h.hName = name
        h.hValue = value
        option.headers.append(h)


class Call(pj.Call):
    """One call: routes its audio to a player and a recorder, reports its events."""

    def __init__(self, app: App, acc: Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.app = app
        self.acc = acc
        self.num = app.next_call_num()
        self.play: str | None = None
        self.record: str | None = None
        self.loop_play = False
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.ended = False
        app.calls[self.num] = self

    # -- callbacks -----------------------------------------------------------------
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        ci = self.getInfo()
        fields: dict[str, Any] = {
            "call": self.num,
            "state": _STATES.get(ci.state, str(ci.state)),
            "code": ci.lastStatusCode,
            "reason": ci.lastReason,
            "call_id": ci.callIdString,
            "remote_uri": ci.remoteUri,
            "remote_contact": ci.remoteContact,
            "role": "uac" if ci.role == pj.PJSIP_ROLE_UAC else "uas",
        }
        if self.app.report_messages:
            msg = _rx_message(prm.e)
            if msg:
                fields["msg"] = msg
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended = True
            fields["duration_s"] = ci.connectDuration.sec + ci.connectDuration.msec / 1000
        _emit("call_state", **fields)
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.close_media()

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = _MEDIA_STATUS.get(mi.status, str(mi.status))
            fields: dict[str, Any] = {"call": self.num, "status": status}
            if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self._connect_audio(mi.index)
                try:
                    si = self.getStreamInfo(mi.index)
                    fields.update(
                        codec=si.codecName,
                        clock_rate=si.codecClockRate,
                        remote_rtp=si.remoteRtpAddress,
                        tx_pt=si.txPt,
                        tx_event_pt=si.audTxEventPt,
                        rx_event_pt=si.audRxEventPt,
                    )
                except pj.Error:
                    pass
            _emit("media_state", **fields)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        _emit(
            "dtmf",
            call=self.num,
            digit=prm.digit,
            method=_DTMF_NAMES.get(prm.method, str(prm.method)),
            duration_ms=prm.duration,
        )

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        ev = prm.e
        if ev.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = ev.body.tsxState.tsx
        if tsx.method == "INVITE" or tsx.state not in (
            pj.PJSIP_TSX_STATE_COMPLETED,
            pj.PJSIP_TSX_STATE_TERMINATED,
        ):
            return
        fields: dict[str, Any] = {
            "call": self.num,
            "method": tsx.method,
            "role": "uac" if tsx.role == pj.PJSIP_ROLE_UAC else "uas",
            "code": tsx.statusCode,
            "reason": tsx.statusText,
        }
        if self.app.report_messages:
            msg = _rx_message(ev)
            if msg:
                fields["msg"] = msg
        key = (tsx.method, fields["role"], tsx.statusCode, id(tsx.pjTransaction))
        if key in self.app.reported_tsx:
            return
        self.app.reported_tsx.add(key)
        _emit("tsx", **fields)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        accept = self.acc.opts.get("accept_transfer", True)
        fields: dict[str, Any] = {"call": self.num, "dst": prm.dstUri, "accepted": accept}
        if accept:
            new = Call(self.app, self.acc)
            new.play, new.record = self.acc.media_paths()
            prm.newCall = new
            fields["new_call"] = new.num
        else:
            prm.statusCode = 603
        _emit("transfer_request", **fields)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        _emit(
            "transfer_status",
            call=self.num,
            code=prm.statusCode,
            reason=prm.reason,
            final=bool(prm.finalNotify),
        )

    # -- audio ---------------------------------------------------------------------
    def _connect_audio(self, index: int) -> None:
        aud = self.getAudioMedia(index)
        if self.play and self.player is None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.play, 0 if self.loop_play else pj.PJMEDIA_FILE_NO_LOOP)
        if self.player is not None:
            self.player.startTransmit(aud)
        if self.record and self.recorder is None:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.record)
        if self.recorder is not None:
            aud.startTransmit(self.recorder)

    def close_media(self) -> None:
        """Destroy player and recorder (the recorder writes its WAV header on destroy)."""
        self.player = None
        if self.recorder is not None:
            # The destructor removes the port from the conference bridge; PJSIP
            # 2.14+ does that asynchronously, on the bridge's clock, so the WAV
            # header is final only a little later: wait for it, then report.
            self.recorder = None
            self.app.when_wav_complete(self.record, self.num)


def _rx_message(ev: pj.SipEvent) -> str:
    try:
        if ev.type == pj.PJSIP_EVENT_TSX_STATE:
            src = ev.body.tsxState.src
            if ev.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
                return _clip(src.rdata.wholeMsg)
        elif ev.type == pj.PJSIP_EVENT_RX_MSG:
            return _clip(ev.body.rxMsg.rdata.wholeMsg)
    except (AttributeError, pj.Error):
        pass
    return ""


def _wav_complete(path: str | None) -> bool:
    try:
        with open(path or "", "rb") as f:
            head = f.read(12)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    riff = int.from_bytes(head[4:8], "little") if len(head) == 12 else -1
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE" and riff == size - 8


class Account(pj.Account):
    """An account: a registered identity (with Digest credentials) or a plain listener."""

    def __init__(self, app: App, num: int, opts: dict[str, Any]) -> None:
        super().__init__()
        self.app = app
        self.num = num
        self.opts = opts
        self.incoming = 0

    def media_paths(self) -> tuple[str | None, str | None]:
        """(play, record) for the next call of this account; ``{n}`` is a call counter."""
        self.incoming += 1
        record = self.opts.get("record")
        if record:
            record = record.replace("{n}", str(self.incoming))
        return self.opts.get("play"), record

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = Call(self.app, self, prm.callId)
        call.play, call.record = self.media_paths()
        call.loop_play = bool(self.opts.get("loop_play"))
        fields: dict[str, Any] = {"call": call.num, "acc": self.num}
        try:
            fields["msg"] = _clip(prm.rdata.wholeMsg)
            fields["src"] = prm.rdata.srcAddress
        except (AttributeError, pj.Error):
            pass
        _emit("incoming_call", **fields)
        answer = self.opts.get("auto_answer", 0)
        if answer:
            op = pj.CallOpParam()
            op.statusCode = 180
            call.answer(op)
            delay = float(self.opts.get("answer_delay_s", 0.0))
            self.app.later(delay, lambda: self.app.answer(call, int(answer)))

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        _emit(
            "reg_state",
            acc=self.num,
            code=prm.code,
            reason=prm.reason,
            expires=prm.expiration,
            active=self.getInfo().regIsActive,
        )


class App:
    """The pjsua2 endpoint, its accounts and calls, and the command dispatcher."""

    def __init__(self) -> None:
        self.ep: pj.Endpoint | None = None
        self.accounts: dict[int, Account] = {}
        self.calls: dict[int, Call] = {}
        self.transports: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.report_messages = False
        self.bind = self.public = "127.0.0.1"
        self.reported_tsx: set[tuple] = set()
        self.running = True
        self._call_num = 0
        self._timers: list[tuple[float, Any]] = []

    def next_call_num(self) -> int:
        self._call_num += 1
        return self._call_num

    def later(self, delay: float, fn: Any) -> None:
        self._timers.append((time.monotonic() + delay, fn))

    def run_timers(self) -> None:
        now = time.monotonic()
        due = [t for t in self._timers if t[0] <= now]
        self._timers = [t for t in self._timers if t[0] > now]
        for _, fn in due:
            try:
                fn()
            except pj.Error as exc:
                _emit("error", error=exc.info())

    def when_wav_complete(self, path: str | None, call: int, deadline: float | None = None) -> None:
        """Emit ``recording_closed`` once the WAV's RIFF size matches the file (or 3 s pass)."""
        deadline = deadline or time.monotonic() + 3.0
        complete = _wav_complete(path)
        if complete or time.monotonic() > deadline:
            _emit("recording_closed", call=call, path=path, complete=complete)
        else:
            self.later(0.02, lambda: self.when_wav_complete(path, call, deadline))

    def answer(self, call: Call, code: int) -> None:
        if call.ended:
            return
        op = pj.CallOpParam()
        op.statusCode = code
        call.answer(op)

    # -- commands ------------------------------------------------------------------
    def _cmd_init(self, a: dict[str, Any]) -> dict[str, Any]:
        """Create the endpoint and its transports.

        Args: ``bind`` (address, default 127.0.0.1), ``public`` (address put in
        Contact/SDP), ``transports`` (list of "udp"/"tcp"/"tls"), ``sip_port``
        (0: chosen by the OS; the same port number for each transport is not
        guaranteed), ``rtp_port`` and ``rtp_port_range``, ``clock_rate`` (Hz
        of the conference bridge, default 16000), ``codecs`` (PJSIP codec ids
        in preference order, e.g. "PCMU/8000"; others disabled), ``log_file``,
        ``log_level``, ``user_agent``, ``report_messages``, ``tls`` (dict with
        ``cert``, ``key``, ``ca``, ``verify_server``).
        """
        ep = pj.Endpoint()
        ep.libCreate()
        self.ep = ep
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = a.get("user_agent", "pjsua2-test")
        cfg.uaConfig.maxCalls = int(a.get("max_calls", 8))
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.level = int(a.get("log_level", 4))
        cfg.logConfig.msgLogging = True
        if a.get("log_file"):
            cfg.logConfig.filename = a["log_file"]
        cfg.medConfig.clockRate = int(a.get("clock_rate", 16000))
        cfg.medConfig.sndClockRate = cfg.medConfig.clockRate
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.hasIoqueue = False
        ep.libInit(cfg)
        self.report_messages = bool(a.get("report_messages", False))

        bind = self.bind = a.get("bind", "127.0.0.1")
        public = self.public = a.get("public", bind)
        for kind in a.get("transports", ["udp"]):
            tcfg = pj.TransportConfig()
            tcfg.port = int(a.get("sip_port", 0))
            tcfg.boundAddress = bind
            tcfg.publicAddress = public
            if kind == "tls" and a.get("tls"):
                tls = a["tls"]
                tcfg.tlsConfig.certFile = tls.get("cert", "")
                tcfg.tlsConfig.privKeyFile = tls.get("key", "")
                tcfg.tlsConfig.CaListFile = tls.get("ca", "")
                tcfg.tlsConfig.verifyServer = bool(tls.get("verify_server", False))
            tid = ep.transportCreate(_TRANSPORTS[kind], tcfg)
            self.transports[kind] = tid
            self.ports[kind] = ep.transportGetInfo(tid).localName.rsplit(":", 1)[-1]
            self.ports[kind] = int(self.ports[kind])
        ep.audDevManager().setNullDev()
        ep.libStart()

        codecs = a.get("codecs")
        if codecs:
            for info in ep.codecEnum2():
                ep.codecSetPriority(info.codecId, 0)
            for rank, codec in enumerate(codecs):
                ep.codecSetPriority(codec, 254 - rank)
        enabled = [c.codecId for c in ep.codecEnum2() if c.priority > 0]
        return {"ports": self.ports, "codecs": enabled, "version": ep.libVersion().full}

    def _cmd_account(self, a: dict[str, Any]) -> dict[str, Any]:
        """Add an account.

        Args: ``id_uri`` (``sip:alice@127.0.0.1``), ``registrar`` (URI; none:
        a plain listener that never registers), ``username``, ``password``,
        ``realm`` (default "*"), ``reg_timeout`` (s), ``proxy`` (outbound
        proxy URIs, list), ``transport`` ("udp"/"tcp"/"tls"), ``auto_answer``
        (status code, 0 = ring only), ``answer_delay_s``, ``play``/``record``
        (WAV paths for incoming calls; ``{n}`` in record is a counter),
        ``loop_play``, ``prack``/``timer``/``srtp`` ("off"/"optional"/
        "required"; timer also "always"), ``session_expires`` (s),
        ``min_se`` (s), ``rtp_port``, ``rtp_port_range``, ``rtp_bind`` and
        ``rtp_public`` (default: init's ``bind``/``public``), ``accept_transfer``,
        ``contact_rewrite`` (bool: follow ``received``/``rport``), ``keepalive_s``.
        """
        assert self.ep is not None
        num = len(self.accounts) + 1
        acc = Account(self, num, a)
        cfg = pj.AccountConfig()
        cfg.idUri = a["id_uri"]
        if a.get("registrar"):
            cfg.regConfig.registrarUri = a["registrar"]
            cfg.regConfig.timeoutSec = int(a.get("reg_timeout", 300))
            cfg.regConfig.retryIntervalSec = int(a.get("reg_retry_s", 5))
        else:
            cfg.regConfig.registerOnAdd = False
        if a.get("username"):
            cred = pj.AuthCredInfo("digest", a.get("realm", "*"), a["username"], 0, a["password"])
            cfg.sipConfig.authCreds.append(cred)
        for proxy in a.get("proxy", []):
            cfg.sipConfig.proxies.append(proxy)
        kind = a.get("transport")
        if kind:
            cfg.sipConfig.transportId = self.transports[kind]
        cfg.callConfig.prackUse = _PRACK[a.get("prack", "off")]
        cfg.callConfig.timerUse = _TIMER[a.get("timer", "off")]
        if a.get("session_expires"):
            cfg.callConfig.timerSessExpiresSec = int(a["session_expires"])
        if a.get("min_se"):
            cfg.callConfig.timerMinSESec = int(a["min_se"])
        cfg.mediaConfig.srtpUse = _SRTP[a.get("srtp", "off")]
        cfg.mediaConfig.srtpSecureSignaling = 0
        cfg.mediaConfig.transportConfig.boundAddress = a.get("rtp_bind", self.bind)
        cfg.mediaConfig.transportConfig.publicAddress = a.get("rtp_public", self.public)
        if a.get("rtp_port"):
            cfg.mediaConfig.transportConfig.port = int(a["rtp_port"])
            cfg.mediaConfig.transportConfig.portRange = int(a.get("rtp_port_range", 20))
        cfg.natConfig.contactRewriteUse = 1 if a.get("contact_rewrite") else 0
        cfg.natConfig.viaRewriteUse = 1 if a.get("contact_rewrite") else 0
        cfg.natConfig.sdpNatRewriteUse = 0
        cfg.natConfig.udpKaIntervalSec = int(a.get("keepalive_s", 0))
        acc.create(cfg, bool(a.get("default", num == 1)))
        self.accounts[num] = acc
        return {"acc": num, "pj_id": acc.getId()}

    def _call(self, a: dict[str, Any]) -> Call:
        call = self.calls.get(int(a["call"]))
        if call is None:
            raise KeyError(f"no call {a['call']}")
        return call

    def _cmd_call(self, a: dict[str, Any]) -> dict[str, Any]:
        """Place a call: ``uri``, ``acc`` (default 1), ``play``, ``record``, ``loop_play``,
        ``headers`` (list of [name, value])."""
        acc = self.accounts[int(a.get("acc", 1))]
        call = Call(self, acc)
        call.play = a.get("play")
        call.record = a.get("record")
        call.loop_play = bool(a.get("loop_play"))
        op = pj.CallOpParam(True)
        _headers(op.txOption, a.get("headers"))
        call.makeCall(a["uri"], op)
        return {"call": call.num}

    def _cmd_answer(self, a: dict[str, Any]) -> None:
        """Answer an incoming call: ``call``, ``code`` (default 200)."""
        self.answer(self._call(a), int(a.get("code", 200)))

    def _cmd_hangup(self, a: dict[str, Any]) -> None:
        """End a call (CANCEL, reject or BYE, as its state needs): ``call``, ``code``."""
        call = self._call(a)
        if call.ended:
            return
        op = pj.CallOpParam()
        op.statusCode = int(a.get("code", 603))
        call.hangup(op)

    def _cmd_dtmf(self, a: dict[str, Any]) -> None:
        """Send ``digits`` on ``call`` by ``method`` ("rfc4733" or "info"), ``duration_ms``."""
        p = pj.CallSendDtmfParam()
        p.digits = a["digits"]
        p.method = _DTMF[a.get("method", "rfc4733")]
        p.duration = int(a.get("duration_ms", 160))
        self._call(a).sendDtmf(p)

    def _cmd_hold(self, a: dict[str, Any]) -> None:
        """Put ``call`` on hold (re-INVITE with a=sendonly)."""
        self._call(a).setHold(pj.CallOpParam(True))

    def _cmd_resume(self, a: dict[str, Any]) -> None:
        """Take ``call`` off hold (re-INVITE with a=sendrecv)."""
        op = pj.CallOpParam(True)
        op.opt.flag = pj.PJSUA_CALL_UNHOLD
        self._call(a).reinvite(op)

    def _cmd_reinvite(self, a: dict[str, Any]) -> None:
        """Send a re-INVITE with a fresh offer on ``call``."""
        self._call(a).reinvite(pj.CallOpParam(True))

    def _cmd_update(self, a: dict[str, Any]) -> None:
        """Send an UPDATE (RFC 3311) with an offer on ``call``."""
        self._call(a).update(pj.CallOpParam(True))

    def _cmd_transfer(self, a: dict[str, Any]) -> None:
        """Send REFER on ``call`` to transfer the far end to ``dest`` (RFC 3515)."""
        self._call(a).xfer(a["dest"], pj.CallOpParam(True))

    def _cmd_info(self, a: dict[str, Any]) -> dict[str, Any]:
        """Return the state of ``call``: state, codec, media status, remote contact."""
        call = self._call(a)
        ci = call.getInfo()
        out: dict[str, Any] = {
            "state": _STATES.get(ci.state, str(ci.state)),
            "code": ci.lastStatusCode,
            "remote_contact": ci.remoteContact,
            "media": [_MEDIA_STATUS.get(m.status, str(m.status)) for m in ci.media],
        }
        return out

    def _cmd_register(self, a: dict[str, Any]) -> None:
        """(Re-)REGISTER ``acc`` (``renew`` true) or unregister it (``renew`` false)."""
        self.accounts[int(a["acc"])].setRegistration(bool(a.get("renew", True)))

    def _cmd_remove_account(self, a: dict[str, Any]) -> None:
        """Delete account ``acc`` (unregistering it if it is registered)."""
        acc = self.accounts.pop(int(a["acc"]))
        acc.shutdown()

    def _cmd_quit(self, a: dict[str, Any]) -> None:
        """Hang up every call and stop (the process exits after the reply)."""
        self.running = False

    # -- main loop -----------------------------------------------------------------
    def handle(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError as exc:
            assert OUT is not None
            OUT.write({"id": None, "ok": False, "error": f"bad JSON: {exc}"})
            return
        rid = msg.get("id")
        fn = getattr(self, f"_cmd_{msg.get('cmd')}", None)
        assert OUT is not None
        if fn is None:
            OUT.write({"id": rid, "ok": False, "error": f"unknown command {msg.get('cmd')!r}"})
            return
        try:
            result = fn(msg)
        except pj.Error as exc:
            OUT.write({"id": rid, "ok": False, "error": exc.info()})
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
            OUT.write({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            traceback.print_exc()
        else:
            OUT.write({"id": rid, "ok": True, "result": result})

    def shutdown(self) -> None:
        if self.ep is None:
            return
        for call in self.calls.values():
            call.close_media()
        try:
            self.ep.hangupAllCalls()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and any(
                not c.ended and c.isActive() for c in self.calls.values()
            ):
                self.ep.libHandleEvents(20)
        except pj.Error:
            pass
        for acc in self.accounts.values():
            try:
                acc.shutdown()
            except pj.Error:
                pass
        self.calls.clear()
        self.accounts.clear()
        self.ep.libDestroy()
        self.ep = None


def main() -> int:
    global OUT, APP
    OUT = _Out()
    app = APP = App()
    buf = b""
    stdin_open = True
    try:
        while app.running:
            if app.ep is not None:
                app.ep.libHandleEvents(10)
                app.run_timers()
                timeout = 0.0
            else:
                timeout = 0.05
            if not stdin_open:
                break
            ready, _, _ = select.select([0], [], [], timeout)
            if ready:
                chunk = os.read(0, 65536)
                if not chunk:
                    stdin_open = False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        app.handle(line)
                if len(buf) > _MAX_LINE:
                    buf = b""
    finally:
        app.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
