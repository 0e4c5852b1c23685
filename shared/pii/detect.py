"""Finding personal data and secrets in text: emails, phone numbers, payment cards, IBANs, US social security
numbers, IP addresses and API-key-like secrets.

Each kind is a candidate pattern and, where the kind has one, a check of the candidate by a well-kept
library: `phonenumbers` (Google's libphonenumber metadata: is this a number that exists in its region?),
`python-stdnum` (Luhn for cards, ISO 13616 mod-97 and each country's format for IBANs, the SSA's rules for
SSNs) and the standard library's `ipaddress`. The patterns are ours: Presidio
(Microsoft's PII framework) pairs the same libraries with regexes like these, but it needs spaCy and a
language model of several hundred megabytes on every ingress, for kinds (names, places) we do not detect.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

from shared.pii.kinds import KINDS, Kind


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


# --- the patterns -------------------------------------------------------------------------------------------
# Hand-written: no maintained library finds these kinds in free text without Presidio's weight (see above).

# A phone-number-shaped run: an optional +country code, then two to six groups of digits split by spaces,
# dots, dashes or brackets. Whether it is a number that exists is phonenumbers' call.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,5}(?![\w])")
# 13 to 19 digits in groups (space or dash), starting like a card network's numbers (2-6: Mastercard, Amex,
# Visa, Discover, UnionPay...); the Luhn check decides.
_CARD = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
# Country code, check digits, then the BBAN in groups of up to four (printed) or run together.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}(?![a-z0-9])")
# Only the written form (AAA-GG-SSSS, or with spaces): nine digits alone are too often something else.
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# Credentials whose format their issuers publish (the same prefixes secret scanners such as gitleaks and
# GitHub's push protection look for), and any long value assigned to a name that says it is a secret.
_SECRET = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-ant-[A-Za-z0-9_-]{20,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"  # OpenAI
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"  # Stripe
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # a JSON Web Token
    r")(?![A-Za-z0-9_-])"
    # A PEM key is a few KB; bounded, so a text of BEGIN lines without their END costs no quadratic scan.
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]{0,16384}?-----END [A-Z ]*PRIVATE KEY-----"
)
# `password: hunter2hunter2`, `"api_key": "…"`, `Authorization: Bearer …`: the value (group 1) is the secret.
_ASSIGNED = re.compile(
    r"(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd"
    r"|client[_-]?secret|private[_-]?key)[\"']?\s*[:=]\s*[\"']?|\bbearer\s+)"
    r"([A-Za-z0-9_\-./+=~]{12,})"
)


# --- the checks ---------------------------------------------------------------------------------------------


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def _national_lengths(region: str) -> frozenset[int]:
    """How many digits a number written without its country code has in `region`, its trunk prefix (the US's
    1, Europe's 0) included or not: a candidate of another length is not parsed at all."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None:
        return frozenset(range(7, 16))
    lengths = metadata.general_desc.possible_length or tuple(range(7, 16))
    prefix = len(metadata.national_prefix or "")
    return frozenset(n + extra for n in lengths for extra in {0, prefix} if n + extra >= 7)


def _phone_check(region: str) -> Callable[[str], bool]:
    lengths = _national_lengths(region)

    def is_phone(candidate: str) -> bool:
        """phonenumbers' parse and validity check cost 50-100 µs a candidate: only plausible ones get them."""
        digits = len(_digits(candidate))
        if not 7 <= digits <= 15 or _DATE.fullmatch(candidate):
            return False
        if not candidate.startswith("+") and digits not in lengths:
            return False
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_valid_number(number)

    return is_phone


# The networks whose numbers have fixed lengths (ISO/IEC 7812 issuer ranges): another length is not theirs.
_CARD_LENGTHS = {"4": (13, 16, 19), "34": (15,), "37": (15,), **{f"5{d}": (16,) for d in "12345"}}


def _is_card(candidate: str) -> bool:
    digits = _digits(candidate)
    lengths = _CARD_LENGTHS.get(digits[:2]) or _CARD_LENGTHS.get(digits[:1])
    if len(digits) not in (lengths or range(13, 20)):
        return False
    return luhn.is_valid(digits)


def _mod97(candidate: str) -> bool:
    """ISO 7064 mod 97-10, as ISO 13616 applies it to an IBAN (stdnum then checks the country's format)."""
    compact = candidate.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1


def _ibans(text: str, pos: int = 0) -> Iterator[Finding]:
    """The greedy pattern may take capitalised words after an IBAN (or the next IBAN): groups are dropped
    from the end until the rest checks out (mod 97 and the country's length), and the search goes on right
    after what was found."""
    while (match := _IBAN.search(text, pos)) is not None:
        candidate = match.group()
        pos = match.start() + 1
        while len(candidate) >= 15:
            if _mod97(candidate) and iban.is_valid(candidate):  # the cheap test first: stdnum's costs ~30 µs
                pos = match.start() + len(candidate)
                yield Finding("iban", match.start(), pos)
                break
            cut = max(candidate.rfind(" "), len(candidate) - 4) if " " in candidate else len(candidate) - 1
            candidate = candidate[:cut].rstrip()


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# --- finding ------------------------------------------------------------------------------------------------

# When two findings overlap, the longer one wins (an email holding digits, a card's digits read as a phone
# number), then the kind listed first.
_PRIORITY: dict[Kind, int] = {"secret": 0, "email": 1, "iban": 2, "card": 3, "ssn": 4, "ip": 5, "phone": 6}


def _matches(pattern: re.Pattern[str], text: str, kind: Kind, check: Callable[[str], bool] | None = None,
             group: int = 0, start: int = 0, end: int | None = None) -> Iterator[Finding]:
    for match in pattern.finditer(text, start, len(text) if end is None else end):
        if check is None or check(match.group(group)):
            yield Finding(kind, match.start(group), match.end(group))


# Python's regular expressions try a pattern at every position unless it starts with a plain character class;
# the kinds' patterns do not (they start with a boundary), so each would cost ~30 µs a KB. Instead one cheap scan
# finds the runs of digits, and the digit kinds' patterns run on those few short stretches only; the other kinds
# run only when a character or word they cannot do without is in the text.
_RUN = re.compile(r"[0-9][0-9 ()./+-]{3,}")  # shorter runs hold no kind
_IBAN_HINT = re.compile(r"[A-Z][A-Z][0-9][0-9]")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])")
_LOCAL_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_SECRET_HINTS = ("sk-", "AKIA", "ASIA", "glpat-", "xox", "AIza", "eyJ", "PRIVATE KEY")
_UNDERSCORED_HINTS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "_live_", "_test_", "hf_")
_ASSIGNED_HINTS = ("key", "secret", "token", "passw", "pwd", "bearer")


