"""Prometheus metrics of a :class:`~pipecat_sip.server.SIPServer` (``GET /metrics``).

Nothing here runs per packet. The figures come from the objects that count
already: the server's and user agent's counters (SIP messages, drops), the
call manager's live calls, each call's RTP counters (``media.stats``) and
jitter buffer statistics, the port pool. :class:`ServerMetrics` is a custom
prometheus-client collector: at each scrape it adds the live calls' figures
to the totals it kept from the calls that ended (folded in once, when the
call manager releases a call), so counters only grow.

Label sets are bounded, with no per-call label: SIP methods outside a fixed
set are ``other``, statuses outside the standard codes their class
(``5xx``), end reasons outside the known ones ``other``.

Metric families (all prefixed ``pipecat_sip_``):

| name | type | labels |
|---|---|---|
| ``calls_active`` | gauge | direction |
| ``calls_started_total`` | counter | direction |
| ``calls_ended_total`` | counter | reason |
| ``sip_requests_total`` | counter | direction (in/out), method |
| ``sip_responses_total`` | counter | direction, method, status |
| ``registration_up`` | gauge (only with a registration) | |
| ``accepting_calls`` | gauge | |
| ``rtp_packets_total``, ``rtp_payload_bytes_total`` | counter | direction |
| ``dtmf_total`` | counter | direction |
| ``dropped_total`` | counter | layer (sip/rtp), cause |
| ``jitter_buffer_frames_total`` | counter | kind (played, concealed, lost, late, ...) |
| ``rtp_deadlines_skipped_total`` | counter | |
| ``call_packet_loss_ratio`` | histogram, one sample per ended call | |
| ``call_jitter_ms`` | histogram, one sample per ended call | |
| ``rtp_ports_in_use``, ``rtp_ports_capacity`` | gauge | |
| ``pipeline_errors_total`` | counter (Pipecat's ERROR log records) | |

Example:
    ::

        metrics = ServerMetrics(server)
        text = metrics.render()  # the Prometheus text format
        metrics.close()
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from pipecat_sip.call import SIPCall
    from pipecat_sip.server import SIPServer

__all__ = [
    "CONTENT_TYPE",
    "END_REASONS",
    "JITTER_BUCKETS_MS",
    "LOSS_BUCKETS",
    "SIP_METHODS",
    "ServerMetrics",
    "classify_sip",
    "media_summary",
]

#: Content type of :meth:`ServerMetrics.render`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PREFIX = "pipecat_sip_"

#: SIP methods counted by name; any other is "other" (RFC 3261 and its extensions).
SIP_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER", "PRACK",
        "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH",
    }
)  # fmt: skip
_METHOD_BYTES = {m.encode(): m for m in SIP_METHODS}

#: Status codes counted as themselves (the IANA SIP registry's); others by class.
SIP_STATUSES = frozenset(
    {
        100, 180, 181, 182, 183, 199, 200, 202, 204, 300, 301, 302, 305, 380, 400,
        401, 402, 403, 404, 405, 406, 407, 408, 410, 412, 413, 414, 415, 416, 417,
        420, 421, 422, 423, 428, 429, 430, 433, 436, 437, 438, 439, 440, 469, 470,
        480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494, 500, 501,
        502, 503, 504, 505, 513, 555, 580, 600, 603, 604, 606, 607, 608,
    }
)  # fmt: skip

#: Call end reasons counted by name; any other is "other".
END_REASONS = frozenset(
    {
        "remote_bye", "local_bye", "rtp_timeout", "cancelled", "rejected", "ack_timeout",
        "timeout", "shutdown", "error", "hold_timeout", "max_duration", "transferred",
        "auth_failed", "no answer", "session_timeout",
    }
)  # fmt: skip

#: Upper bounds of the per-call packet loss histogram (fraction of packets, 0-1).
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: Upper bounds of the per-call interarrival jitter histogram, ms (RFC 3550 A.8).
JITTER_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0)

# How far into a response the CSeq header is looked for, bytes.
_CSEQ_SCAN = 4096
_CSEQ = re.compile(rb"\ncseq[ \t]*:[ \t]*[0-9]+[ \t]+([A-Za-z]{1,16})", re.IGNORECASE)

# RtpStats fields that count dropped packets, and the cause they are shown as.
_RTP_DROPS = {
    "packets_wrong_source": "wrong_source",
    "packets_over_rate": "over_rate",
    "packets_too_large": "oversize",
    "packets_invalid": "invalid",
    "packets_unknown_pt": "unknown_payload_type",
    "packets_on_probation": "on_probation",
    "rtcp_truncated": "rtcp_truncated",
    "send_errors": "send_error",
}
# JitterBufferStats fields shown as jitter_buffer_frames_total{kind}.
_JB_KINDS = (
    "played",
    "concealed",
    "concealed_no_loss",
    "lost",
    "late",
    "duplicates",
    "discarded",
    "dropped_speech",
    "stretched",
    "shrunk",
)


def classify_sip(data: bytes) -> tuple[str, str, str]:
    """Sort a SIP datagram for counting, from its first line (and a response's CSeq).

    Linear in at most the first 4 KiB; never raises.

    Args:
        data: The datagram.

    Returns:
        ``("request", method, "")`` or ``("response", method, status)``:
        methods outside :data:`SIP_METHODS` are ``"other"`` (a response's
        method is its CSeq's), statuses outside :data:`SIP_STATUSES` their
        class (``"5xx"``, or ``"other"``).
    """
    if data.startswith(b"SIP/2.0 "):
        code = data[8:11]
        status = "other"
        if code.isdigit():
            number = int(code)
            if number in SIP_STATUSES:
                status = str(number)
            elif 100 <= number <= 699:
                status = f"{number // 100}xx"
        match = _CSEQ.search(data, 0, _CSEQ_SCAN)
        method = "other"
        if match is not None:
            method = _METHOD_BYTES.get(match.group(1).upper(), "other")
        return "response", method, status
    space = data.find(b" ", 0, 17)
    method = _METHOD_BYTES.get(data[:space], "other") if space > 0 else "other"
    return "request", method, ""


def media_summary(media: Any) -> dict[str, Any]:
    """A call's media figures: RTP counters, jitter buffer statistics, reception (loss, jitter).

    Args:
        media: The call's :class:`~pipecat_sip.media.RTPSession` (or None).

    Returns:
        ``{"rtp": {...}, "jitter_buffer": {...} or None, "reception": {...}
        or None}``; reception (from RTCP's receiver statistics, RFC 3550
        A.3/A.8) has ``expected``, ``received``, ``lost``, ``fraction_lost``
        and ``jitter_ms``. Empty without media.
    """
    if media is None:
        return {}
    stats = media.stats
    out: dict[str, Any] = {"rtp": {f.name: getattr(stats, f.name) for f in fields(stats)}}
    buffer = getattr(media, "jitter_buffer", None)
    buffer_stats = getattr(buffer, "stats", None)
    out["jitter_buffer"] = (
        {f.name: getattr(buffer_stats, f.name) for f in fields(buffer_stats)}
        if buffer_stats is not None
        else None
    )
    out["reception"] = _reception(media)
    return out


def _reception(media: Any) -> dict[str, Any] | None:
    session = getattr(media, "session", None)
    reporter = getattr(session, "_reporter", None)  # RTCP on: the receiver statistics
    reception = getattr(reporter, "reception", None)
    if reception is None:
        return None
    expected = reception.expected
    lost = max(0, reception.lost)
    return {
        "expected": expected,
        "received": reception.received,
        "lost": lost,
        "fraction_lost": lost / expected if expected else 0.0,
        "jitter_ms": 1000.0 * reception.jitter / reception.clock_rate,
    }


class _Histogram:
    """Bucket counts kept by hand (prometheus-client's own would be a per-call metric call)."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class ServerMetrics:
    """A prometheus-client collector for one :class:`~pipecat_sip.server.SIPServer`.

    Registers itself in its own :class:`~prometheus_client.CollectorRegistry`
    (``registry``), observes the server's calls (``add_call_observer``) and
    counts Pipecat's ERROR log records (a loguru sink; process-wide).
    Create it before the calls it should count; :meth:`close` undoes it.

    Args:
        server: The server (started or not).
        registry: Where to register; default a new registry of its own.

    Attributes:
        registry: The registry :meth:`render` renders.
        started: Calls started by direction.
        ended: Calls ended by reason.
        pipeline_errors: Pipecat ERROR log records seen.
    """

    def __init__(self, server: SIPServer, *, registry: CollectorRegistry | None = None) -> None:
        self.server = server
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.started: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.pipeline_errors = 0
        self._rtp: Counter[str] = Counter()  # RtpStats of ended calls
        self._jb: Counter[str] = Counter()  # JitterBufferStats of ended calls
        self._loss = _Histogram(LOSS_BUCKETS)
        self._jitter = _Histogram(JITTER_BUCKETS_MS)
        server.add_call_observer(self._on_call)
        self.registry.register(self)
        self._sink: int | None = logger.add(
            self._on_error_record, level="ERROR", filter=_from_pipecat, format="{message}"
        )

    def close(self) -> None:
        """Stop observing the server and counting log records (idempotent)."""
        self.server.remove_call_observer(self._on_call)
        if self._sink is not None:
            try:
                logger.remove(self._sink)
            except ValueError:  # someone removed every sink (logger.remove())
                pass
            self._sink = None
        try:
            self.registry.unregister(self)
        except KeyError:
            pass

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # --- observing ----------------------------------------------------------------
    def _on_error_record(self, message: Any) -> None:
        self.pipeline_errors += 1

    def _on_call(self, what: str, call: SIPCall) -> None:
        direction = call.info.direction
        if what == "started":
            self.started[direction] += 1
            return
        if what != "ended":
            return
        reason = call.end_reason or "other"
        self.ended[reason if reason in END_REASONS else "other"] += 1
        media = call.media
        if media is None:
            return
        stats = media.stats
        for f in fields(stats):
            self._rtp[f.name] += getattr(stats, f.name)
        buffer_stats = getattr(getattr(media, "jitter_buffer", None), "stats", None)
        if buffer_stats is not None:
            for name in _JB_KINDS:
                self._jb[name] += getattr(buffer_stats, name, 0)
        reception = _reception(media)
        if reception is not None and reception["expected"]:
            self._loss.observe(reception["fraction_lost"])
            self._jitter.observe(reception["jitter_ms"])

    # --- collecting ---------------------------------------------------------------
    def describe(self) -> list[Metric]:
        """No up-front description (the families depend on the server's state)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families at this moment (prometheus-client's collector protocol)."""
        server = self.server
        calls = list(server.calls.values())
        rtp = Counter(self._rtp)
        jb = Counter(self._jb)
        for call in calls:
            media = call.media
            if media is None:
                continue
            stats = media.stats
            for f in fields(stats):
                rtp[f.name] += getattr(stats, f.name)
            buffer_stats = getattr(getattr(media, "jitter_buffer", None), "stats", None)
            if buffer_stats is not None:
                for name in _JB_KINDS:
                    jb[name] += getattr(buffer_stats, name, 0)

        active = GaugeMetricFamily(
            PREFIX + "calls_active", "Calls in progress (ringing or up).", labels=["direction"]
        )
        by_direction = Counter(call.info.direction for call in calls)
        for direction in ("inbound", "outbound"):
            active.add_metric([direction], by_direction[direction])
        yield active

        started = CounterMetricFamily(
            PREFIX + "calls_started", "Calls admitted (inbound) or placed.", labels=["direction"]
        )
        for direction in ("inbound", "outbound"):
            started.add_metric([direction], self.started[direction])
        yield started

        ended = CounterMetricFamily(PREFIX + "calls_ended", "Calls ended.", labels=["reason"])
        for reason, count in sorted(self.ended.items()):
            ended.add_metric([reason], count)
        yield ended

        requests = CounterMetricFamily(
            PREFIX + "sip_requests", "SIP requests.", labels=["direction", "method"]
        )
        responses = CounterMetricFamily(
            PREFIX + "sip_responses", "SIP responses.", labels=["direction", "method", "status"]
        )
        for (direction, kind, method, status), count in sorted(server.sip_messages.items()):
            if kind == "request":
                requests.add_metric([direction, method], count)
            else:
                responses.add_metric([direction, method, status], count)
        yield requests
        yield responses

        if server.registration is not None:
            yield GaugeMetricFamily(
                PREFIX + "registration_up",
                "1 while the registrar holds our binding.",
                value=1 if server.registered else 0,
            )
        yield GaugeMetricFamily(
            PREFIX + "accepting_calls",
            "1 while new calls are taken (0: draining, stopping or stopped).",
            value=1 if server.accepting else 0,
        )

        packets = CounterMetricFamily(
            PREFIX + "rtp_packets", "RTP packets sent and accepted.", labels=["direction"]
        )
        packets.add_metric(["in"], rtp["packets_received"])
        packets.add_metric(["out"], rtp["packets_sent"])
        yield packets
        octets = CounterMetricFamily(
            PREFIX + "rtp_payload_bytes", "RTP payload bytes.", labels=["direction"]
        )
        octets.add_metric(["in"], rtp["octets_received"])
        octets.add_metric(["out"], rtp["octets_sent"])
        yield octets
        dtmf = CounterMetricFamily(PREFIX + "dtmf", "Key presses.", labels=["direction"])
        dtmf.add_metric(["in"], rtp["dtmf_received"])
        dtmf.add_metric(["out"], rtp["dtmf_sent"])
        yield dtmf

        dropped = CounterMetricFamily(
            PREFIX + "dropped", "Datagrams dropped or refused, by cause.", labels=["layer", "cause"]
        )
        ua = server.ua
        dropped.add_metric(["sip", "rate_limit"], server.dropped_rate_limited)
        dropped.add_metric(["sip", "oversize"], server.dropped_oversized)
        dropped.add_metric(["sip", "bad_cseq"], ua.refused_bad_cseq if ua is not None else 0)
        dropped.add_metric(["sip", "forbidden_source"], server.rejected_forbidden)
        manager = server.manager
        dropped.add_metric(
            ["sip", "not_accepting"], manager.rejected_unavailable if manager is not None else 0
        )
        unconfirmed = getattr(manager, "rejected_unconfirmed", 0) if manager is not None else 0
        dropped.add_metric(["sip", "unconfirmed_cap"], unconfirmed)
        for name, cause in _RTP_DROPS.items():
            dropped.add_metric(["rtp", cause], rtp[name])
        yield dropped

        frames = CounterMetricFamily(
            PREFIX + "jitter_buffer_frames",
            "Jitter buffer play-out: frames played, concealed, lost, late, ...",
            labels=["kind"],
        )
        for name in _JB_KINDS:
            frames.add_metric([name], jb[name])
        yield frames
        yield CounterMetricFamily(
            PREFIX + "rtp_deadlines_skipped",
            "Packet times not sent because the event loop ran late.",
            value=rtp["deadlines_skipped"],
        )
        yield self._loss.family(
            PREFIX + "call_packet_loss_ratio", "Fraction of the caller's packets lost, per call."
        )
        yield self._jitter.family(
            PREFIX + "call_jitter_ms", "Interarrival jitter of the caller's stream at its end, ms."
        )

        pool = server.ports
        yield GaugeMetricFamily(
            PREFIX + "rtp_ports_in_use", "RTP port pairs leased.", value=pool.in_use
        )
        yield GaugeMetricFamily(
            PREFIX + "rtp_ports_capacity", "RTP port pairs in the pool.", value=pool.capacity
        )
        yield CounterMetricFamily(
            PREFIX + "pipeline_errors",
            "ERROR log records of Pipecat (pipeline, processors, services); process-wide.",
            value=self.pipeline_errors,
        )


def _from_pipecat(record: Any) -> bool:
    name = record["name"] or ""
    return name == "pipecat" or name.startswith("pipecat.")
