"""SIP URIs, addresses and parameters (RFC 3261 s.19.1, s.20.10, s.25.1)."""

from __future__ import annotations

import pytest

from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import (
    SIPURI,
    AbsoluteURI,
    Address,
    format_params,
    parse_params,
    parse_uri,
    split_outside_quotes,
)

# --- SIPURI -------------------------------------------------------------------------------


def test_sip_uri_all_parts():
    uri = SIPURI.parse("sip:alice:secretword@atlanta.com:5070;transport=tcp;lr?subject=project")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secretword"
    assert uri.host == "atlanta.com"
    assert uri.port == 5070
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == [("subject", "project")]
    assert uri.get_param("TRANSPORT") == "tcp"
    assert uri.has_param("LR") and uri.get_param("lr") is None
    assert not uri.has_param("maddr")
    assert str(uri) == "sip:alice:secretword@atlanta.com:5070;transport=tcp;lr?subject=project"


@pytest.mark.parametrize(
    "text",
    [
        # RFC 3261 s.19.1.3 examples
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sips:1212@gateway.com",
        "sip:alice@192.0.2.4",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
    ],
)
def test_rfc3261_19_1_3_examples_round_trip(text):
    uri = parse_uri(text)
    assert isinstance(uri, SIPURI)
    assert str(uri) == text
    assert SIPURI.parse(str(uri)) == uri


def test_rfc3261_examples_fields():
    uri = SIPURI.parse("sips:alice@atlanta.com?subject=project%20x&priority=urgent")
    assert uri.scheme == "sips"
    assert uri.headers == [("subject", "project%20x"), ("priority", "urgent")]
    assert uri.host_port == ("atlanta.com", 5061)
    uri = SIPURI.parse("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert (uri.user, uri.password, uri.get_param("user")) == ("+1-212-555-1212", "1234", "phone")
    uri = SIPURI.parse("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com")
    assert uri.user is None and uri.host == "atlanta.com"
    assert uri.get_param("method") == "REGISTER"
    # a ';' in the user part belongs to the user (semiuri, RFC 4475 s.3.1.1.9)
    uri = SIPURI.parse("sip:alice;day=tuesday@atlanta.com")
    assert uri.user == "alice;day=tuesday" and uri.params == {}


def test_scheme_is_case_insensitive_and_lowered():
    uri = SIPURI.parse("SIP:bob@Biloxi.COM")
    assert uri.scheme == "sip"
    assert uri.host == "Biloxi.COM"  # kept as written; compare hosts case-insensitively
    assert str(uri) == "sip:bob@Biloxi.COM"


def test_escapes_are_kept_as_on_the_wire():
    # esc01: values keep their escaped form; "value%41" is not "valueA"
    uri = SIPURI.parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "cal%6Cer"
    assert uri.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}
    assert str(uri) == "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    assert SIPURI.parse("sip:null-%00-null@example.com").user == "null-%00-null"


@pytest.mark.parametrize(
    ("text", "host", "port", "host_port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None, ("2001:db8::10", 5060)),
        ("sip:[2001:db8::10]:5070", "[2001:db8::10]", 5070, ("2001:db8::10", 5070)),
        ("sips:user@[2001:db8::9:1]", "[2001:db8::9:1]", None, ("2001:db8::9:1", 5061)),
        (
            "sip:user@[::ffff:192.0.2.1]:5060",
            "[::ffff:192.0.2.1]",
            5060,
            ("::ffff:192.0.2.1", 5060),
        ),
        ("sip:192.0.2.1:65535", "192.0.2.1", 65535, ("192.0.2.1", 65535)),
        ("sip:example.com.", "example.com.", None, ("example.com.", 5060)),
    ],
)
def test_hosts_and_ports(text, host, port, host_port):
    uri = SIPURI.parse(text)
    assert (uri.host, uri.port, uri.host_port) == (host, port, host_port)
    assert str(uri) == text