def _emails(text: str) -> Iterator[Finding]:
    """Around each `@`: the local part before it (RFC 5321's dot-atom characters, at most 64), a domain after."""
    at = text.find("@")
    while at >= 0:
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_PART:
            start -= 1
        if start < at and (domain := _EMAIL_DOMAIN.match(text, at + 1)) is not None:
            yield Finding("email", start, domain.end())
        at = text.find("@", at + 1)


_HEX_COLON = frozenset("0123456789abcdefABCDEF:.")


def _ipv6s(text: str) -> Iterator[Finding]:
    """IPv6 addresses, looked for only in the tokens of hex digits and colons around each colon that have two
    colons at least (a time of day has one)."""
    colon = text.find(":")
    while colon >= 0:
        start = end = colon
        while start > 0 and text[start - 1] in _HEX_COLON:
            start -= 1
        while end < len(text) and text[end] in _HEX_COLON:
            end += 1
        match = _IPV6.match(text, start, min(len(text), end + 1)) if text.count(":", start, end) >= 2 else None
        if match is not None and _is_ip(match.group()):
            yield Finding("ip", match.start(), match.end())
        colon = text.find(":", end)


class Detector:
    """The configured kinds, found in any text; `phone_region` is how numbers without a `+` are read."""

    def __init__(self, kinds: Iterable[Kind] = KINDS, phone_region: str = "US") -> None:
        self.kinds = frozenset(kinds)
        self.phone_region = phone_region
        self._is_phone = _phone_check(phone_region)

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in order of position."""
        found: list[Finding] = []
        kinds = self.kinds
        if "secret" in kinds:
            if any(hint in text for hint in _SECRET_HINTS) or (
                "_" in text and any(hint in text for hint in _UNDERSCORED_HINTS)
            ):
                found += _matches(_SECRET, text, "secret")
            lowered = text.lower()
            if any(hint in lowered for hint in _ASSIGNED_HINTS):
                found += _matches(_ASSIGNED, text, "secret", group=1)
        if "email" in kinds and "@" in text:
            found += _emails(text)
        if "iban" in kinds and (hint := _IBAN_HINT.search(text)) is not None:
            found += _ibans(text, hint.start())
        if "ip" in kinds and ":" in text:
            found += _ipv6s(text)
        checked: dict[str, bool] = {}  # a number repeated in the text is checked once (phonenumbers is slow)

        def is_phone(candidate: str) -> bool:
            if (known := checked.get(candidate)) is None:
                known = checked[candidate] = self._is_phone(candidate)
            return known

        for run in _RUN.finditer(text):
            found += self._in_run(text, run, is_phone)
        return _without_overlaps(found)

    def _in_run(self, text: str, run: re.Match[str], is_phone: Callable[[str], bool]) -> Iterator[Finding]:
        """The digit kinds in one run of digits and separators (with the `+` or `(` before it)."""
        value = run.group()
        digits = sum(map(str.isdigit, value))
        if digits < 4:
            return
        start = run.start() - 1 if run.start() > 0 and text[run.start() - 1] in "+(" else run.start()
        end = min(len(text), run.end() + 1)  # the character after the run: the patterns' lookahead sees it
        kinds = self.kinds
        if "ip" in kinds and value.count(".") >= 3:
            yield from _matches(_IPV4, text, "ip", _is_ip, start=start, end=end)
        if digits < 7:
            return
        if "card" in kinds and digits >= 13:
            yield from _matches(_CARD, text, "card", _is_card, start=start, end=end)
        if "ssn" in kinds and digits >= 9:
            yield from _matches(_SSN, text, "ssn", ssn.is_valid, start=start, end=end)
        if "phone" in kinds:
            yield from _matches(_PHONE, text, "phone", is_phone, start=start, end=end)


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    if len(found) < 2:
        return found
    found.sort(key=lambda f: f.start)
    kept: list[Finding] = []
    for finding in found:
        # Overlaps are rare and local: only the last findings kept can overlap this one.
        while kept and kept[-1].end > finding.start and _better(finding, kept[-1]):
            kept.pop()
        if not kept or kept[-1].end <= finding.start:
            kept.append(finding)
    return kept


def _better(a: Finding, b: Finding) -> bool:
    return (a.length, -_PRIORITY[a.kind]) > (b.length, -_PRIORITY[b.kind])
