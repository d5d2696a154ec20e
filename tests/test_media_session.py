"""The sans-IO MediaSession on a fake clock: exact packets, sequence numbers and timestamps.

Ticks come at ``k / 50`` s (20 ms packets); every random value comes from a
seeded ``random.Random``, so each test is exactly reproducible.
"""

import random
import struct

import numpy as np
import pytest

from pipecat_sip.codecs import PCMA, PCMU, Codec
from pipecat_sip.codecs.tones import detect_dtmf
from pipecat_sip.rtp import (
    AudioReceived,
    DtmfReceived,
    DtmfSender,
    MediaSession,
    Notice,
    RtpPacket,
    RtpSender,
    RtpTimeout,
    TelephoneEvent,
)
from pipecat_sip.rtp.packet import seq_add, ts_add, ts_diff
from pipecat_sip.rtp.packetizer import INBAND_GAP_MS
from pipecat_sip.rtp.rtcp import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SDES,
    RTCP_SR,
    SenderInfo,
    compound,
    ntp_timestamp,
    parse_compound,
)

SDP = ("192.0.2.10", 4000)  # the address in the peer's SDP
NAT = ("203.0.113.5", 31000)  # where its packets really come from
STRANGER = ("198.51.100.66", 5000)
TE = 101


def make(start: float = 0.0, **kwargs) -> MediaSession:
    kwargs.setdefault("codec", PCMU)
    kwargs.setdefault("remote_addr", SDP)
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("rtcp", False)
    session = MediaSession(**kwargs)
    session.start(start)
    return session


def ticks(session: MediaSession, first: int, count: int) -> list[tuple[bytes, tuple, bool]]:
    """Run ticks first..first+count-1 (at k / 50 s) and return every datagram."""
    out = []
    for k in range(first, first + count):
        out.extend(session.on_tick(k / 50))
    return out


def rtp(datagrams) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for data, _, is_rtcp in datagrams if not is_rtcp]