def test_ipv6_uri_with_params():
    uri = SIPURI.parse("sip:[2001:db8::10]:5070;transport=udp;maddr=[2001:db8::20]")
    assert uri.host == "[2001:db8::10]" and uri.port == 5070
    assert uri.params == {"transport": "udp", "maddr": "[2001:db8::20]"}


def test_intmeth_request_uri_user_and_password():
    # RFC 4475 s.3.1.1.2: unusual but legal characters in user and password
    uri = SIPURI.parse(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.params == {} and uri.headers == []


def test_built_uri_serializes():
    uri = SIPURI(host="192.0.2.4", user="bob", port=5062, params={"transport": "udp", "lr": None})
    assert str(uri) == "sip:bob@192.0.2.4:5062;transport=udp;lr"
    assert SIPURI(host="example.com").host_port == ("example.com", 5060)


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",  # empty user
        "sip:user@",  # no host
        "sip:user@exa mple.com",
        "sip:us er@example.com",  # LWS in the URI (lwsruri)
        "sip:user@example.com:0",
        "sip:user@example.com:65536",
        "sip:user@example.com:50x",
        "sip:user@example.com:\u00b2",  # superscript two: str.isdigit() but not a DIGIT
        "sip:user@example.com:\u0661",  # Arabic-Indic one
        "sip:user@[2001:db8::1",  # unterminated IPv6 reference
        "sip:user@[2001:db8::1]x",
        "sip:user@host_name.com",
        "sip:user@example.com;;lr",  # empty parameter
        "sip:user@example.com;=x",
        "sip:user@example.com?",  # "?" without a header
        "sip:user@example.com?=x",
        'sip:us"er@example.com',
        "sip:user@example.com<",
        "sip:user\x00@example.com",
        "<sip:user@example.com>",
    ],
)
def test_invalid_sip_uris(text):
    with pytest.raises(SIPParseError) as info:
        parse_uri(text)
    assert info.value.status_code == 400


def test_sipuri_parse_rejects_other_schemes_with_416():
    with pytest.raises(SIPParseError) as info:
        SIPURI.parse("tel:+1-201-555-0123")
    assert info.value.status_code == 416


# --- AbsoluteURI ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("tel:+1-201-555-0123", "tel"),
        ("tel:7042;phone-context=example.com", "tel"),
        ("TEL:+358-555-1234567", "tel"),
        ("urn:service:sos", "urn"),
        ("http://www.example.com", "http"),
        ("isbn:2983792873", "isbn"),  # unksm2
        ("name:John_Smith", "name"),
        ("soap.beep://192.0.2.103:3002", "soap.beep"),  # novelsc
        ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme"),  # unkscm
    ],
)
def test_other_schemes_are_absolute_uris(text, scheme):
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteURI)
    assert uri.scheme == scheme
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tel",
        "tel:",
        "1tel:123",
        "te l:123",
        "tel:12 34",
        "tel:<123>",
        'tel:"1"',
        ":abc",
        "tel:1\x00",
        "urn:\x7f",
    ],
)
def test_invalid_absolute_uris(text):
    with pytest.raises(SIPParseError):
        parse_uri(text)


# --- parameters and splitting --------------------------------------------------------------


def test_parse_params():
    assert parse_params("") == {}
    assert parse_params("  ") == {}
    assert parse_params("tag=1928301774") == {"tag": "1928301774"}
    assert parse_params("lr;transport=udp") == {"lr": None, "transport": "udp"}
    # LWS around ';' and '=' (wsinv)
    assert parse_params(" newparam =  newvalue ;  secondparam ; q = 0.33") == {
        "newparam": "newvalue",
        "secondparam": None,
        "q": "0.33",
    }
    # quoted values keep their quotes and may contain ';'
    assert parse_params('purpose=info;note="a;b"') == {"purpose": "info", "note": '"a;b"'}
    # a value may be empty
    assert parse_params("branch=") == {"branch": ""}


@pytest.mark.parametrize("text", [";", "a;", ";a", "a;;b", "a b=1", "=1", '"x"=1', 'a="1'])
def test_invalid_params(text):
    with pytest.raises(SIPParseError):
        parse_params(text)


