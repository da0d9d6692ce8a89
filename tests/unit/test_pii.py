"""PII scrubbing: every address and number form replaced, decoys and reserved ranges kept,
per-kind counts in the document, the step's stats and the funnel. Values here are
hand-written; ``bench/pii_planted.py`` measures on generated ones."""

import ipaddress

import pytest

from pretrain.config import ConfigError
from pretrain.data.config import PiiConfig
from pretrain.data.document import Document
from pretrain.data.funnel import Funnel, format_funnel
from pretrain.data.pii import PiiScrub, classify_ipv4, classify_ipv6, plausible_intl

V6 = "2001:db8::1"


def _scrub(text: str, **cfg) -> tuple[str, dict]:
    out, counts = PiiScrub(PiiConfig(**cfg)).scrub(text)
    return out, dict(counts)


@pytest.mark.parametrize("text, expected", [
    ("2a02:8071:1b2:c400:0:0:0:7", V6),                               # full, no zeros dropped
    ("2A02:8071:01B2:C400:0000:0000:0000:0007", V6),                  # upper case, leading 0s
    ("2a02:8071:1b2:c400::7", V6),                                    # compressed
    ("2A02:8071:1b2:C400::7", V6),                                    # mixed case
    ("2606:4700::", V6),                                              # trailing ::
    ("::ffff:81.2.69.160", V6),                                       # mapped, public tail
    ("64:ff9b::81.2.69.160", V6),                                     # NAT64, public tail
    ("2a02:8071:1b2:c400::7%wlan0", V6),                              # zone id
    ("[2a02:8071:1b2:c400::7]:8443", f"[{V6}]:8443"),                 # brackets and port
    ("ftp://[2a02:8071:1b2:c400::7]/pub/", f"ftp://[{V6}]/pub/"),     # URL
    ("host 2a02:8071:1b2:c400::7.", f"host {V6}."),                   # sentence end
    ("net 2a02:8071::/32 routes", f"net {V6}/32 routes"),             # a prefix
])
def test_ipv6_forms_are_replaced(text, expected):
    out, counts = _scrub(text)
    assert out == expected and counts == {"ipv6_replaced": 1}


@pytest.mark.parametrize("text", [
    "::1", "fe80::a1b:2%eth1", "fd12:3456:789a::1", "ff02::fb", "2001:db8:aa::5",
    "::ffff:10.1.2.3", "64:ff9b::192.168.7.7", "3fff:12::9"])
def test_reserved_ipv6_is_kept_and_counted(text):
    assert _scrub(f"see {text} now") == (f"see {text} now", {"ipv6_kept": 1})


@pytest.mark.parametrize("text", [
    "at 12:30:45 and 07:05:00.250", "std::vector<int> v; boost::asio::ip", "xs[1::2] ys[::3]",
    "mac 3c:5a:b4:01:9f:e2", "Abc::Def and dead::beef", "John 3:16, ratio 2:1:1",
    "12 :: What is next", "fp 43:51:43:a1:b5:fc:8b:b7:0a:3a:a9:b1:0f:66:73:a8",
    "uuid 550e8400-e29b-41d4-a716-446655440000", "time=2024-01-15T12:30:45Z"])
def test_ipv6_decoys_are_left_alone_uncounted(text):
    assert _scrub(text) == (text, {})


def test_ipv4_public_replaced_reserved_kept_versions_ignored():
    text = ("Server 81.2.69.160 answers, also 81.2.69.161:8080 and http://81.2.69.162/x. "
            "Local 192.168.1.10, 10.0.0.1, 127.0.0.1, 169.254.3.4, 100.64.0.9, 224.0.0.251, "
            "docs 198.51.100.7. Version 1.2.3.4, v1.2.3.4, Driver 14.0.1.0, 300.1.2.3, "
            "1.2.3.4.5 and 1.2.3.4-beta stay. End at 81.2.69.163.")
    out, counts = _scrub(text)
    assert "81.2.69.16" not in out and out.count("192.0.2.1") == 4
    assert out.endswith("End at 192.0.2.1.")
    for kept in ("192.168.1.10", "10.0.0.1", "127.0.0.1", "169.254.3.4", "100.64.0.9",
                 "224.0.0.251", "198.51.100.7", "Version 1.2.3.4", "v1.2.3.4", "14.0.1.0",
                 "300.1.2.3", "1.2.3.4.5", "1.2.3.4-beta"):
        assert kept in out, kept
    assert counts == {"ipv4_replaced": 4, "ipv4_kept": 7}
    # a range: its first address is not "1.2.3.4-beta" (it was kept, public)
    assert _scrub("blocked 81.2.69.160-81.2.69.255 today") == (
        "blocked 192.0.2.1-192.0.2.1 today", {"ipv4_replaced": 2})


