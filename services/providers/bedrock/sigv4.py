"""AWS Signature Version 4 for one request: the headers that sign it with an access key (and session token).

After docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html: canonical request (method, the
URI-encoded path, sorted query, signed headers, SHA-256 of the body), string to sign, the four-HMAC key
derivation. Pinned by AWS's published SigV4 test suite (tests/unit/test_sigv4.py). Written out rather than
taken from botocore: fifty lines against a dependency tree, for the one thing the gateway needs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to add to the request: `X-Amz-Date`, `X-Amz-Security-Token` (with a session token) and
    `Authorization`. `headers` are signed too, so they must go out unchanged; `now` must be UTC."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    added = {"X-Amz-Date": amz_date}
    if credentials.session_token:
        added["X-Amz-Security-Token"] = credentials.session_token
    signed = {k.lower(): " ".join(v.split()) for k, v in {**headers, **added}.items()}
    signed["host"] = parts.netloc
    names = sorted(signed)
    signed_headers = ";".join(names)
    query = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    canonical = "\n".join(
        [
            method.upper(),
            quote(parts.path or "/", safe="/~"),  # the path as sent, encoded once more (every service but S3)
            "&".join(f"{k}={v}" for k, v in query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials.secret_access_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