def tone(ms: int, hz: float = 1000.0, amplitude: float = 8000.0, rate: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def is_silence(packet: RtpPacket, codec=PCMU) -> bool:
    return packet.payload == codec.silence(len(packet.payload))


def events(session: MediaSession) -> list:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def peer_packets(count: int, *, payload=None, pt: int = 0, ssrc: int = 0xCAFE) -> list[bytes]:
    sender = RtpSender(pt, 8000, ssrc=ssrc, rng=random.Random(2))
    payload = PCMU.encode(tone(20)) if payload is None else payload
    return [sender.packet(payload, 160) for _ in range(count)]


# --- sending -------------------------------------------------------------------------------


def test_one_packet_per_tick_with_continuous_numbers():
    session = make()
    rng = random.Random(1)
    ssrc, seq0, ts0 = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
    datagrams = ticks(session, 1, 100)
    packets = rtp(datagrams)
    assert len(packets) == 100
    assert {addr for _, addr, _ in datagrams} == {SDP}
    assert [p.sequence_number for p in packets] == [seq_add(seq0, i) for i in range(100)]
    assert [p.timestamp for p in packets] == [ts_add(ts0, 160 * i) for i in range(100)]
    assert {p.ssrc for p in packets} == {ssrc} and session.ssrc == ssrc
    assert {p.payload_type for p in packets} == {0}
    assert all(is_silence(p) and len(p.payload) == 160 for p in packets)
    assert [p.marker for p in packets] == [True] + [False] * 99
    assert session.stats.packets_sent == 100 and session.stats.octets_sent == 16000


def test_same_rng_same_bytes():
    def run():
        session = make(rng=random.Random(42), rtcp=True, rtcp_interval_s=0.5)
        session.queue_audio(tone(100))
        session.queue_dtmf("5")
        return ticks(session, 1, 80)

    first, second = run(), run()
    assert first == second
    assert any(is_rtcp for _, _, is_rtcp in first)


def test_nothing_before_start_or_after_close():
    session = MediaSession(codec=PCMU, remote_addr=SDP, rng=random.Random(1))
    assert session.on_tick(0.02) == ()
    session.start(0.02)
    assert len(session.on_tick(0.04)) == 1
    session.queue_audio(tone(100))
    bye = session.close(0.06)
    assert [p.packet_type for p in parse_compound(bye[0][0])] == [RTCP_SR, RTCP_SDES, RTCP_BYE]
    assert bye[0][1] == (SDP[0], SDP[1] + 1) and bye[0][2] is True
    assert session.on_tick(0.08) == () and session.backlog_bytes == 0
    assert session.close(0.1) == ()
    session.queue_audio(tone(20))  # ignored once closed
    session.queue_dtmf("1")
    assert session.backlog_bytes == 0 and session.stats.dtmf_sent == 0


def test_marker_bit_at_each_talkspurt_start():
    session = make()
    out = ticks(session, 1, 5)  # silence
    session.queue_audio(tone(100))  # 5 packets
    out += ticks(session, 6, 10)
    session.queue_audio(tone(60))  # 3 packets
    out += ticks(session, 16, 5)
    packets = rtp(out)
    kinds = "".join("s" if is_silence(p) else "a" for p in packets)
    assert kinds == "sssss" + "aaaaa" + "sssss" + "aaa" + "ss"
    markers = [i for i, p in enumerate(packets) if p.marker]
    assert markers == [0, 5, 15]


def test_silence_suppression_keeps_timestamps_in_step():
    session = make(send_silence=False)
    ts0 = session.rtp.timestamp
    assert ticks(session, 1, 5) == []
    session.queue_audio(tone(60))
    first = rtp(ticks(session, 6, 8))  # 3 packets, then 5 idle ticks
    session.queue_audio(tone(40))
    second = rtp(ticks(session, 14, 2))
    packets = first + second
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert [ts_diff(p.timestamp, ts0) for p in packets] == [800, 960, 1120, 2080, 2240]
    seqs = [p.sequence_number for p in packets]
    assert seqs == [seq_add(seqs[0], i) for i in range(5)]


def test_last_partial_packet_is_padded_with_silence():
    session = make(send_silence=False)
    audio = tone(30, amplitude=10000)  # 240 samples: 1.5 packets
    session.queue_audio(audio)
    packets = rtp(ticks(session, 1, 4))
    assert len(packets) == 2 and session.backlog_bytes == 0
    pcm = b"".join(PCMU.decode(p.payload) for p in packets)
    assert pcm[480:] == bytes(160)
    assert pcm[:480] == PCMU.decode(PCMU.encode(audio))


def test_pcma_and_ptime_30():
    session = make(codec=PCMA, ptime_ms=30)
    assert session.samples_per_packet == 240
    session.queue_audio(tone(60))
    packets = rtp(ticks(session, 1, 4))
    assert {p.payload_type for p in packets} == {8}
    assert {len(p.payload) for p in packets} == {240}
    assert [
        ts_diff(b.timestamp, a.timestamp) for a, b in zip(packets, packets[1:], strict=False)
    ] == [240] * 3
    assert [is_silence(p, PCMA) for p in packets] == [False, False, True, True]


def test_clear_audio_makes_the_next_packet_silence():
    session = make()
    session.queue_audio(tone(2000))
    packets = rtp(ticks(session, 1, 10))
    session.clear_audio()
    assert session.backlog_bytes == 0
    packets += rtp(ticks(session, 11, 3))
    assert [is_silence(p) for p in packets] == [False] * 10 + [True] * 3


def test_late_tick_bursts_two_and_skips_the_rest():
    session = make()
    session.queue_audio(tone(400))
    first = rtp(ticks(session, 1, 2))
    late = rtp(session.on_tick(0.3, sends=2, skipped=10))  # the loop stalled 12 deadlines
    after = rtp(ticks(session, 16, 2))
    packets = first + late + after
    assert len(late) == 2 and session.stats.deadlines_skipped == 10
    seqs = [p.sequence_number for p in packets]
    assert seqs == [seq_add(seqs[0], i) for i in range(6)]  # no sequence gap
    jumps = [ts_diff(b.timestamp, a.timestamp) for a, b in zip(packets, packets[1:], strict=False)]
    assert jumps == [160, 160 * 11, 160, 160, 160]  # the timestamp follows time
    assert [p.marker for p in packets] == [True, False, True, False, False, False]
    assert not any(is_silence(p) for p in packets)  # the audio was sent late, not dropped


def test_hold_plays_out_silently_and_resumes_in_step():
    session = make()
    before = rtp(ticks(session, 1, 3))
    session.set_direction(send=False, receive=True, now=0.07)
    session.queue_audio(tone(200))  # 10 packets
    session.queue_dtmf("1")  # in-band: no telephone-event
    backlog = session.backlog_bytes
    assert ticks(session, 4, 10) == []
    assert session.backlog_bytes == backlog - 10 * 320  # drained at the packet pace
    session.set_direction(send=True, receive=True, now=0.27)
    after = rtp(ticks(session, 14, 2))
    assert after[0].sequence_number == seq_add(before[-1].sequence_number, 1)
    assert ts_diff(after[0].timestamp, before[-1].timestamp) == 11 * 160
    assert after[0].marker  # a new talkspurt


def test_hold_drops_pending_telephone_events():
    session = make(telephone_event_pt=TE)
    session.queue_dtmf("1")
    session.set_direction(send=False, receive=True, now=0.0)
    ticks(session, 1, 2)
    session.set_direction(send=True, receive=True, now=0.05)
    assert {p.payload_type for p in rtp(ticks(session, 3, 10))} == {0}


def test_hold_address_sends_nothing():
    session = make(remote_addr=("0.0.0.0", 0), rtcp=True, rtcp_interval_s=0.1)
    assert session.remote_addr is None
    assert ticks(session, 1, 20) == []
    assert session.stats.packets_sent == 0 and session.stats.rtcp_sent == 0


# --- receiving -----------------------------------------------------------------------------


def test_receives_and_decodes_audio():
    session = make()
    payload = PCMU.encode(tone(20))
    heard = [session.receive_rtp(data, SDP, 0.01 * i) for i, data in enumerate(peer_packets(5))]
    assert heard == [PCMU.decode(payload)] * 5
    assert session.stats.packets_received == 5 and session.stats.octets_received == 800
    assert events(session) == []  # from the SDP address: no latching notice


def test_latches_to_a_nat_source_on_the_signaling_host_after_probation():
    session = make(signaling_address=NAT[0])
    assert rtp(ticks(session, 1, 1))  # before latching: to the SDP address
    assert session.remote_addr == SDP and not session.latched
    heard = [session.receive_rtp(data, NAT, 0.03) for data in peer_packets(3)]
    assert heard[:2] == [None, None] and heard[2] is not None  # 3 in a row, then latched
    assert session.stats.packets_on_probation == 2
    assert session.latched and session.remote_addr == NAT
    (notice,) = events(session)
    assert notice == Notice(
        "latched", "latching RTP to 203.0.113.5:31000 (SDP said 192.0.2.10:4000)"
    )
    assert {addr for _, addr, _ in ticks(session, 2, 3)} == {NAT}
    for data in peer_packets(4, ssrc=0xBAD):
        assert session.receive_rtp(data, STRANGER, 0.1) is None
    assert session.stats.packets_wrong_source == 4
    assert session.stats.packets_received == 1 and session.remote_addr == NAT


def test_junk_rtcp_and_unknown_payload_types_are_counted_and_dropped():
    session = make()
    rtcp_rr = bytes.fromhex("81c90007") + bytes(28)
    junk = [b"", b"\x80", b"hello world!", bytes.fromhex("40000001000000000000000b") + b"x"]
    for data in [rtcp_rr, *junk, *peer_packets(2, pt=13)]:  # 13: comfort noise, not negotiated
        assert session.receive_rtp(data, SDP, 0.0) is None
    stats = session.stats
    assert (stats.packets_rtcp, stats.packets_invalid, stats.packets_unknown_pt) == (1, 4, 2)
    assert not session.latched and stats.packets_received == 0
    assert session.receive_rtp(peer_packets(1)[0], SDP, 0.0) is not None


def test_packets_with_csrc_extension_and_padding_take_the_slow_path():
    session = make()
    packet = RtpPacket(0, 7, 160, 0xCAFE, PCMU.encode(tone(20)), csrc=(5,), padding=4)
    assert session.receive_rtp(packet.serialize(), SDP, 0.0) == PCMU.decode(packet.payload)
    bad = bytearray(packet.serialize())
    bad[-1] = 200  # padding longer than the packet
    assert session.receive_rtp(bytes(bad), SDP, 0.0) is None
    assert session.stats.packets_invalid == 1


def test_update_remote_sends_to_the_new_address_and_latches_again():
    session = make()
    session.receive_rtp(peer_packets(1)[0], SDP, 0.0)
    session.update_remote(("192.0.2.20", 5000))
    assert not session.latched and session.remote_addr == ("192.0.2.20", 5000)
    assert events(session) == [Notice("remote", "RTP remote address now 192.0.2.20:5000")]
    assert {addr for _, addr, _ in ticks(session, 1, 2)} == {("192.0.2.20", 5000)}
    session.receive_rtp(peer_packets(1)[0], ("192.0.2.20", 5000), 0.05)
    assert session.latched and session.remote_addr == ("192.0.2.20", 5000)


# --- DTMF ----------------------------------------------------------------------------------


def test_rfc4733_packets_on_the_wire():
    session = make(telephone_event_pt=TE)
    session.queue_audio(tone(200))
    packets = rtp(ticks(session, 1, 2))
    session.queue_dtmf("5", 100)
    packets += rtp(ticks(session, 3, 9))
    events_ = [i for i, p in enumerate(packets) if p.payload_type == TE]
    assert events_ == list(range(2, 9))  # audio waits meanwhile
    assert [packets[i].marker for i in events_] == [True] + [False] * 6
    assert {packets[i].timestamp for i in events_} == {packets[2].timestamp}
    parsed = [TelephoneEvent.parse(packets[i].payload) for i in events_]
    durations = [(e.event, e.end, e.duration) for e in parsed]
    assert durations == [(5, False, 160 * k) for k in (1, 2, 3, 4)] + [(5, True, 800)] * 3
    seqs = [p.sequence_number for p in packets]
    assert seqs == [seq_add(seqs[0], i) for i in range(len(packets))]
    assert ts_diff(packets[9].timestamp, packets[2].timestamp) == 7 * 160
    assert not is_silence(packets[9])  # the rest of the audio follows
    assert session.stats.dtmf_sent == 1


def test_rfc4733_keys_received_once_per_press():
    session = make(telephone_event_pt=TE, extra_telephone_event_pts=[96])
    sender = RtpSender(0, 8000, rng=random.Random(3))
    for i, data in enumerate([*DtmfSender(sender, TE, "1", 60), *DtmfSender(sender, 96, "#", 60)]):
        session.receive_rtp(data, SDP, i / 50)
    assert events(session) == [DtmfReceived("1"), DtmfReceived("#")]
    assert session.stats.dtmf_received == 2


def test_telephone_event_on_an_unknown_payload_type_is_dropped():
    session = make(telephone_event_pt=TE)
    for data in DtmfSender(RtpSender(0, 8000), 96, "4", 60):
        session.receive_rtp(data, SDP, 0.0)
    assert events(session) == [] and session.stats.packets_unknown_pt == 5


def test_keys_pipecat_lacks_become_one_notice_per_press():
    session = make(telephone_event_pt=TE)
    sender = RtpSender(0, 8000, rng=random.Random(3))
    for data in [*DtmfSender(sender, TE, "A", 60), *DtmfSender(sender, TE, "D", 60)]:
        session.receive_rtp(data, SDP, 0.0)
    notices = events(session)
    assert [n.text for n in notices] == [
        "ignoring telephone-event 12 (A): Pipecat's keypad has no such key",
        "ignoring telephone-event 15 (D): Pipecat's keypad has no such key",
    ]
    assert {n.code for n in notices} == {"dtmf_ignored"} and session.stats.dtmf_ignored == 2


def test_telephone_event_renumbered_by_a_reoffer():
    session = make(telephone_event_pt=TE)
    session.set_telephone_event_pt(96)
    session.queue_dtmf("5", 60)
    assert {p.payload_type for p in rtp(ticks(session, 1, 5))} == {96}
    with pytest.raises(ValueError):
        session.set_telephone_event_pt(0)  # the audio payload type
    session.set_telephone_event_pt(None)  # in-band tones from now on
    assert session.telephone_event_pt is None


def test_inband_dtmf_without_telephone_event():
    session = make()
    session.queue_dtmf("7", 100)
    assert session.backlog_bytes == 2 * 8 * (100 + INBAND_GAP_MS)
    packets = rtp(ticks(session, 1, 8))
    assert {p.payload_type for p in packets} == {0}
    pcm = b"".join(PCMU.decode(p.payload) for p in packets[:5])
    assert detect_dtmf(pcm) == "7"
    assert all(is_silence(p) for p in packets[5:])
    assert session.stats.dtmf_sent == 1


@pytest.mark.parametrize("te", [None, TE])
def test_queue_dtmf_rejects_unknown_keys_and_durations(te):
    session = make(telephone_event_pt=te)
    for key, duration in (("X", 100), ("1", 0), ("1", 8001)):
        with pytest.raises(ValueError):
            session.queue_dtmf(key, duration)
    assert session.backlog_bytes == 0 and session.stats.dtmf_sent == 0


# --- RTP timeout ---------------------------------------------------------------------------


def test_rtp_timeout_fires_once_at_the_deadline():
    session = make(rtp_timeout_s=0.2)
    ticks(session, 1, 9)
    assert events(session) == []
    ticks(session, 10, 1)  # 0.2 s after start
    assert events(session) == [RtpTimeout(0.2)]
    ticks(session, 11, 50)
    assert events(session) == []


def test_rtp_timeout_counts_from_the_last_packet_and_zero_disables():
    watched, disabled = make(rtp_timeout_s=0.2), make(rtp_timeout_s=0)
    for k, data in enumerate(peer_packets(30), start=1):
        watched.receive_rtp(data, SDP, k / 50 - 0.005)
        ticks(watched, k, 1)
    assert events(watched) == []
    ticks(watched, 31, 9)  # last packet at 0.595 s: the timeout is due at 0.795 s
    assert events(watched) == []
    ticks(watched, 40, 1)
    assert events(watched) == [RtpTimeout(0.2)]
    ticks(disabled, 1, 100)
    assert events(disabled) == []
    disabled.rtp_timeout_s = 0.1
    ticks(disabled, 101, 1)
    assert events(disabled) == [RtpTimeout(0.1)]


# --- RTCP ----------------------------------------------------------------------------------


def rtcp_out(datagrams):
    return [(data, addr) for data, addr, is_rtcp in datagrams if is_rtcp]


def test_rtcp_reports_on_schedule_with_sr_and_report_block():
    rng = random.Random(5)
    session = make(rng=random.Random(5), rtcp=True, rtcp_interval_s=1.0, cname="bot@test")
    session.wall_offset = 1_700_000_000.0
    rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)  # SSRC, seq, ts: drawn first
    first_due = rng.uniform(0.25, 0.75)
    second_interval = rng.uniform(0.5, 1.5)
    for i, data in enumerate(peer_packets(11)):
        if i != 4:  # one lost
            session.receive_rtp(data, SDP, i / 50)
    datagrams = []
    reports_at = []
    for k in range(1, 150):
        out = session.on_tick(k / 50)
        if rtcp_out(out):
            reports_at.append(k / 50)
        datagrams += out
    assert reports_at[:2] == [
        min(k / 50 for k in range(1, 150) if k / 50 >= first_due),
        min(k / 50 for k in range(1, 150) if k / 50 >= reports_at[0] + second_interval),
    ]
    data, addr = rtcp_out(datagrams)[0]
    assert addr == (SDP[0], SDP[1] + 1)  # RFC 3550 s.11: RTP port + 1
    sr, sdes = parse_compound(data)
    assert sr.packet_type == RTCP_SR and sr.ssrc == session.ssrc and sdes.packet_type == RTCP_SDES
    assert sr.ntp == ntp_timestamp(1_700_000_000.0 + reports_at[0])
    ssrc, loss, ext_max = struct.unpack_from("!III", data, 28)
    assert ssrc == 0xCAFE and loss & 0xFFFFFF == 1 and b"bot@test" in data
    rtp_ts, packets = struct.unpack_from("!II", data, 16)
    sent_by_then = round(reports_at[0] * 50)  # one packet per tick
    assert packets == sent_by_then
    assert rtp_ts == rtp(datagrams)[sent_by_then - 1].timestamp  # the packet of that tick