@pytest.mark.parametrize("phone", [
    "+44 20 7946 0123", "+44 (0)20 7946 0123", "+49 (0)30 901820", "+49 30/901820",
    "+33 1 42 68 53 00", "+33.1.42.68.53.00", "+1-202-555-0173", "0044 20 7946 0123",
    "+91 98765 43210", "+86 10 6552 9988", "+81-3-3224-9999", "+7 495 697-03-49",
    "+61 2 9374 4000", "+4930901820", "(202) 555-0173", "202-555-0173", "202.555.0173",
    "1-800-555-0199", "+1 (202) 555-0173", "tel:+12025550173"])
def test_phone_forms_are_replaced(phone):
    out, counts = _scrub(f"Call {phone}, thanks.")
    scheme = "tel:" if phone.startswith("tel:") else ""
    assert out == f"Call {scheme}555-0100, thanks." and counts == {"phone_replaced": 1}


@pytest.mark.parametrize("text", [
    "On 2024-01-15 and 15.01.2024 (01/15/2024)", "ISBN 978-3-16-148410-0, ISBN 0-306-40615-2",
    "costs $1,234,567.89 or 1 234 567 EUR", "at +40.7128, -74.0060 and +44.5 12.3 45.6",
    "sha1 3f786850e387550fdab836ed7e6dc881de23001b, commit 9fceb02", "SKU-4471-2290",
    "+1 234 567 more", "up +3.5% on 12.345.678 units", "123-456-7890 is a placeholder",
    "score +12 34", "logo@2x.png"])
def test_number_and_email_decoys_are_kept(text):
    assert _scrub(text) == (text, {})


def test_emails_replaced_example_domains_kept():
    assert _scrub("a@notexample.com")[0] == "email@example.com"
    out, counts = _scrub("Mail jane.doe@company.com or <Ops+alerts@mail.uni-bonn.de>; "
                         "examples: a@mx.example.org, b@test.example, email@example.com.")
    assert out == ("Mail email@example.com or <email@example.com>; examples: a@mx.example.org, "
                   "b@test.example, email@example.com.")
    assert counts == {"email_replaced": 2, "email_kept": 3}
    # an apostrophe is allowed in a local part (RFC 5322): "john.o'" was left before it
    assert _scrub("Write to john.o'reilly@company.com.") == (
        "Write to email@example.com.", {"email_replaced": 1})


def test_scrubbing_is_idempotent_and_switches_work():
    text = "x@corp.io +44 20 7946 0123 81.2.69.160 2a02:8071::7"
    once, _ = _scrub(text)
    assert _scrub(once)[0] == once and "replaced" not in str(_scrub(once)[1])
    out, counts = _scrub(text, ips=False, phones=False)
    assert out == "email@example.com +44 20 7946 0123 81.2.69.160 2a02:8071::7"
    assert counts == {"email_replaced": 1}


def test_policy_functions():
    assert classify_ipv4(ipaddress.IPv4Address("81.2.69.160")) == "replace"
    assert classify_ipv4(ipaddress.IPv4Address("203.0.113.5")) == "keep"
    assert classify_ipv6(ipaddress.IPv6Address("2a02:8071::7")) == "replace"
    assert classify_ipv6(ipaddress.IPv6Address("fe80::1")) == "keep"
    assert classify_ipv6(ipaddress.IPv6Address("1::2")) is None  # unassigned: code
    assert classify_ipv6(ipaddress.IPv6Address("::81.2.69.160"), dotted=True) == "replace"
    assert plausible_intl("+44 20 7946 0123") and not plausible_intl("+44.5 12.3 45.6")
    assert not plausible_intl("+1 234 567") and not plausible_intl("+12 345 678 901 234 567")


def test_replacements_must_not_be_public_addresses():
    with pytest.raises(ConfigError, match="ipv6_replacement"):
        PiiConfig(ipv6_replacement="2a02:8071::7")
    with pytest.raises(ConfigError, match="ip_replacement"):
        PiiConfig(ip_replacement="8.8.8.8")
    assert PiiConfig(ip_replacement="<IP>", ipv6_replacement="<IP>").ip_replacement == "<IP>"


