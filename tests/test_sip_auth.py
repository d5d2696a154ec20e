"""Digest authentication (RFC 2617 s.3.5's example, RFC 7616 s.3.9.1's SHA-256 example)."""

import pytest

from pipecat_sip.sip.auth import DigestChallenge, digest_authorization, parse_challenge


def params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    out = {}
    for part in value[len("Digest ") :].split(", "):
        name, _, v = part.partition("=")
        out[name] = v.strip('"')
    return out


def test_rfc2617_example_response():
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == ("auth", "auth-int") and challenge.algorithm == "MD5"
    value = digest_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    got = params(value)
    assert got["response"] == "6629fae49393a05397450978507c4ef1"
    assert got["nc"] == "00000001" and got["qop"] == "auth" and got["cnonce"] == "0a4f113b"
    assert got["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def test_rfc7616_sha256_example_response():
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    value = digest_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert params(value)["response"] == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_no_qop_and_bad_challenges():
    challenge = DigestChallenge(realm="r", nonce="n")
    value = digest_authorization(challenge, "REGISTER", "sip:pbx", "u", "p")
    assert "qop" not in value and "cnonce" not in value
    with pytest.raises(ValueError, match="Digest"):
        parse_challenge('Basic realm="x"')
    with pytest.raises(ValueError, match="realm or nonce"):
        parse_challenge('Digest realm="x"')
    with pytest.raises(ValueError, match="algorithm"):
        parse_challenge('Digest realm="x", nonce="y", algorithm=SHA-512-256')
    with pytest.raises(ValueError, match="unterminated"):
        parse_challenge('Digest realm="x", nonce="y')
    with pytest.raises(ValueError, match="auth"):
        digest_authorization(DigestChallenge("r", "n", qop=("auth-int",)), "A", "b", "u", "p")