def test_rtcp_receiver_report_while_held_and_symmetric_rtcp():
    session = make(rtcp=True, rtcp_interval_s=0.2)
    session.receive_rtp(peer_packets(1)[0], SDP, 0.0)
    session.set_direction(send=False, receive=True, now=0.0)
    out = rtcp_out(ticks(session, 1, 20))
    assert out and all(parse_compound(d)[0].packet_type == RTCP_RR for d, _ in out)
    info = SenderInfo(ntp=ntp_timestamp(10.0), rtp_timestamp=0, packets=1, octets=160)
    peer_rtcp = (SDP[0], 4999)
    session.receive_rtcp(compound(0xCAFE, "peer", info, []), peer_rtcp, 0.5)
    later = rtcp_out(ticks(session, 26, 25))
    assert later and {addr for _, addr in later} == {peer_rtcp}
    lsr = struct.unpack_from("!I", later[0][0], 8 + 16)[0]
    assert lsr == (ntp_timestamp(10.0) >> 16) & 0xFFFFFFFF
    session.receive_rtcp(b"\x80\xc8junk", peer_rtcp, 0.6)
    assert session.stats.packets_invalid == 1 and session.stats.packets_rtcp == 2


def test_rtcp_from_another_host_than_the_latched_source_is_dropped():
    session = make(rtcp=True)
    session.receive_rtp(peer_packets(1)[0], SDP, 0.0)
    session.receive_rtcp(compound(1, "x", None, []), STRANGER, 0.1)
    assert session.stats.packets_wrong_source == 1 and session.stats.packets_rtcp == 0