def test_counts_reach_the_document_and_the_funnel():
    step = PiiScrub(PiiConfig())
    docs = [Document("a", "Write to jane@corp.io or call +33 1 42 68 53 00 from 2a02:8071::7, "
                          "not fe80::1 or 10.0.0.1; 81.2.69.160 is ours.", "web"),
            Document("b", "Nothing here but 2024-01-15 and version 1.2.3.4.", "web"),
            Document("c", "Only the loopback ::1 and 127.0.0.1.", "web")]
    funnel = Funnel()
    dropped: list[tuple] = []
    out = list(funnel.run([step], iter(docs), lambda *drop: dropped.append(drop)))
    assert not dropped   # PII is scrubbed, never a reason to drop
    funnel.row(step.name)["stats"].update(step.stats)  # as a task does (runner.py)
    total = Funnel()
    total.merge(funnel.as_json())                       # as the stage does over tasks
    total.merge(funnel.as_json())
    assert out[0].meta["pii"] == {"email": 1, "phone": 1, "ipv4": 1, "ipv6": 1}
    assert "pii" not in out[1].meta and "pii" not in out[2].meta
    assert out[2].text == docs[2].text
    row = funnel.as_json()[0]
    assert row["step"] == "pii" and row["docs_out"] == 3
    assert row["stats"] == {"email_replaced": 1, "phone_replaced": 1, "ipv4_replaced": 1,
                            "ipv6_replaced": 1, "ipv6_kept": 2, "ipv4_kept": 2,
                            "docs_modified": 1}
    table = format_funnel(total.as_json())
    assert "ipv6_replaced 2" in table and "ipv4_kept 4" in table


def test_a_replacement_the_scrubber_would_replace_again_is_refused():
    from pretrain.config import ConfigError
    from pretrain.data.config import PiiConfig
    from pretrain.data.pii import PiiScrub
    with pytest.raises(ConfigError, match="ipv6_replacement"):
        PiiScrub(PiiConfig(ipv6_replacement="2001::1"))   # not "global", but public-looking
    PiiScrub(PiiConfig(ipv6_replacement="<IPv6>"))        # markers are fine


@pytest.mark.parametrize("text, kind", [
    ("请联系john.smith@gmail.com获取更多信息。", "email"),
    ("メールはjohn.smith@gmail.comまでお送りください。", "email"),
    ("이메일은john.smith@gmail.com입니다.", "email"),
    ("ईमेलjohn.smith@gmail.comपर", "email"),
    ("電話は+81-3-1234-5678です。", "phone"),
    ("电话+86 10 6552 9988，传真。", "phone"),
    ("电话(212) 555-7890。", "phone"),
    ("โทร+66 2 123 4567ครับ", "phone"),
    ("服务器地址是8.8.8.8，请勿公开。", "ipv4"),
    ("サーバー8.8.8.8に接続", "ipv4"),
    ("地址2606:4700:4700::1111。", "ipv6"),
])
def test_addresses_against_letters_of_scripts_without_spaces_are_replaced(text, kind):
    """Chinese, Japanese, Korean, Thai and Devanagari letters are Unicode word characters,
    and those scripts put no space before an address: none of these was found."""
    out, counts = PiiScrub(PiiConfig()).scrub(text)
    assert counts == {f"{kind}_replaced": 1}, (out, counts)


@pytest.mark.parametrize("text, expected", [
    ("müller@gmail.com hi", "email@example.com hi"),      # whole, not "müemail@..."
    ("驱动程序driver 14.0.1.0", "驱动程序driver 14.0.1.0"),   # a version after CJK letters
    ("8.8.8.8-бета", "8.8.8.8-бета"),                     # a version suffix in any script
    ("8.8.8.8-β1", "8.8.8.8-β1"),
    ("§\xa08.8.8.8", "§\xa08.8.8.8"),                       # numbering, then a no-break space
    ("Email" + "." * 65 + "john@gmail.com", "Email" + "." * 65 + "email@example.com"),
    ("Email: 'john@gmail.com'", "Email: 'email@example.com'"),   # the quote stays
    ("nguyễn.van@gmail.com", "email@example.com"),
])
def test_ascii_boundaries_keep_what_unicode_ones_did(text, expected):
    assert _scrub(text)[0] == expected
