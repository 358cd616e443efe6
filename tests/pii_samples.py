"""A seeded, labelled synthetic set for measuring the PII scrubber (`ragtune.behaviour.pii`).

`labelled_samples(seed, per_kind)` returns, for every kind in `KINDS`, `per_kind`
single-finding positives embedded in sentences such as a developer-assistant log
would hold, a quarter as many texts that mix several kinds side by side, and
`per_kind` negatives: texts with no personal data that look close (model ids
with long numbers, versions, dates, commit hashes, Luhn-invalid 16-digit
numbers, code). Every value is genuinely valid for its kind: phone numbers pass
`phonenumbers.is_valid_number`, cards pass Luhn, SSNs respect the SSA rules,
IBANs carry a computed mod-97 checksum (and the national check digits for BE
and FR), IP addresses parse with `ipaddress`. The same seed gives the same set.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
import uuid
from dataclasses import dataclass, field

from ragtune.behaviour.pii import KINDS

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
URLSAFE = ALNUM + "-_"


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, start, end), end exclusive
    variant: str = ""  # which generator made it ("visa", "ipv6", "negative:commit" ...), for error analysis

    def values(self) -> list[tuple[str, str]]:
        return [(kind, self.text[start:end]) for kind, start, end in self.spans]


def compose(template: str, values: list[tuple[str, str]]) -> tuple[str, list[tuple[str, int, int]]]:
    """Fill each `{}` of `template` with the next (kind, value), recording the value's span."""
    parts = template.split("{}")
    if len(parts) != len(values) + 1:
        raise ValueError(f"template {template!r} wants {len(parts) - 1} values, got {len(values)}")
    text, spans = parts[0], []
    for (kind, value), tail in zip(values, parts[1:]):
        spans.append((kind, len(text), len(text) + len(value)))
        text += value + tail
    return text, spans


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def digits(rng: random.Random, n: int) -> str:
    return rand(rng, string.digits, n)


# ---------------------------------------------------------------- sentences around a value

OPENERS = [
    "",
    "",
    "",
    "Hi! ",
    "hey, ",
    "Quick question: ",
    "Following up on yesterday: ",
    "[user] ",
    "Sorry if this is dumb, but ",
    "Context: fine-tuning flan-t5-base on 2 GPUs. ",
]
CLOSERS = [
    "",
    "",
    "",
    " Thanks!",
    " Any idea?",
    " Why does pipeline() fail then?",
    " I'm on transformers 4.41.2.",
    " (running in a Colab notebook)",
    " Please help, the demo is at 3pm.",
    " The model is bert-base-uncased btw.",
]