# --- jitter buffer slot ----------------------------------------------------------------------


class PassThrough:
    """The simplest jitter buffer: what was put is due at the next pop."""

    def __init__(self, lose: set[int] = frozenset()):
        self.lose = lose  # sequence numbers to report as lost
        self.put_log: list[tuple[int, float]] = []
        self._due: list[RtpPacket | None] = []

    def put(self, packet: RtpPacket, now: float) -> None:
        self.put_log.append((packet.payload_type, now))
        self._due.append(None if packet.sequence_number in self.lose else packet)

    def pop(self, now: float) -> list[RtpPacket | None]:
        due, self._due = self._due, []
        return due


class ConcealingCodec(Codec):
    """PCMU with a conceal() that says so."""

    encoding_name, payload_type, clock_rate, sample_rate = "PCMU", 0, 8000, 8000

    def encode(self, pcm):
        return PCMU.encode(pcm)

    def decode(self, payload):
        return PCMU.decode(payload)

    def conceal(self, samples):
        return b"\x01\x00" * samples


def test_jitter_buffer_gets_every_accepted_packet_and_plays_out_on_ticks():
    buffer = PassThrough()
    session = make(jitter_buffer=buffer, telephone_event_pt=TE, comfort_noise_pt=13)
    audio = peer_packets(2)
    cn = RtpSender(13, 8000, ssrc=0xCAFE).packet(b"\x40", 160)
    dtmf = list(DtmfSender(RtpSender(0, 8000, ssrc=0xCAFE), TE, "3", 40))
    for data in [*audio, cn, *dtmf]:
        assert session.receive_rtp(data, SDP, 0.01) is None  # nothing at once
    assert [pt for pt, _ in buffer.put_log] == [0, 0, 13] + [TE] * len(dtmf)
    assert events(session) == []
    ticks(session, 1, 1)
    pcm = PCMU.decode(PCMU.encode(tone(20)))
    assert events(session) == [
        AudioReceived(pcm),
        AudioReceived(pcm),
        AudioReceived(bytes(320)),  # comfort noise: silence
        DtmfReceived("3"),
    ]


