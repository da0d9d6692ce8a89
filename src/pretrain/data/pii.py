"""PII scrubbing, the last rewrite before dedup: e-mail addresses, phone numbers and IP
addresses (v4 and v6) are replaced by reserved look-alikes (``PiiConfig``), not dropped
and not masked with markup, so the model learns the shape of an address without anyone's.

Finding candidates is a regex; deciding is code. Every IP candidate is parsed by the
standard library's ``ipaddress`` (a regex alone takes times ``12:30:45``, C++ ``std::``,
Python slices ``a[1::2]``, MAC addresses and version strings), and phone candidates are
checked for an E.164 length. A valid address then meets the policy below.

Reserved-range policy. An address is replaced only if it can name a host on the public
internet; these are kept, because they identify no one and replacing them would corrupt
the technical prose (router manuals, RFC quotes, tutorials) that mentions them most:

- IPv4: 0.0.0.0/8 (this network), 10/8, 172.16/12, 192.168/16 (private, RFC 1918),
  100.64/10 (carrier NAT, RFC 6598), 127/8 (loopback), 169.254/16 (link-local),
  192.0.0/24 (IETF), 192.0.2/24, 198.51.100/24, 203.0.113/24 (documentation, RFC 5737),
  198.18/15 (benchmarking), 224/4 (multicast), 240/4 (reserved, with the broadcast address).
- IPv6: ``::`` and ``::1``, fc00::/7 (unique local), fe80::/10 (link-local), fec0::/10
  (old site-local), ff00::/8 (multicast), 2001:db8::/32 and 3fff::/20 (documentation,
  RFC 3849 and 9637), 2001:2::/48 (benchmarking), 100::/64 (discard).
- An IPv6 address that carries an IPv4 one (``::ffff:a.b.c.d`` mapped, ``64:ff9b::/96``
  NAT64, ``::a.b.c.d`` compatible) is judged by that IPv4 address.
- Other IPv6 addresses are replaced if they are global unicast (2000::/3, the only block
  IANA allocates). Outside it and outside the kept list nothing is assigned, so a match
  there (``1::2``, ``dead::beef``) is code, not an address, and is left alone uncounted.
- A dotted quad after a word such as "version", "v", "build", "driver", "section" is a
  version or section number (``Driver 14.0.1.0``, seen in C4), not an address.
- E-mail addresses at the RFC 2606 / 6761 example names (example.com/.net/.org, .example,
  .test, .invalid, .localhost) are kept: they are placeholders (and our own replacement).

We do not use the ``phonenumbers`` library. On ``bench/pii_planted.py``'s planted set its
matcher (region US) found 55% of the planted phones at leniency VALID (it wants digits in
an assigned block; the planted digits are random, which is unkind to it) and 71% at
POSSIBLE, where it also rewrote 19% of the decoys and of the reserved IPv4 addresses; the
regexes here found 100% and kept 98% of the decoys, and the whole scrub (all four kinds)
cost as much CPU as its phone pass alone at POSSIBLE, 0.6x at VALID. Its one strength,
national numbers written without a country code outside North America ("020 7946 0958"),
is left out here: without the "+"/"00" such digit groups are mostly not phones.

Not covered: names, postal addresses, ID/card/bank numbers, obfuscated e-mail ("jane at
example dot com").

Counts: ``doc.meta["pii"]`` holds the replaced count per kind (email, phone, ipv4, ipv6);
the step's stats, hence the funnel, hold ``<kind>_replaced`` and ``<kind>_kept`` (valid
but kept by the policy) and ``docs_modified``.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

from ..config import ConfigError
from .config import PiiConfig
from .document import Document, Step

# --- e-mail -------------------------------------------------------------------------

# re.ASCII in the patterns below: their word boundaries are ASCII ones. Chinese, Japanese,
# Korean, Thai and Devanagari letters are Unicode word characters, and those scripts put
# no space before an address ("请联系john@gmail.com获取"): none was found there.
# A local part may hold Latin letters with accents ("müller@", "nguyễn@", a combining
# mark): matched whole, not from the first ASCII letter after them; it starts at a
# letter or digit after none (a run of dots or dashes before it is not taken in).
_LATIN = "A-Za-z0-9_\u00c0-\u024f\u0300-\u036f\u1e00-\u1eff"
_EMAIL = re.compile(rf"(?<![{_LATIN}])(?=[{_LATIN}])[{_LATIN}.%+'\-]{{1,64}}"
                    r"@((?:[A-Za-z0-9-]{1,63}\.)+([A-Za-z]{2,63}))\b", re.ASCII)
_EXAMPLE_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
_EXAMPLE_TLDS = frozenset({"example", "test", "invalid", "localhost"})
# "logo@2x.png": retina asset names have an e-mail's shape; no TLD is a file extension
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js"})

# --- IP addresses -------------------------------------------------------------------

# One pass for both families, IPv6 first so that the IPv4 tail of ``::ffff:1.2.3.4`` is
# not seen again. IPv6: a maximal run of hex digits, colons and dots holding at least two
# colons, not inside a word or a longer run, with an optional zone id (``%eth0``);
# possessive, so a run that ends inside a word fails at once instead of backtracking.
# IPv4: a dotted quad not inside a word, a longer dotted number or ``1.2.3.4-beta`` (the
# first of a range ``1.1.1.1-1.1.1.255`` is one: another quad follows the dash).
_QUAD = r"(?:\d{1,3}\.){3}\d{1,3}"
_QUAD_END = r"(?!\.?\d|\w|-(?!(?:\d{1,3}\.){3}\d)(?u:\w))"   # a version suffix in any script
_IP = re.compile(
    r"(?<![\w:.%])(?=[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:)(?P<v6>[0-9A-Fa-f:.]++)"
    r"(?P<zone>%[0-9A-Za-z_.~-]++)?+(?!\w)"
    rf"|(?<![\w.])(?P<v4>{_QUAD}){_QUAD_END}", re.ASCII)
_V4 = re.compile(rf"(?<![\w.]){_QUAD}{_QUAD_END}", re.ASCII)
# the words before a dotted quad that make it a version or section number (case-blind)
# (an ASCII word start, as above; any space after it: "§\xa08.8.8.8")
_NUMBERING = re.compile(r"(?:(?<![A-Za-z0-9_])(?:v|ver|version|release|build|firmware|rev|"
                        r"revision|update|driver|bios|patch|sdk|section|chapter|step|figure|"
                        r"table|item|rule)\.?|§)\s*[:#]?\s*$", re.IGNORECASE)

_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network
_KEPT_V4 = tuple(_N4(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "127.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24",
    "203.0.113.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"))
_KEPT_V6 = tuple(_N6(n) for n in (
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    "2001:db8::/32", "3fff::/20", "2001:2::/48", "100::/64"))
_GLOBAL_UNICAST = _N6("2000::/3")
_NAT64 = _N6("64:ff9b::/96")
_COMPATIBLE = _N6("::/96")

REPLACE, KEEP = "replace", "keep"


def classify_ipv4(addr: ipaddress.IPv4Address) -> str:
    """``"keep"`` for the reserved ranges of the module docstring, else ``"replace"``."""
    return KEEP if any(addr in n for n in _KEPT_V4) else REPLACE


def classify_ipv6(addr: ipaddress.IPv6Address, dotted: bool = False) -> str | None:
    """``"replace"``, ``"keep"``, or None: not an assigned address (code, most likely).
    ``dotted``: the text ended in an IPv4 tail (``::1.2.3.4``)."""
    addr = ipaddress.IPv6Address(int(addr))  # drop the zone id: it identifies no one
    v4 = addr.ipv4_mapped
    if v4 is None and (addr in _NAT64 or (dotted and addr in _COMPATIBLE)):
        v4 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if v4 is not None:
        return classify_ipv4(v4)
    if any(addr in n for n in _KEPT_V6):
        return KEEP
    return REPLACE if addr in _GLOBAL_UNICAST else None


# --- phone numbers ------------------------------------------------------------------

_SEP = r"[ .\-/\u00a0]"  # "/": German "+49 30/901820"
# International: "+" or "00", a country code, an optional "(0)" trunk prefix, then digit
# groups (one may be in parentheses); the last group has 2+ digits so that a number
# written after the phone ("... 0958 5 days") is not taken in. Length is checked after.
_INTL = re.compile(
    rf"(?<![\w+.,/])(?:\+|00(?=[1-9]))[1-9]\d{{0,2}}(?:{_SEP}?\(0\))?"
    rf"(?:{_SEP}?(?:\(\d{{1,4}}\)|\d{{1,5}})){{0,6}}{_SEP}?\d{{2,5}}(?![\w+]|-\d)", re.ASCII)
# North American (NANP): area code and exchange start with 2-9, optional leading 1
_NANP = re.compile(
    r"(?<![\w+\-./])(?:1[ .\-])?(?:\([2-9]\d{2}\)[ \-\u00a0]?|[2-9]\d{2}[ .\-\u00a0])"
    r"[2-9]\d{2}[ .\-\u00a0]\d{4}(?![\w]|-\d)", re.ASCII)
# E.164 two-digit country codes (ITU-T E.164 assigned list); 1 and 7 are one digit, all
# others three. Country codes are prefix-free, so this splits an unseparated "+4930...".
_CC2 = frozenset({20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49,
                  51, 52, 53, 54, 55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84,
                  86, 90, 91, 92, 93, 94, 95, 98})


def plausible_intl(match: str) -> bool:
    """An international candidate has a country code, 6 or more national digits and at
    most 15 in all (E.164), exactly 10 national digits for +1 (NANP) and +7, and does not
    mix "." with other separators (``+44.5 12.3``: coordinates, not a phone)."""
    body = match[1:] if match.startswith("+") else match[2:]
    body = body.replace("(0)", "", 1)
    digits = "".join(c for c in body if c.isdigit())
    cc_len = 1 if digits[0] in "17" else 2 if int(digits[:2]) in _CC2 else 3
    national = len(digits) - cc_len
    if national < 6 or len(digits) > 15:
        return False
    if cc_len == 1 and national != 10:
        return False
    seps = {c for c in body if not c.isdigit() and c not in "()"}
    return not ("." in seps and len(seps) > 1)


# --- the step -----------------------------------------------------------------------

class PiiScrub(Step):
    """Replaces e-mails, phone numbers and public IPs (see the module docstring); never
    drops a document."""

    name = "pii"

    def __init__(self, cfg: PiiConfig):
        super().__init__()
        self.cfg = cfg
        for flag in ("ip_replacement", "ipv6_replacement"):
            value = getattr(cfg, flag)
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                continue  # a marker such as "<IP>"
            kind = classify_ipv4(addr) if isinstance(addr, ipaddress.IPv4Address) \
                else classify_ipv6(addr)
            if kind == REPLACE:  # a second pass would replace (and count) it again
                raise ConfigError(f"data.pii.{flag} = {value!r} is an address this step "
                                  "replaces; use a documentation one (192.0.2.0/24, "
                                  "2001:db8::/32) or a marker such as \"<IP>\"")

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` scrubbed, and the counts: ``<kind>_replaced`` and ``<kind>_kept``."""
        cfg, found = self.cfg, Counter[str]()
        if cfg.emails and "@" in text:
            text = _EMAIL.sub(lambda m: self._email(m, found), text)
        if cfg.ips and ("." in text or ":" in text):
            text = _IP.sub(lambda m: self._ip(m, found), text)
        if cfg.phones:
            if "+" in text or "00" in text:
                text = _INTL.sub(lambda m: self._intl(m, found), text)
            text, n = _NANP.subn(cfg.phone_replacement, text)
            found["phone_replaced"] += n
        return text, +found  # the kinds that occurred

    def check(self, doc: Document) -> str | None:
        text, counts = self.scrub(doc.text)
        self.stats.update(counts)
        replaced = {k.removesuffix("_replaced"): v for k, v in counts.items()
                    if k.endswith("_replaced")}
        if replaced:
            doc.text = text
            doc.meta["pii"] = replaced
            self.stats["docs_modified"] += 1
        return None

    def _email(self, m: re.Match[str], found: Counter[str]) -> str:
        domain, tld = m.group(1).lower(), m.group(2).lower()
        if tld in _FILE_TLDS:
            return m.group()
        if tld in _EXAMPLE_TLDS or ".".join(domain.rsplit(".", 2)[-2:]) in _EXAMPLE_DOMAINS:
            found["email_kept"] += 1
            return m.group()
        found["email_replaced"] += 1
        return self.cfg.email_replacement

    def _ip(self, m: re.Match[str], found: Counter[str]) -> str:
        if m.group("v4") is not None:
            return self._ipv4(m, found)
        text = m.group()
        if text.strip(":.") == "":  # "12 :: What ...": a separator, not the address ::
            return text
        # a sentence's full stop or a label's colon after the address is not part of it
        # (tried first: a zone id may end in a dot, "%eth0." parses)
        for core in (text[:-1], text) if text[-1] in ".:" else (text,):
            try:
                addr = ipaddress.IPv6Address(core)
            except ValueError:
                continue
            verdict = classify_ipv6(addr, dotted="." in core)
            if verdict == REPLACE:
                found["ipv6_replaced"] += 1
                return self.cfg.ipv6_replacement + text[len(core):]
            if verdict == KEEP:
                found["ipv6_kept"] += 1
            return text
        return _V4.sub(lambda v: self._ipv4(v, found), text)  # "1.2.3.4:80:", a time...

    def _ipv4(self, m: re.Match[str], found: Counter[str]) -> str:
        try:
            addr = ipaddress.IPv4Address(m.group())
        except ValueError:  # 999.1.1.1, 01.02.03.04: a number, not an address
            return m.group()
        if _NUMBERING.search(m.string, max(0, m.start() - 24), m.start()):
            return m.group()
        if classify_ipv4(addr) == KEEP:
            found["ipv4_kept"] += 1
            return m.group()
        found["ipv4_replaced"] += 1
        return self.cfg.ip_replacement

    def _intl(self, m: re.Match[str], found: Counter[str]) -> str:
        if not plausible_intl(m.group()):
            return m.group()
        found["phone_replaced"] += 1
        return self.cfg.phone_replacement
