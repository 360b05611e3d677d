#!/usr/bin/env python3
"""Deterministic generator of the labelled masking corpus (stdlib only).

    python3 crates/masking/corpus/generate.py > crates/masking/corpus/corpus.jsonl

Each output line is a JSON object:
  {"text": ..., "labels": [{"start", "end", "detector"}], "negatives": [{"start", "end", "kind"}]}
Offsets are UTF-8 byte offsets into `text`. `labels` are the sensitive values a detector must
find (exact span); `negatives` are hard look-alikes that must survive. Everything else
(names, addresses, prose) is neutral.
"""
import base64
import json
import random

R = random.Random(20260127)

FIRST = ["Jane", "John", "María", "Günther", "Aiko", "Olu", "Priya", "Lars", "Chloé", "Mohammed",
         "Wei", "Sofia", "Liam", "Ana", "Pierre", "Zoë", "Ivan", "Fatima", "Noah", "Emma"]
LAST = ["Smith", "Müller", "García", "Tanaka", "Okafor", "Sharma", "Johansson", "Dubois",
        "Haddad", "Chen", "Rossi", "O'Brien", "de Vries", "Kowalski", "Nguyen", "Silva"]
STREETS = ["221B Baker Street, London NW1 6XE", "1600 Amphitheatre Pkwy, Mountain View, CA 94043",
           "Unter den Linden 77, 10117 Berlin", "12 rue de Rivoli, 75004 Paris",
           "Keizersgracht 123, 1015 CJ Amsterdam", "Calle de Alcalá 50, 28014 Madrid",
           "Via del Corso 12, 00186 Roma", "Bahnhofstrasse 1, 8001 Zürich",
           "350 Fifth Avenue, New York, NY 10118", "Apt 4B, 77 Mass Ave, Cambridge, MA 02139"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.de", "acme.io"]


def luhn_complete(prefix, length):
    body = prefix + "".join(R.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


BRANDS = [  # (brand, prefix generator, length, grouping)
    ("visa", lambda: "4", 16, [4, 4, 4, 4]),
    ("visa13", lambda: "4", 13, [4, 4, 5]),
    ("mastercard", lambda: str(R.randint(51, 55)), 16, [4, 4, 4, 4]),
    ("mastercard2", lambda: str(R.randint(2221, 2720)), 16, [4, 4, 4, 4]),
    ("amex", lambda: R.choice(["34", "37"]), 15, [4, 6, 5]),
    ("discover", lambda: R.choice(["6011", "65", str(R.randint(644, 649))]), 16, [4, 4, 4, 4]),
    ("jcb", lambda: str(R.randint(3528, 3589)), 16, [4, 4, 4, 4]),
    ("diners", lambda: R.choice(["36", "38", str(R.randint(300, 305))]), 14, [4, 6, 4]),
    ("unionpay", lambda: "62" + str(R.randint(0, 9)), 16, [4, 4, 4, 4]),
    ("unionpay19", lambda: "62", 19, [4, 4, 4, 4, 3]),
    ("maestro", lambda: R.choice(["6759", "5018", "5020", "6304"]), 16, [4, 4, 4, 4]),
    ("maestro12", lambda: R.choice(["5018", "6759"]), 12, [4, 4, 4]),
]


def grouped(num, groups, sep):
    out, i = [], 0
    for g in groups:
        out.append(num[i:i + g])
        i += g
    return sep.join(out)


def card():
    brand, pfx, n, groups = R.choice(BRANDS)
    num = luhn_complete(pfx(), n)
    sep = R.choice(["", " ", "-"])
    return grouped(num, groups, sep) if sep else num


def bad_card():
    num = luhn_complete("4", 16)
    bad = num[:-1] + str((int(num[-1]) + R.randint(1, 9)) % 10)
    return R.choice([bad, grouped(bad, [4, 4, 4, 4], " ")])


IBAN_FORMATS = {  # country: bban pattern (n = digit, a = upper letter, c = alnum)
    "DE": "n" * 18, "GB": "aaaa" + "n" * 14, "FR": "n" * 10 + "c" * 11 + "nn",
    "NL": "aaaa" + "n" * 10, "ES": "n" * 20, "IT": "a" + "n" * 10 + "c" * 12,
    "CH": "n" * 5 + "c" * 12, "BE": "n" * 12, "AT": "n" * 16, "PL": "n" * 24,
}


def iban_check(cc, bban):
    s = bban + cc + "00"
    num = "".join(str(int(ch, 36)) for ch in s)
    return "%02d" % (98 - int(num) % 97)


def iban():
    cc = R.choice(sorted(IBAN_FORMATS))
    bban = "".join(R.choice("0123456789") if p == "n" else R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                   if p == "a" else R.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                   for p in IBAN_FORMATS[cc])
    full = cc + iban_check(cc, bban) + bban
    if R.random() < 0.5:
        return " ".join(full[i:i + 4] for i in range(0, len(full), 4))
    return full


def ssn():
    area = R.choice([a for a in range(1, 900) if a != 666])
    return "%03d-%02d-%04d" % (area, R.randint(1, 99), R.randint(1, 9999))


def phone():
    return R.choice([
        "+1 415 555 %04d" % R.randint(1000, 9999), "+44 20 7946 %04d" % R.randint(0, 9999),
        "+49 30 %06d" % R.randint(100000, 999999), "+33 1 42 68 %02d %02d" % (R.randint(0, 99), R.randint(0, 99)),
        "(%d) %03d-%04d" % (R.randint(201, 989), R.randint(200, 999), R.randint(0, 9999)),
        "%d-%03d-%04d" % (R.randint(201, 989), R.randint(100, 999), R.randint(0, 9999)),
        "+1415555%04d" % R.randint(0, 9999), "+81 3-%04d-%04d" % (R.randint(1000, 9999), R.randint(0, 9999)),
        "+31 6 %08d" % R.randint(10000000, 99999999),
    ])


def email(first, last):
    local = R.choice(["%s.%s", "%s%s", "%s_%s+news"]) % (first.lower(), last.lower())
    local = local.encode("ascii", "ignore").decode().replace("'", "").replace(" ", "")
    return "%s@%s" % (local, R.choice(DOMAINS))


def ipv4():
    return R.choice(["10.%d.%d.%d", "192.168.%d.%d", "203.0.113.%d"]).replace("%d", "{}").format(
        *[R.randint(1, 254) for _ in range(3)])


def ipv6():
    return R.choice(["2001:db8:85a3::8a2e:370:%x" % R.randint(1, 65535),
                     "2001:0db8:0000:0042:0000:8a2e:0370:%04x" % R.randint(1, 65535),
                     "fe80::%x:%x" % (R.randint(1, 65535), R.randint(1, 65535))])


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rs(n, alphabet=ALNUM):
    return "".join(R.choice(alphabet) for _ in range(n))


def b64u(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def secret():
    return R.choice([
        lambda: "AKIA" + rs(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        lambda: "ASIA" + rs(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        lambda: "ghp_" + rs(36), lambda: "gho_" + rs(36),
        lambda: "github_pat_" + rs(22) + "_" + rs(59),
        lambda: "xoxb-%d-%d-%s" % (R.randint(10**10, 10**11), R.randint(10**10, 10**11), rs(24)),
        lambda: "sk-proj-" + rs(48) + "T3BlbkFJ" + rs(20), lambda: "sk-" + rs(20) + "T3BlbkFJ" + rs(20),
        lambda: "%s.%s.%s" % (b64u({"alg": "HS256", "typ": "JWT"}),
                              b64u({"sub": str(R.randint(1, 10**6)), "name": "x", "iat": 1516239022}),
                              rs(43, ALNUM + "-_")),
    ])()


def pem():
    body = "\n".join(rs(64, ALNUM + "+/") for _ in range(R.randint(3, 8)))
    kind = R.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    return "-----BEGIN %s-----\n%s\n-----END %s-----" % (kind, body, kind)


# Hard negatives --------------------------------------------------------------------------
def neg():
    kind = R.choice(["luhn_fail", "date", "date_us", "date_eu", "order_id", "uuid", "price",
                     "timestamp", "version", "isbn", "tracking", "zip", "time", "invoice_chain",
                     "mac", "build", "amount"])
    v = {
        "luhn_fail": bad_card,
        "date": lambda: "2026-%02d-%02d" % (R.randint(1, 12), R.randint(1, 28)),
        "date_us": lambda: "%02d/%02d/2026" % (R.randint(1, 12), R.randint(1, 28)),
        "date_eu": lambda: "%02d.%02d.2026" % (R.randint(1, 28), R.randint(1, 12)),
        "order_id": lambda: "ORD-2026-%06d" % R.randint(1, 999999),
        "uuid": lambda: "%08x-%04x-4%03x-a%03x-%012x" % (R.getrandbits(32), R.getrandbits(16), R.getrandbits(12), R.getrandbits(12), R.getrandbits(48)),
        "price": lambda: R.choice(["$%d,%03d.%02d", "EUR %d%03d.%02d"]) % (R.randint(1, 99), R.randint(0, 999), R.randint(0, 99)),
        "timestamp": lambda: "2026-11-%02dT%02d:%02d:%02d.%06dZ" % (R.randint(1, 28), R.randint(0, 23), R.randint(0, 59), R.randint(0, 59), R.randint(0, 999999)),
        "version": lambda: "v%d.%d.%d" % (R.randint(0, 20), R.randint(0, 40), R.randint(0, 300)),
        "isbn": lambda: R.choice(["978-3-16-148410-0", "978-0-306-40615-7", "0-306-40615-2", "978-1-4028-9462-6"]),
        "tracking": lambda: "1Z%s" % rs(16, "0123456789"),
        "zip": lambda: "%05d-%04d" % (R.randint(10000, 99999), R.randint(0, 9999)),
        "time": lambda: "%02d:%02d:%02d" % (R.randint(0, 23), R.randint(0, 59), R.randint(0, 59)),
        "invoice_chain": lambda: "INV-%03d-%02d-%04d" % (R.randint(100, 899), R.randint(10, 99), R.randint(1000, 9999)),
        "mac": lambda: ":".join("%02x" % R.getrandbits(8) for _ in range(6)),
        "build": lambda: "build %d.%d.%d.%d" % (R.randint(2, 9), R.randint(0, 9), R.randint(256, 9999), R.randint(0, 99)),
        "amount": lambda: "%d.%02d" % (R.randint(100000, 99999999), R.randint(0, 99)),
    }[kind]()
    return kind, v


class Line:
    def __init__(self):
        self.parts, self.labels, self.negs, self.len = [], [], [], 0

    def add(self, s, detector=None, neg=None):
        b = len(s.encode())
        if detector:
            self.labels.append({"start": self.len, "end": self.len + b, "detector": detector})
        if neg:
            self.negs.append({"start": self.len, "end": self.len + b, "kind": neg})
        self.parts.append(s)
        self.len += b
        return self

    def obj(self):
        return {"text": "".join(self.parts), "labels": self.labels, "negatives": self.negs}


def person():
    return R.choice(FIRST), R.choice(LAST)


def line():
    f, l = person()
    L = Line()
    t = R.randrange(14)
    n1, v1 = neg()
    if t == 0:
        L.add("Customer %s %s (" % (f, l)).add(email(f, l), "email").add(") paid with card ").add(card(), "credit_card")
        L.add(" for order ").add(*(lambda k, v: (v, None, k))("order_id", "ORD-2026-%06d" % R.randint(1, 999999))).add(".")
    elif t == 1:
        L.add("Wire to %s %s, IBAN " % (f, l)).add(iban(), "iban").add(", ref ").add(v1, None, n1).add(", amount ")
        L.add("EUR 1.234,56", None, "price").add(".")
    elif t == 2:
        L.add("Employee %s %s, SSN " % (f, l)).add(ssn(), "us_ssn").add(", lives at %s, phone " % R.choice(STREETS)).add(phone(), "phone")
    elif t == 3:
        L.add("login from ").add(ipv4(), "ip").add(" at ").add(v1, None, n1).add(" user=%s" % f.lower())
    elif t == 4:
        L.add("peer ").add(ipv6(), "ip").add(" connected; session ").add(*(lambda v: (v, None, "uuid"))(neg_uuid()))
    elif t == 5:
        L.add("export AWS_ACCESS_KEY_ID=").add("AKIA" + rs(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), "secret").add("  # rotated ").add(v1, None, n1)
    elif t == 6:
        L.add("token: ").add(secret(), "secret").add(" (issued to %s %s)" % (f, l))
    elif t == 7:
        pw = rs(12, ALNUM + "!#$%^*")
        L.add("Server=db.internal;Database=orders;User Id=app;Password=").add(pw, "secret").add(";Timeout=30")
    elif t == 8:
        pw = rs(10)
        L.add("DATABASE_URL=postgres://orders_app:").add(pw, "secret").add("@db.example.com:5432/orders")
    elif t == 9:
        L.add("Call %s on " % f).add(phone(), "phone").add(" about invoice ").add(v1, None, n1).add(" or mail ").add(email(f, l), "email")
    elif t == 10:
        n2, v2 = neg()
        n3, v3 = neg()
        L.add("%s %s, %s: " % (f, l, R.choice(STREETS))).add(v1, None, n1).add(" / ").add(v2, None, n2).add(" / ").add(v3, None, n3)
    elif t == 11:
        L.add('{"name": "%s %s", "card_number": "' % (f, l)).add(card(), "credit_card").add('", "created_at": "').add(
            "2026-11-27T10:15:30Z", None, "timestamp").add('", "total": ').add("1234.50", None, "price").add("}")
    elif t == 12:
        L.add("Social security no. ").add("%03d%02d%04d" % (R.randint(1, 665), R.randint(1, 99), R.randint(1, 9999)), "us_ssn").add(
            " on file for %s; customer id " % f).add("%09d" % R.randint(10**8, 10**9 - 1), None, "customer_id")
    else:
        L.add("Paid ").add(v1, None, n1).add(" by %s, card ending " % f).add("%04d" % R.randint(0, 9999), None, "last4").add(
            ", contact ").add(email(f, l), "email")
    return L.obj()


def neg_uuid():
    return "%08x-%04x-4%03x-a%03x-%012x" % (R.getrandbits(32), R.getrandbits(16), R.getrandbits(12), R.getrandbits(12), R.getrandbits(48))


def main():
    out = [line() for _ in range(600)]
    for _ in range(10):
        L = Line()
        L.add("key for deploy:\n").add(pem(), "secret").add("\nend of message")
        out.append(L.obj())
    # Every card brand at least three times, with each separator style.
    for brand, pfx, n, groups in BRANDS:
        for sep in ["", " ", "-"]:
            num = luhn_complete(pfx(), n)
            v = grouped(num, groups, sep) if sep else num
            out.append(Line().add("%s card: " % brand).add(v, "credit_card").add(" exp 11/27").obj())
    # Every IBAN country, compact and grouped.
    for cc in sorted(IBAN_FORMATS):
        for grouped_form in [False, True]:
            bban = "".join(R.choice("0123456789") if p == "n" else R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if p == "a"
                           else R.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for p in IBAN_FORMATS[cc])
            full = cc + iban_check(cc, bban) + bban
            v = " ".join(full[i:i + 4] for i in range(0, len(full), 4)) if grouped_form else full
            out.append(Line().add("pay to ").add(v, "iban").add(" by 2026-12-01").obj())
    # Every secret flavour.
    for _ in range(30):
        out.append(Line().add("config: ").add(secret(), "secret").add(" # do not share").obj())
    # Ambiguous by nature (documented false positives): indistinguishable from real values.
    out.append(Line().add("upgraded firmware to ").add("1.2.3.4", None, "version").add(" last night").obj())
    out.append(Line().add("shipment reference ").add(luhn_complete("4", 16), None, "reference").add(" (carrier)").obj())
    out.append(Line().add("part number ").add("212-555-0199", None, "part_number").add(" in stock").obj())
    for o in out:
        print(json.dumps(o, ensure_ascii=False))


if __name__ == "__main__":
    main()