def test_format_params():
    assert format_params({}) == ""
    assert format_params({"lr": None, "tag": "x"}) == ";lr;tag=x"
    params = {"received": "192.0.2.1", "rport": None, "branch": "z9hG4bK1"}
    assert parse_params(format_params(params)[1:]) == params


def test_split_outside_quotes():
    assert split_outside_quotes("a, b ,c", ",") == ["a", "b", "c"]
    assert split_outside_quotes('"Bell, Alexander" <sip:a@b>, <sip:c@d>', ",") == [
        '"Bell, Alexander" <sip:a@b>',
        "<sip:c@d>",
    ]
    # commas inside <...> (a URI header) do not split
    assert split_outside_quotes("<sip:a@b?x=1,2>, <sip:c@d>", ",") == [
        "<sip:a@b?x=1,2>",
        "<sip:c@d>",
    ]
    # an escaped quote does not end the quoted string
    assert split_outside_quotes(r'"a\", b" <sip:a@b>, x', ",") == [r'"a\", b" <sip:a@b>', "x"]
    assert split_outside_quotes(r'"a\\", b', ",") == [r'"a\\"', "b"]
    # empty pieces are kept (callers decide)
    assert split_outside_quotes(";;,", ",") == [";;", ""]
    assert split_outside_quotes("", ",") == [""]
    assert split_outside_quotes("a;b", ";") == ["a", "b"]


@pytest.mark.parametrize("text", ['"abc, d', "<sip:a@b, c", r'"abc\"'])
def test_split_outside_quotes_unterminated(text):
    with pytest.raises(SIPParseError):
        split_outside_quotes(text, ",")


# --- Address ----------------------------------------------------------------------------------


def test_address_name_addr():
    a = Address.parse('"Bob" <sips:bob@biloxi.com> ;tag=a48s')
    assert a.display_name == "Bob"
    assert isinstance(a.uri, SIPURI) and a.uri.scheme == "sips" and a.uri.user == "bob"
    assert a.tag == "a48s"
    assert str(a) == '"Bob" <sips:bob@biloxi.com>;tag=a48s'


def test_address_token_display_name():
    a = Address.parse("Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8")
    assert a.display_name == "Anonymous" and a.tag == "hyh8"
    # several tokens: LWS collapses to one SP (intmeth From)
    a = Address.parse("token1~` token2'+_   token3*%!.- <sip:mundane@example.com>;tag=x")
    assert a.display_name == "token1~` token2'+_ token3*%!.-"
    # no LWS before '<' (lwsdisp, RFC 4475 s.3.1.1.6: accept)
    a = Address.parse("caller<sip:caller@example.com>;tag=323")
    assert a.display_name == "caller" and a.tag == "323"


