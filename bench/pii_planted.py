"""PII scrubbing measured on PII and decoys planted into real web text.

Run:  python bench/pii_planted.py [--per-kind 400] [--rounds 5] [--seed 7]

Needs ``../shared/data/webtext/c4_sample.jsonl`` (1,000 C4 documents). A seeded generator
(its own, independent of the cases in ``tests/unit/test_pii.py``, so the figures are on
unseen values and on formats the tests do not list) writes ``--per-kind`` items of each
kind, each in a short carrier sentence, at sentence boundaries of the C4 documents:

- PII: e-mail, phone (NANP and 20 countries' international forms, "+" and "00"), IPv4
  (public; bare, with a port, in URLs, in logs), IPv6 (global unicast: full, leading
  zeros, compressed, trailing ``::``, upper case, zone id, bracketed with a port, URLs,
  ``::ffff:`` and ``64:ff9b::`` with a public IPv4 tail);
- reserved addresses that the policy keeps (private, loopback, documentation, link-local,
  ULA, multicast, ...);
- decoys: versions, prices, dates, ISBNs, hashes, times, coordinates, big numbers,
  product codes, MACs, UUIDs, C++ scopes, Python slices, version-context dotted quads.

An item counts as found only if its whole carrier sentence comes out with the item
replaced by exactly the configured value (a half-replaced number is a miss); a decoy or a
reserved address counts as kept if its sentence comes out unchanged. Both the current
scrubber and the previous one (its regexes, copied below) run on the same corpus; the
``phonenumbers`` matcher, when installed, is measured on the phone items and the decoys
for the choice recorded in ``pii.py``. Speed: CPU seconds (process time), median of
``--rounds``, on the planted corpus and on the plain C4 sample; load average printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from _common import announce, at_least

from pretrain.data.config import PiiConfig
from pretrain.data.pii import PiiScrub

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CFG = PiiConfig()
REPL = {"email": CFG.email_replacement, "phone": CFG.phone_replacement,
        "ipv4": CFG.ip_replacement, "ipv6": CFG.ipv6_replacement}

# --- the previous implementation (pretrain before IPv6 and international phones) -----

_OLD_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_OLD_PHONE = re.compile(r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}"
                        r"(?!\w)|(?<![\w+])\+\d{1,3}(?:[ .-]?\d{2,4}){3,5}(?!\w)")
_OLD_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def old_scrub(text: str) -> str:
    if "@" in text:
        text = _OLD_EMAIL.sub(CFG.email_replacement, text)

    def ip(m: re.Match[str]) -> str:
        try:
            public = ipaddress.ip_address(m.group()).is_global
        except ValueError:
            return m.group()
        return CFG.ip_replacement if public else m.group()
    text = _OLD_IPV4.sub(ip, text)
    return _OLD_PHONE.sub(CFG.phone_replacement, text)


# --- the generator ------------------------------------------------------------------

NAMES = ["amelie", "rahul", "okonkwo", "li.wei", "m.garcia", "sven_o", "k.tanaka", "noor",
         "j-p.dubois", "zoe+news", "ivan.petrov", "aisha", "tom", "b.schmidt", "ana"]
DOMAINS = ["mailbox.org", "uni-heidelberg.de", "gmx.net", "ox.ac.uk", "fastmail.fm",
           "company.io", "stadtwerke-bonn.de", "inria.fr", "tsinghua.edu.cn", "yahoo.co.jp",
           "shop-online.com.br", "hotmail.com", "protonmail.ch", "cs.stanford.edu"]
# (format, digits to draw): "N" any digit, "P" 2-9 (NANP area/exchange), "X" 1-9
PHONES = [
    "(PNN) PNN-NNNN", "PNN-PNN-NNNN", "PNN.PNN.NNNN", "+1 PNN PNN NNNN", "+1-PNN-PNN-NNNN",
    "1-PNN-PNN-NNNN", "+1 (PNN) PNN-NNNN", "+1.PNN.PNN.NNNN",
    "+44 20 NNNN NNNN", "+44 (0)20 NNNN NNNN", "0044 20 NNNN NNNN", "+44 7NNN NNNNNN",
    "+44 (0) 1632 NNNNNN", "+49 30 NNNNNNN", "+49 (0)89 NNNN NNNN", "+49 151 NNNNNNNN",
    "+49-30-NNNNNN", "0049 40 NNNNNNN", "+33 X NN NN NN NN", "+33 (0)X NN NN NN NN",
    "+33.X.NN.NN.NN.NN", "0033 X NN NN NN NN", "+91 9NNNN NNNNN", "+91-NN-NNNN-NNNN",
    "+86 10 NNNN NNNN", "+86 139 NNNN NNNN", "+81-3-NNNN-NNNN", "+81 90 NNNN NNNN",
    "+61 2 NNNN NNNN", "+61 4NN NNN NNN", "+55 11 9NNNN-NNNN", "+7 495 NNN-NN-NN",
    "+7 (812) NNN-NN-NN", "+34 91 NNN NN NN", "+39 06 NNNN NNNN", "+31 20 NNN NNNN",
    "+353 1 NNN NNNN", "+41 44 NNN NN NN", "+52 55 NNNN NNNN", "+27 21 NNN NNNN",
    "+65 NNNN NNNN", "+82 2 NNNN NNNN", "+90 212 NNN NN NN", "+48 22 NNN NN NN",
    "+46 8 NNN NNN NN", "+972 3 NNN NNNN", "+971 4 NNN NNNN", "+234 1 NNN NNNN",
    "+44NNNNNNNNNN", "+4930NNNNNNN", "tel:+1PNNPNNNNNN", "+49 (30) NNNNNN",
    "+852 NNNN NNNN", "+420 NNN NNN NNN", "+1 PNN PNN-NNNN", "+44 20 NNNN-NNNN",
    "+62 21 NNNN NNNN", "+49 30/NNNNNN", "+358 9 NNNN NNN"]
KEPT = ["10.NN.NN.NN", "192.168.N.NN", "172.16.N.N", "127.0.0.1", "169.254.NN.N",
        "192.0.2.NN", "198.51.100.N", "203.0.113.NN", "100.64.N.N", "224.0.0.NN",
        "255.255.255.255", "0.0.0.0", "::1", "::", "fe80::NN:NN%eth0", "fd00::NN",
        "fdNN:NNNN::N", "2001:db8:NN::N", "ff02::1", "::ffff:192.168.N.N", "fe80::1%en0"]
DECOYS = [
    "version N.N.N.N", "v2.NN.N", "Firmware N.N.N.N", "build NN.0.NNNN.N", "$1,NNN.99",
    "EUR 12.NNN,00", "2024-0X-1N", "1N.0X.2023", "0X/1N/2022", "ISBN 978-0-NN-NNNNNN-N",
    "ISBN 0-NNN-NNNNN-N", "sha256 HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH",
    "commit HHHHHHH", "sha1 HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH", "1N:NN:NN",
    "at 0N:NN:NN.NNN UTC", "NN.NNNN, -7N.NNNN", "+NN.NNNN -0.NNNN", "1,NNN,NNN,NNN",
    "N NNN NNN", "NN.NNN.NNN", "SKU-NNNN-NNNN", "P/N NNNN-NNNN-NN", "HH:HH:HH:HH:HH:HH",
    "HHHHHHHH-HHHH-4HHH-aHHH-HHHHHHHHHHHH", "std::vector<int>", "boost::asio::ip",
    "a[::N]", "x[N::N]", "John N:1N", "ratio N:N:N", "300.NN.N.N", "Section N.N.N.N",
    "+N.5%", "tel. ext. NNN", "Foo::Bar::baz", "12:00-1N:00", "Chrome/1NN.0.NNNN.NN",
    "kernel X.NN.0.NN", "+1 NNN NNN", "+NN NN NN", "score +3-1", "1NN.NN.NN.NN.NN"]
CARRIERS = ["You can reach me at {}.", "Contact: {}", "Details ({}) are on file.",
            "Write to {} if you have questions.", "Log entry: {} appeared twice.",
            "See {} for more.", "The value {} was recorded.", "[{}]"]
IP_FORMS = ["{}", "{}:8080", "http://{}/index.html", "from {} port 22", "IP: {}", "{}/24"]
V6_FORMS = ["{}", "[{}]:443", "https://[{}]/path", "{}%eth0", "host {} replied", "{}/64"]


def _digits(rng: random.Random, fmt: str) -> str:
    pick = {"N": "0123456789", "P": "23456789", "X": "123456789", "H": "0123456789abcdef"}
    return "".join(rng.choice(pick[c]) if c in pick else c for c in fmt)


def _public_v4(rng: random.Random) -> ipaddress.IPv4Address:
    while True:
        a = ipaddress.IPv4Address(rng.getrandbits(32))
        if a.is_global and not a.is_multicast and not a.is_reserved:
            return a


def _v6_text(rng: random.Random) -> str:
    style = rng.randrange(8)
    if style == 0:
        return f"::ffff:{_public_v4(rng)}"
    if style == 1:
        return f"64:ff9b::{_public_v4(rng)}"
    while True:
        a = ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))  # 2000::/3
        if a.is_global:
            break
    if rng.random() < 0.6:  # a run of zero groups, as real assignments have
        groups = a.exploded.split(":")
        start = rng.randrange(2, 7)
        for i in range(start, min(8, start + rng.randrange(1, 5))):
            groups[i] = "0000"
        a = ipaddress.IPv6Address(":".join(groups))
    text = {2: a.exploded, 3: a.exploded.upper(), 4: a.compressed.upper()}.get(
        style, a.compressed)
    if style == 5:  # mixed case, no leading zeros but uncompressed
        text = ":".join(format(int(g, 16), "x") for g in a.exploded.split(":"))
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    if style == 6:  # a prefix with a trailing "::"
        text = str(ipaddress.IPv6Address(int(a) >> 64 << 64))
    return text


def make_item(rng: random.Random, kind: str) -> str:
    """One planted value of ``kind`` (``email``, ``phone``, ``ipv4``, ``ipv6``, ``kept``,
    ``decoy``), with its immediate form (port, URL, ...) where the kind has one."""
    if kind == "email":
        local = rng.choice(NAMES) + (str(rng.randrange(100)) if rng.random() < 0.4 else "")
        text = f"{local}@{rng.choice(DOMAINS)}"
        text = text.upper() if rng.random() < 0.1 else text
        return rng.choice(["{}", "mailto:{}", "<{}>", "{},"]).format(text)
    if kind == "phone":
        return _digits(rng, rng.choice(PHONES))
    if kind == "ipv4":
        return rng.choice(IP_FORMS).format(_public_v4(rng))
    if kind == "ipv6":
        return rng.choice(V6_FORMS).format(_v6_text(rng))
    return _digits(rng, rng.choice(KEPT if kind == "kept" else DECOYS))


def build(texts: list[str], per_kind: int, seed: int
          ) -> tuple[list[str], list[tuple[str, int, str, str]]]:
    """The planted corpus and its items: (kind, document, carrier sentence, the item)."""
    rng = random.Random(seed)
    docs = [t.split("\n") for t in texts]
    items: list[tuple[str, int, str, str]] = []
    for kind in ("email", "phone", "ipv4", "ipv6", "kept", "decoy"):
        for _ in range(per_kind):
            d = rng.randrange(len(docs))
            value = make_item(rng, kind)
            carrier = rng.choice(CARRIERS).format(value)
            docs[d].insert(rng.randrange(len(docs[d]) + 1), carrier)
            items.append((kind, d, carrier, value))
    return ["\n".join(lines) for lines in docs], items


def score(out: list[str], items: list[tuple[str, int, str, str]]) -> dict[str, float]:
    """Per kind: the fraction found (PII) or kept unchanged (kept, decoy)."""
    hit: Counter[str] = Counter()
    n: Counter[str] = Counter()
    for kind, d, carrier, value in items:
        n[kind] += 1
        if kind in REPL:
            hit[kind] += _replaced(carrier, value, REPL[kind]) in out[d]
        else:
            hit[kind] += carrier in out[d]
    return {k: hit[k] / n[k] for k in n}


def _replaced(carrier: str, value: str, replacement: str) -> str:
    """The carrier with the bare address/number/e-mail inside ``value`` replaced."""
    core = value
    for pre in ("http://", "https://[", "[", "from ", "IP: ", "host ", "mailto:", "<", "tel:"):
        core = core.removeprefix(pre)
    core = core.rstrip(">,")
    core = re.split(r"(?:/index|/path|\]:443|\]/| port | replied|:8080$|/24$|/64$)",
                    core)[0]
    return carrier.replace(core, replacement, 1)


def phonenumbers_scrub(leniency: str) -> Callable[[str], str] | None:
    """Phones replaced where ``phonenumbers``' matcher (default region US) finds them."""
    try:
        import phonenumbers
    except ImportError:
        return None
    level = getattr(phonenumbers.Leniency, leniency)

    def scrub(text: str) -> str:
        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
            text, "US", leniency=level)]
        for s, e in reversed(spans):
            text = text[:s] + CFG.phone_replacement + text[e:]
        return text
    return scrub