TEMPLATES = {
    "EMAIL_ADDRESS": [
        "my email is {}, can you tell me why from_pretrained() times out?",
        "Please send the eval report to {} when the run finishes.",
        "git config user.email says {} but the commit shows another author",
        "Contact: {}",
        "huggingface-cli login fails for the account {} with a 401",
        "From: Jane Doe <{}>\nSubject: tokenizer question",
        "the model card footer has a mailto:{} link, is that fine?",
        "ping {} or me if the tokenizer breaks again",
        "cc {}; the dataset card needs a maintainer",
        "Signed-off-by: Alex Kim <{}>",
        "I registered with {} but never got the confirmation mail.",
        "wandb.init(entity='team') logs in as {} instead of the service account",
    ],
    "PHONE_NUMBER": [
        "call me at {} if the training job dies again",
        "my cell is {}, text me when the GPU frees up",
        "Support hotline {} was no help with the CUDA error.",
        "phone: {}",
        "I'm on {} (WhatsApp) for the demo tomorrow",
        "The on-call number {} is in the README, is that ok to publish?",
        "reach the vendor at {}.",
        "tel:{} is what the scraped page shows for the clinic",
        "Our sales contact ({}) asked for the fine-tuned checkpoint.",
        "the NER model tags {} as CARDINAL instead of a phone number",
    ],
    "CREDIT_CARD": [
        "billing fails with card {} on the Pro plan, why?",
        "I entered {} exp 09/27 and checkout says declined",
        "my card {} was charged twice for the inference endpoint",
        "payment_method: {}",
        "cc={} ended up in the training logs, how do I purge it?",
        "Charge the team card {} for the A100 hours.",
        "the OCR model read the card number as {} from the receipt",
        "Can the scrubber catch {} in support tickets?",
    ],
    "US_SSN": [
        "my SSN {} shows up in the OCR output of layoutlm",
        "The form parser extracted ssn: {} from the W-2",
        "donut returned {} as the social security number field",
        "Can you mask {} in the dataset before I push it?",
        "employee record: name=Jane, ssn={}, dept=ML",
        "the tax form says {} but the label file disagrees",
        "SSN {} appears in 3 rows of the CSV.",
    ],
    "IP_ADDRESS": [
        "the inference server at {} refuses connections on port 8000",
        "curl http://{}:8080/v1/models hangs forever",
        "ssh ubuntu@{} works but jupyter does not",
        "my IP {} got rate limited by the hub",
        "X-Forwarded-For: {}",
        '{} - - [12/Mar/2024:10:15:32 +0000] "POST /generate HTTP/1.1" 502',
        "NCCL picks interface eth0 with address {}, is that right?",
        "allowlist {} in the security group?",
        "the vLLM server binds to {}.",
    ],
    "IBAN_CODE": [
        "wire the invoice to IBAN {} please",
        "my account {} was rejected by the payout form",
        "Bank details: {} (BIC DEUTDEFFXXX)",
        "iban: {}",
        "the SEPA payload has creditor IBAN {} and fails validation",
        "refund to {}, thanks",
        "the invoice-extraction model misses {} on page 2",
    ],
    "API_KEY": [
        "my key is {}, why does pipeline() fail?",
        "export OPENAI_API_KEY={}",
        "I pasted {} into the notebook and got a 401",
        "here's my token {} - is it expired?",
        'client = OpenAI(api_key="{}")',
        "Using key {} with the hub client, still unauthorized.",
        "the .env file has {} on line 3",
        "login(token='{}') raises an error",
    ],
    "BEARER_TOKEN": [
        "Authorization: Bearer {}",
        "curl -H 'Authorization: Bearer {}' https://api.example.com/v1/chat",
        "headers={'Authorization': 'Bearer {}'} still gives 403",
        "the proxy logs show bearer {} on every request",
        "request headers:\n  Authorization: Bearer {}\n  Content-Type: application/json",
    ],
}
JWT_TEMPLATES = [
    "decoded this JWT {} but exp looks wrong",
    "id_token={}",
    "the cookie session={} expires too early",
    "jwt.decode('{}', key) raises InvalidSignatureError",
]
# Named assignments whose value has no provider prefix; the name is what gives it away.
ASSIGNMENT_TEMPLATES = [
    'api_key = "{}"',
    "API_KEY={}",
    '{"apiKey": "{}", "model": "gpt-4o"}',
    "client_secret: {}",
    "secret_key='{}'",
    "access_token = {}",
    "python serve.py --api-key={} --port 8000",
    "headers = {'x-api-key': '{}'}",
    "openai.api_key = '{}'",
    "export WANDB_API_KEY={}",
    "COHERE_API_KEY={}",
    "os.environ['ANTHROPIC_API_KEY'] = '{}'",
]


# ---------------------------------------------------------------- values, one generator per kind

