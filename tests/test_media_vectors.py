"""RTP, RTCP and RFC 4733 vectors (tests/data/rtp): parsed fields and byte-exact round trips."""

import json
from pathlib import Path

import pytest

from pipecat_sip.rtp import RtpHeaderExtension, RtpPacket, TelephoneEvent
from pipecat_sip.rtp.rtcp import SenderInfo, compound, parse_compound

DATA = Path(__file__).parent / "data" / "rtp"
VECTORS = json.loads((DATA / "vectors.json").read_text())
RTP = sorted(name for name, v in VECTORS.items() if v["kind"] == "rtp")
RTCP = sorted(name for name, v in VECTORS.items() if v["kind"] == "rtcp")


def test_every_file_has_its_fields_and_every_entry_its_file():
    files = {p.name for p in DATA.iterdir() if p.suffix in (".rtp", ".rtcp")}
    assert files == set(VECTORS)


@pytest.mark.parametrize("name", RTP)
def test_rtp_vector(name):
    data = (DATA / name).read_bytes()
    fields = VECTORS[name]
    packet = RtpPacket.parse(data)
    extension = fields["extension"]
    assert packet == RtpPacket(
        payload_type=fields["payload_type"],
        sequence_number=fields["sequence_number"],
        timestamp=fields["timestamp"],
        ssrc=fields["ssrc"],
        payload=bytes.fromhex(fields["payload"]),
        marker=fields["marker"],
        csrc=tuple(fields["csrc"]),
        extension=(
            None
            if extension is None
            else RtpHeaderExtension(extension["profile"], bytes.fromhex(extension["data"]))
        ),
        padding=fields["padding"],
    )
    assert packet.serialize() == data


@pytest.mark.parametrize("name", [n for n in RTP if "telephone_event" in VECTORS[n]])
def test_rfc4733_vector(name):
    packet = RtpPacket.parse((DATA / name).read_bytes())
    event = TelephoneEvent.parse(packet.payload)
    assert event == TelephoneEvent(**VECTORS[name]["telephone_event"])
    assert event.serialize() == packet.payload


@pytest.mark.parametrize("name", RTCP)
def test_rtcp_vector(name):
    data = (DATA / name).read_bytes()
    fields = VECTORS[name]
    parsed = [
        {"packet_type": p.packet_type, "ssrc": p.ssrc, "ntp": p.ntp} for p in parse_compound(data)
    ]
    assert parsed == fields["packets"]
    build = fields["build"]
    if build is None:
        return
    sender = build["sender"]
    rebuilt = compound(
        build["ssrc"],
        build["cname"],
        None if sender is None else SenderInfo(**sender),
        [bytes.fromhex(block) for block in build["blocks"]],
        build["bye"],
    )
    assert rebuilt == data