def cpu(fn: Callable[[str], object], texts: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.process_time()
        for text in texts:
            fn(text)
        times.append(time.process_time() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-kind", type=at_least(1), default=400)
    ap.add_argument("--rounds", type=at_least(1), default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--corpus", default=str(SHARED / "webtext" / "c4_sample.jsonl"))
    args = ap.parse_args()
    if not Path(args.corpus).is_file():
        raise SystemExit(f"--corpus: no file {args.corpus}")
    announce()
    with open(args.corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    planted, items = build(texts, args.per_kind, args.seed)
    print(f"{len(texts)} C4 docs, {args.per_kind} planted items per kind")
    step = PiiScrub(CFG)

    def ours(text: str) -> str:
        return step.scrub(text)[0]
    scrubbers: dict[str, Callable[[str], str]] = {"previous": old_scrub, "current": ours}
    results = {name: score([fn(t) for t in planted], items) for name, fn in scrubbers.items()}
    kinds = ["email", "phone", "ipv4", "ipv6", "kept", "decoy"]
    print("\nfound (PII) / unchanged (kept by policy, decoys)")
    print(f"{'':<12}" + "".join(f"{k:>8}" for k in kinds))
    for name, r in results.items():
        print(f"{name:<12}" + "".join(f"{r[k]:8.3f}" for k in kinds))
    matchers = {lev: phonenumbers_scrub(lev) for lev in ("POSSIBLE", "VALID")}
    for lev, pn in matchers.items():
        if pn is not None:
            r = score([pn(t) for t in planted], items)
            print(f"{'pn ' + lev.lower():<12}{'':>8}{r['phone']:8.3f}{'':>16}{r['kept']:8.3f}"
                  f"{r['decoy']:8.3f}   (phonenumbers' matcher, region US: phones only)")
    misses = [(k, v) for k, d, c, v in items
              if (k in REPL and _replaced(c, v, REPL[k]) not in ours(planted[d]))
              or (k not in REPL and c not in ours(planted[d]))]
    print(f"\ncurrent misses ({len(misses)}):", "; ".join(f"{k} {v!r}" for k, v in misses[:30]))
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(step.scrub(t)[1])
    print(f"on the plain C4 sample (no planting): {dict(sorted(counts.items()))}")

    mb = sum(len(t.encode()) for t in planted) / 1e6
    print(f"\nCPU seconds, median of {args.rounds}, {mb:.2f} MB planted / "
          f"{sum(len(t.encode()) for t in texts) / 1e6:.2f} MB plain:")
    speed = {}
    for name, fn in scrubbers.items():
        p, c = cpu(fn, planted, args.rounds), cpu(fn, texts, args.rounds)
        speed[name] = p
        print(f"   {name:<10} planted {p:6.3f} s {mb / p:6.1f} MB/s   plain {c:6.3f} s")
    for lev, pn in matchers.items():
        if pn is not None:
            print(f"   phonenumbers {lev.lower()} (phones only) planted "
                  f"{cpu(pn, planted, 1):6.3f} s (1 round)")
    print(f"   current / previous time: {speed['current'] / speed['previous']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