FIRST = [
    "jane",
    "john",
    "maria",
    "wei",
    "arjun",
    "fatima",
    "lukas",
    "sofia",
    "kenji",
    "olga",
    "pierre",
    "aisha",
    "diego",
    "emma",
    "noah",
    "li",
    "priya",
    "omar",
    "hannah",
    "mateo",
    "zoe",
    "ivan",
    "chloe",
    "tom",
]
LAST = [
    "doe",
    "smith",
    "garcia",
    "chen",
    "patel",
    "khan",
    "muller",
    "rossi",
    "tanaka",
    "ivanova",
    "dubois",
    "okafor",
    "lopez",
    "brown",
    "nguyen",
    "kim",
    "schmidt",
    "silva",
    "cohen",
    "obrien",
]
DOMAINS = [
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "proton.me",
    "icloud.com",
    "acme-corp.com",
    "datalabs.io",
    "mail.example.org",
    "cs.stanford.edu",
    "deepmind-partners.ai",
    "startup.dev",
    "t-online.de",
    "orange.fr",
    "uni-heidelberg.de",
    "research.ibm.com",
    "company.co.in",
    "fastmail.fm",
    "hey.com",
    "nlp-group.ox.ac.uk",
    "bigco.net",
]
IDN = [("josé.garcía", "empresa.es"), ("müller", "beispiel.de"), ("françois", "société.fr")]