def test_jitter_buffer_losses_are_concealed_by_the_codec_or_with_silence():
    for codec, expected in ((ConcealingCodec(), b"\x01\x00" * 160), (PCMU, bytes(320))):
        session = make(codec=codec, jitter_buffer=PassThrough(lose={1}))
        for seq in range(3):
            data = RtpPacket(0, seq, 160 * seq, 7, PCMU.encode(tone(20))).serialize()
            session.receive_rtp(data, SDP, 0.0)
        ticks(session, 1, 1)
        got = events(session)
        assert [e.concealed for e in got] == [False, True, False]
        assert got[1].pcm == expected


def test_a_late_tick_plays_out_once_per_packet_time_it_sends():
    """Regression: a tick of a late clock (``sends=2``) popped the jitter buffer
    once; each such tick left the buffer a frame behind, and after a few it took
    the lag for missed ticks and dropped the packets of the slots it skipped
    (11% of packets late under load)."""
    from pipecat_sip.rtp.jitterbuffer import JitterBuffer

    session = make(jitter_buffer=JitterBuffer(8000, 20))
    packets = peer_packets(400)
    late = set(range(40, 400, 10))  # every 10th deadline is missed, made up by the next tick
    for k, data in enumerate(packets):
        session.receive_rtp(data, SDP, k / 50)
        if k in late:
            continue
        session.on_tick(k / 50 + 0.01, sends=2 if k - 1 in late else 1)
    played = [e for e in events(session) if isinstance(e, AudioReceived)]
    stats = session.jitter_buffer.stats
    assert (stats.late, stats.missed_ticks, stats.concealed) == (0, 0, 0)
    assert len(played) >= 398 and not any(e.concealed for e in played)