def test_address_quoted_display_name_with_escapes():
    # wsinv From: "J Rosenberg \\\"" is the text  J Rosenberg \"
    a = Address.parse('"J Rosenberg \\\\\\""       <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert a.display_name == 'J Rosenberg \\"'
    assert a.tag == "98asjd8"
    # wsinv Contact: "Quoted string \"\"" is the text  Quoted string ""
    a = Address.parse('"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue')
    assert a.display_name == 'Quoted string ""'
    assert a.get_param("NEWPARAM") == "newvalue"
    # the quoted string hides '<', ',' and ';'
    a = Address.parse('"<Bell>, A;B" <sip:a.g.bell@example.com>')
    assert a.display_name == "<Bell>, A;B" and a.params == {}
    # empty display name
    assert Address.parse('"" <sip:x@y>').display_name == ""
    # esc02: % is not an escape in a quoted string
    assert Address.parse('"%Z%45" <sip:resource@example.com>').display_name == "%Z%45"


def test_address_quoted_pair_control_characters():
    # intmeth To: quoted-pairs of BEL, NUL and DEL
    a = Address.parse(
        '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
        "<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>"
    )
    assert a.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert (
        isinstance(a.uri, SIPURI)
        and a.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    )
    # serializing escapes them again, and the result parses back to the same address
    again = Address.parse(str(a))
    assert again == a


def test_address_str_escapes_quotes_and_backslashes():
    a = Address(uri=SIPURI(host="example.com", user="a"), display_name='say "hi" \\ bye')
    assert str(a) == '"say \\"hi\\" \\\\ bye" <sip:a@example.com>'
    assert Address.parse(str(a)) == a


def test_address_str_never_writes_cr_or_lf():
    a = Address(uri=SIPURI(host="example.com"), display_name="evil\r\nVia: x")
    text = str(a)
    assert "\r" not in text and "\n" not in text
    assert Address.parse(text).display_name == "evil  Via: x"


def test_address_addr_spec_params_are_header_params():
    # RFC 3261 s.20.10; cparam01: ";unknownparam" belongs to the Contact, not the URI
    a = Address.parse("sip:+19725552222@gw1.example.net;unknownparam")
    assert a.display_name is None
    assert isinstance(a.uri, SIPURI) and a.uri.params == {}
    assert a.params == {"unknownparam": None}
    assert str(a) == "<sip:+19725552222@gw1.example.net>;unknownparam"
    # cparam02: inside <...> it is a URI parameter
    a = Address.parse("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(a.uri, SIPURI) and a.uri.params == {"unknownparam": None}
    assert a.params == {}
    # wsinv To: LWS before ';' and around '='
    a = Address.parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert a.tag == "1918181833n"
    assert isinstance(a.uri, SIPURI) and a.uri.host == "chair-dnrc.example.com"


def test_address_with_other_schemes():
    a = Address.parse("isbn:2983792873")
    assert a.uri == AbsoluteURI("isbn:2983792873")
    a = Address.parse("<http://www.example.com>;tag=3234233")
    assert isinstance(a.uri, AbsoluteURI) and a.uri.scheme == "http" and a.tag == "3234233"
    a = Address.parse('"Tel" <tel:+1-201-555-0123;phone-context=x>;tag=1')
    assert a.uri == AbsoluteURI("tel:+1-201-555-0123;phone-context=x") and a.tag == "1"


def test_address_with_tag_and_params():
    a = Address.parse("Bob <sip:bob@biloxi.com>;TAG=old;expires=60")
    assert a.tag == "old"  # parameter names are case-insensitive
    b = a.with_tag("new")
    assert b.tag == "new" and b.get_param("expires") == "60"
    assert a.tag == "old"  # the original is unchanged
    assert str(b) == '"Bob" <sip:bob@biloxi.com>;expires=60;tag=new'
    assert Address.parse("<sip:a@b>").tag is None


def test_address_uri_headers_need_angle_brackets():
    # regescrt: valid in name-addr form
    a = Address.parse("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
    assert isinstance(a.uri, SIPURI) and a.uri.headers == [("Route", "%3Csip:sip.example.com%3E")]
    # regbadct: the same URI as an addr-spec is invalid
    with pytest.raises(SIPParseError):
        Address.parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E")


def test_address_liberal_about_spaces_inside_angle_brackets():
    # badaspec (RFC 4475 s.3.1.2.14): rejecting is reasonable, "elements attempting to
    # be liberal may ignore the spaces". We ignore them: the URI itself has no space.
    a = Address.parse('"Watson, Thomas" < sip:t.watson@example.org >')
    assert a.display_name == "Watson, Thomas"
    assert str(a.uri) == "sip:t.watson@example.org"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # baddn: unquoted ','
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal
        '"Mr J. User <sip:j.user@example.com> <sip:realj@example.net>',
        '"a" "b" <sip:a@b>',
        '"a"b <sip:a@b>',
        '"a\\" <sip:a@b>',
        "<sip:a@b",
        "<sip:a@b> junk",
        "<sip:a@b>;;tag=1",
        '"Joe" <sip:joe@example.org>;;;;',  # badinv01 Contact
        "<>",
        "sip:a@b, sip:c@d",
        "<sip:a b@c>",
        "<tel:1 2>",
    ],
)
def test_invalid_addresses(text):
    with pytest.raises(SIPParseError):
        Address.parse(text)