def email(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    shape = rng.randrange(11)
    local = [
        f"{first}.{last}",
        f"{first[0]}{last}",
        f"{first}_{last}",
        f"{first}+{rng.choice(['hf', 'github', 'spam', 'ml'])}",
        f"{first}.{last}{rng.randint(1, 99)}",
        f"{first}{rng.randint(1970, 2005)}",
        f"{first[0]}.{last[0]}.{last}",
        f"{rng.choice(['ml-team', 'dev-ops', 'noreply', 'support', 'data.science'])}",
        f"{first.capitalize()}.{last.capitalize()}",
        f"{last}-{first}",
        f"{first}.{last}",
    ][shape]
    domain = rng.choice(DOMAINS)
    if shape == 10 and rng.random() < 0.6:  # internationalised addresses
        local, domain = rng.choice(IDN)
        return f"{local}@{domain}", "email-idn"
    if rng.random() < 0.1:
        domain = domain.upper()
    return (
        f"{local}@{domain}",
        f"email-{['dot', 'initial', 'underscore', 'plus', 'digits', 'year', 'initials', 'role', 'caps', 'dash', 'dot'][shape]}",
    )


US_FORMATS = [
    "({a}) {b}-{c}",
    "{a}-{b}-{c}",
    "{a}.{b}.{c}",
    "+1 ({a}) {b}-{c}",
    "+1 {a}-{b}-{c}",
    "+1{a}{b}{c}",
    "1-{a}-{b}-{c}",
    "+1.{a}.{b}.{c}",
]
NATIONAL_REGIONS = ["US", "US", "US", "CA", "GB", "DE", "FR", "IN"]  # written the local way, without a country code
INTERNATIONAL_REGIONS = [
    "GB",
    "DE",
    "FR",
    "IN",
    "BR",
    "IL",
    "AU",
    "JP",
    "ES",
    "IT",
    "NL",
    "SE",
    "CH",
    "IE",
    "SG",
    "MX",
    "PL",
    "NZ",
    "ZA",
    "KR",
    "AT",
    "BE",
    "DK",
    "NO",
    "CA",
    "US",
]


def phone_number(rng: random.Random, region: str):
    """A random number that `phonenumbers` says is valid, mobile or fixed line, for `region`."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    kind = rng.choice([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    nsn = phonenumbers.national_significant_number(example)
    for attempt in range(400):
        keep = rng.randint(1, 3) if attempt < 300 else len(nsn) - 4
        candidate = nsn[:keep] + digits(rng, len(nsn) - keep)
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number_for_region(number, region) and phonenumbers.number_type(number) in (
            kind,
            PhoneNumberType.FIXED_LINE_OR_MOBILE,
        ):
            return number
    return example


def phone(rng: random.Random) -> tuple[str, str]:
    import phonenumbers
    from phonenumbers import PhoneNumberFormat as F

    if rng.random() < 0.45:
        region = rng.choice(NATIONAL_REGIONS)
        number = phone_number(rng, region)
        if region in ("US", "CA"):
            nsn = phonenumbers.national_significant_number(number)
            return rng.choice(US_FORMATS).format(a=nsn[:3], b=nsn[3:6], c=nsn[6:]), f"phone-{region}-nanp"
        return phonenumbers.format_number(number, F.NATIONAL), f"phone-{region}-national"
    region = rng.choice(INTERNATIONAL_REGIONS)
    number = phone_number(rng, region)
    style = rng.choice(["international", "international", "e164", "dashes"])
    if style == "e164":
        return phonenumbers.format_number(number, F.E164), f"phone-{region}-e164"
    text = phonenumbers.format_number(number, F.INTERNATIONAL)
    if style == "dashes":
        text = phonenumbers.format_number(number, F.RFC3966).removeprefix("tel:")
    return text, f"phone-{region}-{style}"


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these get doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return luhn_digit(number[:-1]) == number[-1]


CARD_BRANDS = {
    "visa": (lambda r: "4", 16),
    "mastercard": (lambda r: str(r.randint(51, 55)), 16),
    "mastercard-2series": (lambda r: str(r.randint(2221, 2720)), 16),
    "amex": (lambda r: r.choice(["34", "37"]), 15),
    "discover": (lambda r: r.choice(["6011", str(r.randint(644, 649)), "65"]), 16),
}


def card_number(rng: random.Random, brand: str) -> str:
    prefix, length = CARD_BRANDS[brand][0](rng), CARD_BRANDS[brand][1]
    body = prefix + digits(rng, length - 1 - len(prefix))
    return body + luhn_digit(body)


def group_card(number: str, sep: str) -> str:
    sizes = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)
    out, i = [], 0
    for s in sizes:
        out.append(number[i : i + s])
        i += s
    return sep.join(out)


def credit_card(rng: random.Random) -> tuple[str, str]:
    brand = rng.choices(list(CARD_BRANDS), weights=[30, 18, 7, 20, 15])[0]
    sep = rng.choice([" ", " ", "-", ""])
    return group_card(card_number(rng, brand), sep), f"card-{brand}"


INVALID_SSNS = {"123456789", "987654320", "078051120", "219099999"}


def ssn(rng: random.Random) -> tuple[str, str]:
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        value = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if value not in INVALID_SSNS and len(set(value)) > 1:
            return f"{value[:3]}-{value[3:5]}-{value[5:]}", "ssn"


def ip_address(rng: random.Random) -> tuple[str, str]:
    shape = rng.randrange(10)
    if shape <= 4:
        first = rng.choice([10, 172, 192, rng.randint(1, 223)])
        if first == 10:
            addr = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        elif first == 172:
            addr = f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        elif first == 192:
            addr = f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        else:
            addr = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if shape == 4:
            return f"{addr}/{rng.choice([8, 16, 24, 32])}", "ipv4-cidr"
        return addr, "ipv4"
    if shape <= 7:
        addr = ipaddress.IPv6Address(rng.getrandbits(128))
        if rng.random() < 0.5:  # a real-looking prefix with runs of zeros, so the compressed form has `::`
            net = rng.choice(["2001:db8", "2a00:1450", "2606:4700", "fd12:3456"])
            tail = ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(rng.randint(1, 3)))
            addr = ipaddress.IPv6Address(f"{net}::{tail}")
        text = addr.exploded if shape == 7 else addr.compressed
        return text, "ipv6-full" if shape == 7 else "ipv6"
    if shape == 8:
        return f"fe80::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}%eth0", "ipv6-link-local"
    return f"::ffff:{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "ipv6-mapped"


# BBAN layouts from the SWIFT IBAN registry: n digits, a upper-case letters, c upper-case alphanumerics.
IBAN_LAYOUTS = {
    "DE": "8n10n",
    "GB": "4a6n8n",
    "FR": "5n5n11n2n",
    "NL": "4a10n",
    "ES": "4n4n2n10n",
    "IT": "1a5n5n12n",
    "BE": "3n7n2n",
    "CH": "5n12c",
    "AT": "5n11n",
    "PL": "8n16n",
    "SE": "3n16n1n",
    "IE": "4a6n8n",
    "PT": "4n4n11n2n",
    "DK": "4n9n1n",
    "NO": "4n6n1n",
    "FI": "3n11n",
    "LU": "3n13c",
    "MT": "4a5n18c",
    "AE": "3n16n",
}


def iban_check_digits(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{98 - number % 97:02d}"


def iban_valid(iban: str) -> bool:
    iban = iban.replace(" ", "")
    return int("".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])) % 97 == 1


def bban(rng: random.Random, country: str) -> str:
    parts, layout, i = [], IBAN_LAYOUTS[country], 0
    while i < len(layout):
        j = i
        while layout[j].isdigit():
            j += 1
        n, kind = int(layout[i:j]), layout[j]
        alphabet = {"n": string.digits, "a": string.ascii_uppercase, "c": UPPER_ALNUM if rng.random() < 0.3 else string.digits}[
            kind
        ]
        parts.append(rand(rng, alphabet, n))
        i = j + 1
    if country == "BE":  # national check: account number mod 97
        head = parts[0] + parts[1]
        parts[2] = f"{int(head) % 97 or 97:02d}"
    if country == "FR":  # RIB key
        bank, branch, account = (int(p) for p in parts[:3])
        parts[3] = f"{97 - (89 * bank + 15 * branch + 3 * account) % 97:02d}"
    return "".join(parts)


def iban(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(list(IBAN_LAYOUTS))
    body = bban(rng, country)
    code = country + iban_check_digits(country, body) + body
    if rng.random() < 0.5:  # the printed form, in groups of four
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4)), f"iban-{country}-paper"
    return code, f"iban-{country}"


def api_key(rng: random.Random) -> tuple[str, str, str | None]:
    """(value, variant, template or None for the generic key sentences)."""
    shape = rng.choices(
        [
            "openai",
            "openai-proj",
            "openai-svcacct",
            "anthropic",
            "aws",
            "aws-sts",
            "github",
            "github-oauth",
            "github-fine-grained",
            "huggingface",
            "slack",
            "google",
            "assignment",
        ],
        weights=[8, 10, 3, 3, 8, 3, 8, 3, 5, 10, 6, 6, 27],
    )[0]
    value = {
        "openai": lambda: "sk-" + rand(rng, ALNUM, 48),
        "openai-proj": lambda: "sk-proj-" + rand(rng, URLSAFE, rng.choice([48, 64, 156])),
        "openai-svcacct": lambda: "sk-svcacct-" + rand(rng, URLSAFE, 64),
        "anthropic": lambda: "sk-ant-api03-" + rand(rng, URLSAFE, 93) + "AA",
        "aws": lambda: "AKIA" + rand(rng, string.ascii_uppercase + "234567", 16),
        "aws-sts": lambda: "ASIA" + rand(rng, string.ascii_uppercase + "234567", 16),
        "github": lambda: "ghp_" + rand(rng, ALNUM, 36),
        "github-oauth": lambda: rng.choice(["gho_", "ghs_", "ghu_"]) + rand(rng, ALNUM, 36),
        "github-fine-grained": lambda: "github_pat_" + "11" + rand(rng, UPPER_ALNUM, 20) + "_" + rand(rng, ALNUM, 59),
        "huggingface": lambda: "hf_" + rand(rng, string.ascii_letters, 34),
        "slack": lambda: rng.choice(["xoxb-", "xoxp-"]) + digits(rng, 12) + "-" + digits(rng, 13) + "-" + rand(rng, ALNUM, 24),
        "google": lambda: "AIza" + rand(rng, URLSAFE, 35),
        "assignment": lambda: rng.choice(
            [rand(rng, string.hexdigits.lower()[:16], 32), rand(rng, ALNUM, 40), rand(rng, URLSAFE, 24)]
        ),
    }[shape]()
    return value, f"key-{shape}", rng.choice(ASSIGNMENT_TEMPLATES) if shape == "assignment" else None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    if rng.random() < 0.5:
        header["kid"] = rand(rng, ALNUM, 16)
    payload = {"sub": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "iat": rng.randint(1_600_000_000, 1_750_000_000)}
    payload["exp"] = payload["iat"] + 3600
    if rng.random() < 0.5:
        payload["email_verified"] = True
        payload["scope"] = rng.choice(["read write", "inference", "repo"])
    sig = b64url(rng.getrandbits(8 * rng.choice([32, 64, 256])).to_bytes(256, "big").lstrip(b"\0") or b"x")
    return ".".join(
        [
            b64url(json.dumps(header, separators=(",", ":")).encode()),
            b64url(json.dumps(payload, separators=(",", ":")).encode()),
            sig,
        ]
    )


def bearer_token(rng: random.Random) -> tuple[str, str, str | None]:
    shape = rng.choices(["jwt", "jwt-bare", "opaque", "opaque-b64", "google-oauth"], weights=[30, 20, 25, 15, 10])[0]
    if shape == "jwt":
        return jwt(rng), "bearer-jwt", None
    if shape == "jwt-bare":
        return jwt(rng), "bearer-jwt-bare", rng.choice(JWT_TEMPLATES)
    if shape == "opaque":
        return rand(rng, ALNUM, rng.randint(20, 64)), "bearer-opaque", None
    if shape == "opaque-b64":
        return base64.b64encode(rng.getrandbits(8 * 30).to_bytes(30, "big")).decode(), "bearer-b64", None
    return "ya29.a0" + rand(rng, URLSAFE, rng.randint(100, 160)), "bearer-google-oauth", None


def value_for(kind: str, rng: random.Random) -> tuple[str, str, str | None]:
    if kind == "API_KEY":
        return api_key(rng)
    if kind == "BEARER_TOKEN":
        return bearer_token(rng)
    make = {
        "EMAIL_ADDRESS": email,
        "PHONE_NUMBER": phone,
        "CREDIT_CARD": credit_card,
        "US_SSN": ssn,
        "IP_ADDRESS": ip_address,
        "IBAN_CODE": iban,
    }[kind]
    value, variant = make(rng)
    return value, variant, None


def positive(kind: str, rng: random.Random) -> Sample:
    value, variant, template = value_for(kind, rng)
    template = template or rng.choice(TEMPLATES[kind])
    if kind == "IP_ADDRESS" and ":" in value:  # an IPv6 address in a URL or before a port is written in brackets
        template = template.replace("http://{}:", "http://[{}]:")
    if "\n" not in template and not template.startswith(("{", "'", '"')):
        template = rng.choice(OPENERS) + template + rng.choice(CLOSERS)
    text, spans = compose(template, [(kind, value)])
    return Sample(text, spans, variant)


MIXED_TEMPLATES = [
    "Profile: {}, {}",
    "{} / {}",
    "contact {} or {} if the eval breaks",
    "user details: {}; {}; {}",
    "{}\n{}\n{}",
    "name=Jane Doe email={} phone={} ip={}",
    "I tried {} and {} - both rejected.",
    "({}) ({})",
]
# An opaque bearer token is only recognisable after its `Bearer` keyword, so bearer tokens stay out of these lists.
MIXED_KINDS = [k for k in KINDS if k != "BEARER_TOKEN"]


def mixed(rng: random.Random) -> Sample:
    template = rng.choice(MIXED_TEMPLATES)
    n = template.count("{}")
    if template.startswith("name=Jane"):
        kinds = ["EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]
    else:
        kinds = rng.sample(MIXED_KINDS, n)
    values = []
    for kind in kinds:
        value, _, own_template = value_for(kind, rng)
        while own_template is not None:  # assignments bring their own sentence; pick a self-standing value
            value, _, own_template = value_for(kind, rng)
        values.append((kind, value))
    text, spans = compose(template, values)
    return Sample(text, spans, "mixed")


# ---------------------------------------------------------------- negatives: no PII, but close

WORDS = ["demo", "sentiment", "qa", "ner", "summarizer", "finetuned", "imdb", "squad", "whisper", "llama", "lora", "distil"]
USERS = [
    "omarques",
    "jdoe42",
    "nlp-lab",
    "acme-ai",
    "cardiffnlp",
    "deepset",
    "dslim",
    "bhadresh-savani",
    "TheBloke",
    "sentence-transformers",
]


def negative(rng: random.Random, family: str | None = None) -> Sample:
    """A text with no personal data from `family` (one of `NEGATIVE_FAMILIES`; a random one if None)."""
    r = rng.randint

    def hexs(n: int) -> str:
        return rand(rng, "0123456789abcdef", n)

    def luhn_invalid() -> str:
        number = card_number(rng, rng.choice(["visa", "mastercard", "discover"]))
        number = number[:-1] + str((int(number[-1]) + r(1, 9)) % 10)  # any other last digit breaks the checksum
        return group_card(number, rng.choice([" ", "-", ""]))

    def iso_time() -> str:
        return f"{r(2019, 2025)}-{r(1, 12):02d}-{r(1, 28):02d}T{r(0, 23):02d}:{r(0, 59):02d}:{r(0, 59):02d}Z"

    makers = {
        "model-id": lambda: (
            f"tried {rng.choice(USERS)}/autotrain-{rng.choice(WORDS)}-{r(10**9, 10**10 - 1)} but the checkpoint won't load"
        ),
        "model-id-2": lambda: (
            f"pipeline('text-classification', model='{rng.choice(USERS)}/{rng.choice(WORDS)}-{r(100000, 9999999)}')"
        ),
        "model-name": lambda: rng.choice(MODEL_NAMES) + " gives different results on GPU and CPU",
        "version": lambda: (
            f"pip install transformers=={r(2, 4)}.{r(0, 45)}.{r(0, 9)} accelerate=={r(0, 1)}.{r(0, 30)}.{r(0, 9)} "
            f"torch=={r(1, 2)}.{r(0, 5)}.{r(0, 3)}+cu121"
        ),
        "version-2": lambda: f"works on 4.{r(10, 45)}.{r(0, 9)}, broken since v{r(1, 3)}.{r(0, 20)}.{r(0, 9)}-rc{r(1, 4)}",
        "date": lambda: (
            f"the run started {r(2019, 2025)}-{r(1, 12):02d}-{r(1, 28):02d} and crashed on {r(1, 28):02d}/{r(1, 12):02d}/{r(2019, 2025)}"
        ),
        "timestamp": lambda: f"[{iso_time()}] epoch {r(1, 10)} loss={r(0, 3)}.{r(1000, 9999)}",
        "step-fraction": lambda: rng.choice(
            [
                f"step {r(1, 20000)}/{r(20000, 99999)} loss={r(0, 3)}.{r(1000, 9999)}",
                f"{r(1, 99)}%|#####     | {r(1, 20000)}/{r(20000, 99999)} [{r(0, 59):02d}:{r(0, 59):02d}<{r(0, 59):02d}:{r(0, 59):02d}, {r(1, 20)}.{r(10, 99)}it/s]",
            ]
        ),
        "commit": lambda: f"regression introduced in commit {hexs(40)}, reverted in {hexs(7)}",
        "digest": lambda: f"docker pull ghcr.io/acme/serve@sha256:{hexs(64)}",
        "uuid": lambda: f"run id {uuid.UUID(int=rng.getrandbits(128), version=4)} finished in {r(1, 59)}m{r(0, 59)}s",
        "numbers": lambda: (
            f"batch size {rng.choice([8, 16, 32, 64])}, lr {r(1, 9)}e-{r(4, 6)}, {r(1, 10)} epochs, "
            f"max_length={rng.choice([128, 256, 512, 1024])}, seed={r(0, 9999)}"
        ),
        "sizes": lambda: (
            f"the dataset has {r(1, 999)},{r(100, 999)},{r(100, 999)} rows and the model {r(1, 70)}.{r(1, 9)}B params ({r(10, 140)}.{r(0, 9)} GB)"
        ),
        "shape": lambda: (
            f"RuntimeError: shape mismatch torch.Size([{r(1, 64)}, {rng.choice([512, 1024])}, 768]) vs [{r(1, 64)}, 768]"
        ),
        "luhn-invalid": lambda: f"order reference {luhn_invalid()} was not found in the billing export",
        "code": lambda: (
            f"tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased'); "
            f"out = model(**tokenizer(text, truncation=True, max_length={rng.choice([128, 512])}))"
        ),
        "port": lambda: f"gradio serves on localhost:{r(1024, 65535)} and the API on port {r(1024, 65535)}",
        "http": lambda: (
            f"HTTP {rng.choice([401, 403, 404, 429, 500, 502, 503])} after {r(100, 99999)} requests, retry-after {r(1, 3600)}"
        ),
        "pid": lambda: f"process {r(1000, 99999)} killed with exit code 137 (OOM) at {r(0, 23):02d}:{r(0, 59):02d}",
        "arxiv": lambda: f"see arXiv:{r(15, 24)}{r(1, 12):02d}.{r(1, 29999):05d} section {r(1, 9)}.{r(1, 9)}",
        "secret-mention": lambda: rng.choice(SECRET_MENTIONS),
        "decorator": lambda: rng.choice(
            [
                "why does @torch.no_grad() break the backward pass?",
                "use @dataclass(frozen=True) for the config",
                "numpy a @ b is slower than torch.matmul",
            ]
        ),
    }
    assert sorted(makers) == NEGATIVE_FAMILIES
    family = family or rng.choice(NEGATIVE_FAMILIES)
    return Sample(rng.choice(OPENERS) + makers[family]() + rng.choice(CLOSERS), [], f"negative:{family}")


NEGATIVE_FAMILIES = sorted(
    [
        "model-id",
        "model-id-2",
        "model-name",
        "version",
        "version-2",
        "date",
        "timestamp",
        "step-fraction",
        "commit",
        "digest",
        "uuid",
        "numbers",
        "sizes",
        "shape",
        "luhn-invalid",
        "code",
        "port",
        "http",
        "pid",
        "arxiv",
        "secret-mention",
        "decorator",
    ]
)
MODEL_NAMES = [
    "gpt-4o-2024-08-06",
    "Llama-2-7b-chat-hf",
    "mistralai/Mistral-7B-Instruct-v0.2",
    "meta-llama/Meta-Llama-3-8B",
    "facebook/bart-large-cnn",
    "google/flan-t5-xxl",
    "openai/whisper-large-v3",
]
SECRET_MENTIONS = [  # talk about keys and tokens, without one
    "pass api_key=None to use the env var",
    "api_key=os.environ['OPENAI_API_KEY'] returns None in the notebook",
    "where do I set the OPENAI_API_KEY environment variable?",
    "the docs say to send an Authorization: Bearer header, which header exactly?",
    "is sk-learn the same as scikit-learn?",
    "set token=True in push_to_hub",
    "my HF token has read scope only, do I need write?",
]


def labelled_samples(seed: int = 0, per_kind: int = 200) -> list[Sample]:
    """`per_kind` positives for every kind, `per_kind // 4` mixed texts and `per_kind` negatives; deterministic for `seed`."""
    rng = random.Random(seed)
    samples = [positive(kind, rng) for kind in KINDS for _ in range(per_kind)]
    samples += [mixed(rng) for _ in range(per_kind // 4)]
    samples += [negative(rng, NEGATIVE_FAMILIES[i % len(NEGATIVE_FAMILIES)]) for i in range(per_kind)]  # every family, in turn
    return samples