# --- codecs: per-stream state, sample rate vs RTP clock -------------------------------------


class WidebandCodec(Codec):
    """A G.722-like stand-in: 16 kHz PCM, 8 kHz RTP clock, one byte per two samples."""

    encoding_name, payload_type, clock_rate, sample_rate = "G722", 9, 8000, 16000
    streams = 0

    def __init__(self, template: bool = True):
        self.template = template
        self.encoded = 0

    def for_stream(self):
        WidebandCodec.streams += 1
        return WidebandCodec(template=False)

    def encode(self, pcm):
        assert not self.template, "the shared codec object must not be used for a stream"
        self.encoded += 1
        return bytes(len(pcm) // 4)

    def decode(self, payload):
        assert not self.template
        return bytes(4 * len(payload))

    def silence(self, samples):
        return bytes(samples // 2)


def test_stateful_codec_gets_its_own_stream_object_and_rates_stay_apart():
    WidebandCodec.streams = 0
    session = make(codec=WidebandCodec())
    assert WidebandCodec.streams == 1
    assert session.samples_per_packet == 320 and session.sample_rate == 16000
    session.queue_audio(bytes(640 * 3))  # 60 ms of 16 kHz PCM
    packets = rtp(ticks(session, 1, 5))
    assert [len(p.payload) for p in packets] == [160] * 5
    assert [
        ts_diff(b.timestamp, a.timestamp) for a, b in zip(packets, packets[1:], strict=False)
    ] == [160] * 4
    assert session._stream_codec.encoded == 5  # silence is encoded afresh (stateful codec)
    data = RtpPacket(9, 1, 0, 7, bytes(160)).serialize()
    assert len(session.receive_rtp(data, SDP, 0.0)) == 640


def test_telephone_events_do_not_count_as_jitter():
    # RFC 4733 s.2.5.1.2: every packet of an event carries the event's start
    # timestamp. Fed to the RFC 3550 A.8 estimate they looked like 50 ms of transit
    # change each: a jitter-free path reported ~20 ms of jitter during a digit.
    peer = ("192.0.2.10", 4000)

    def rtp(pt, seq, ts, payload, marker=False):
        first = (0x80 if marker else 0) | pt
        return struct.pack("!BBHII", 0x80, first, seq & 0xFFFF, ts, 0xCAFE) + payload

    session = MediaSession(
        codec=PCMU, remote_addr=peer, rng=random.Random(1), telephone_event_pt=101, rtcp=True
    )
    session.start(0.0)
    seq, ts, t = 1000, 50000, 0.0
    for _ in range(50):  # 1 s of audio, exactly on time
        session.receive_rtp(rtp(0, seq, ts, b"\x55" * 160), peer, t)
        seq, ts, t = seq + 1, ts + 160, t + 0.02
    for k in range(8):  # a 400 ms digit, an event packet every 50 ms, then its end x3
        event = struct.pack("!BBH", 5, 10, (k + 1) * 400)
        session.receive_rtp(rtp(101, seq, ts, event, marker=k == 0), peer, t)
        seq, t = seq + 1, t + 0.05
    for _ in range(3):
        session.receive_rtp(rtp(101, seq, ts, struct.pack("!BBH", 5, 0x8A, 3200)), peer, t)
        seq, t = seq + 1, t + 0.02
    assert session.quality_snapshot(t).jitter_ms == pytest.approx(0.0, abs=0.01)


def test_one_packet_of_another_ssrc_does_not_reset_the_reception_statistics():
    # RFC 3550 A.1: a new source is followed once its next packet is in sequence.
    # One stray packet used to start fresh statistics: our next RR said 0 lost
    # about a stream that had lost 10%.
    peer = ("192.0.2.10", 4000)

    def rtp(ssrc, seq, ts):
        return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc) + b"\x55" * 160

    session = MediaSession(codec=PCMU, remote_addr=peer, rng=random.Random(1), rtcp=True)
    session.start(0.0)
    t = 0.0
    for i in range(100):
        if i % 10 != 5:  # 10% lost
            session.receive_rtp(rtp(0xA, 1000 + i, 160 * i), peer, t)
        t += 0.02
    lost = session.quality_snapshot(t).packets_lost
    assert lost == 10
    session.receive_rtp(rtp(0xB, 7, 999), peer, t)  # one stray packet
    session.receive_rtp(rtp(0xA, 1100, 16000), peer, t + 0.02)  # the stream goes on
    assert session.quality_snapshot(t + 0.02).packets_lost == lost
    # A source that really takes over (two packets in sequence) is followed.
    session.receive_rtp(rtp(0xB, 8, 1000), peer, t + 0.04)
    session.receive_rtp(rtp(0xB, 9, 1160), peer, t + 0.06)
    assert session._reporter.reception.ssrc == 0xB


def test_an_rtcp_flood_is_dropped_unread_past_the_rate_limit():
    # RFC 3550 s.6.2: a report every few seconds. A flood of worst-case compounds
    # (16 RRs of 31 blocks each, ~1.2 ms to read) could take the event loop.
    from pipecat_sip.rtp.session import MAX_RTCP_RATE

    peer = ("192.0.2.10", 4000)
    session = MediaSession(codec=PCMU, remote_addr=peer, rng=random.Random(1), rtcp=True)
    session.start(0.0)
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0xBBBB)  # an RR without blocks
    rtcp_addr = (peer[0], peer[1] + 1)
    for _ in range(200):
        session.receive_rtcp(rr, rtcp_addr, 1.0)
    assert session.stats.packets_rtcp == MAX_RTCP_RATE
    assert session.stats.rtcp_over_rate == 200 - MAX_RTCP_RATE
    session.receive_rtcp(rr, rtcp_addr, 1.5)  # the allowance refills with time
    assert session.stats.packets_rtcp == MAX_RTCP_RATE + 1
