"""The clouds' credential services as the gateway's credential chains call them, and the check the mock's
Bedrock, Azure OpenAI and Vertex AI endpoints make of the credentials each call carries.

Issued here, each with a lifetime the test sets (`Clouds.lifetime`), recorded in `Clouds.fetches`:
- EC2 instance metadata, IMDSv2 (docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html,
  iam/security-credentials): `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then
  `GET /latest/meta-data/iam/security-credentials/` (the role) and `…/{role}` (the credentials JSON), both
  with `X-aws-ec2-metadata-token`;
- STS AssumeRoleWithWebIdentity (docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html):
  `POST /` with the query-protocol form, answered in its XML; the web identity token must be one the test
  accepted (`Clouds.web_identity_tokens`), as IRSA's projected token file rotates;
- the ECS task role endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI, docs "Task IAM role"): `GET /ecs/credentials`
  with the `Authorization` token;
- an App Service managed identity endpoint, as azure-identity calls it with IDENTITY_ENDPOINT and
  IDENTITY_HEADER (`GET /msi/token?api-version=2019-08-01&resource=…`, header `X-IDENTITY-HEADER`);
- Google's OAuth 2.0 token endpoint for a service account (RFC 7523 JWT bearer grant: `POST /token`,
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`), the JWT's RS256 signature
  checked against the service account's public key the test registers.

A SigV4-signed Bedrock call is checked with botocore's own signer (a second implementation beside the
gateway's): the access key must be one issued here (or AWS's documented example key), unexpired, with its
session token, and the signature must match. A bearer token (Azure, Vertex) must be one issued here and
unexpired. Failures answer as the clouds do: 403 `InvalidSignatureException` / `ExpiredTokenException` /
`UnrecognizedClientException`, Azure's 401, Google's 401 UNAUTHENTICATED.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROLE = "llm-edge-bedrock"
ECS_PATH = b"/ecs/credentials"
MSI_PATH = b"/msi/token"
GOOGLE_TOKEN_PATH = b"/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# AWS's documented example access key (the SigV4 test suite's), which configured-key tests sign with.
EXAMPLE_KEY = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")

Answer = tuple[int, bytes, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Fetch:
    """One set of credentials handed out: by which service, when, what, until when (epoch seconds)."""

    source: str  # imds, sts, ecs, entra, google
    at: float
    key: str  # the access key id, or the bearer token
    expires: float
    asked: str = ""  # what was presented: the web identity token, the Azure resource, the Google scope


@dataclass(slots=True)
class _AwsKey:
    secret: str
    token: str | None
    expires: float | None


@dataclass(slots=True)
class Clouds:
    lifetime: dict[str, float] = field(
        default_factory=lambda: {"imds": 6 * 3600, "sts": 3600, "ecs": 3600, "entra": 3600, "google": 3600})
    web_identity_tokens: set[str] = field(default_factory=set)
    ecs_token: str = "ecs-authorization-token"
    identity_header: str = "msi-identity-header"
    # A service account's public key (PEM) by its client email, to check a JWT assertion's signature.
    service_accounts: dict[str, bytes] = field(default_factory=dict)
    fetches: list[Fetch] = field(default_factory=list)
    aws: dict[str, _AwsKey] = field(default_factory=lambda: {EXAMPLE_KEY[0]: _AwsKey(EXAMPLE_KEY[1], None, None)})
    bearers: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (source, expires)
    imds_tokens: set[str] = field(default_factory=set)

    def reset(self) -> None:
        self.fetches.clear()
        self.bearers.clear()
        self.imds_tokens.clear()
        self.aws = {EXAMPLE_KEY[0]: _AwsKey(EXAMPLE_KEY[1], None, None)}

    def add_aws_key(self, key: str, secret: str) -> None:
        """A long-lived access key the account has (as in a shared credentials file), accepted when it signs."""
        self.aws[key] = _AwsKey(secret, None, None)

    # --- the credential services ---

    def serve(self, method: bytes, path: bytes, url: bytes, headers: dict[str, str], body: bytes) -> Answer | None:
        """The answer for a credential service's request, or None when the path is not one of theirs."""
        match method, path:
            case b"PUT", b"/latest/api/token":
                if "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                    return 400, b"", _TEXT
                token = secrets.token_urlsafe(24)
                self.imds_tokens.add(token)
                return 200, token.encode(), _TEXT
            case b"GET", _ if path.startswith(b"/latest/meta-data/iam/security-credentials/"):
                if headers.get("x-aws-ec2-metadata-token") not in self.imds_tokens:
                    return 401, b"", _TEXT  # IMDSv2 only: a call without the session token is refused
                role = path.rsplit(b"/", 1)[1].decode()
                if not role:
                    return 200, ROLE.encode(), _TEXT
                if role != ROLE:
                    return 404, b"", _TEXT
                key, secret, token, expires = self.issue_aws("imds")
                return 200, _json({"Code": "Success", "LastUpdated": _iso(time.time()), "Type": "AWS-HMAC",
                                   "AccessKeyId": key, "SecretAccessKey": secret, "Token": token,
                                   "Expiration": _iso(expires)}), _JSON
            case b"POST", b"/":
                return self._sts(body)
            case b"GET", _ if path == ECS_PATH:
                if headers.get("authorization") != self.ecs_token:
                    return 401, _json({"message": "invalid authorization token"}), _JSON
                key, secret, token, expires = self.issue_aws("ecs")
                return 200, _json({"AccessKeyId": key, "SecretAccessKey": secret, "Token": token,
                                   "Expiration": _iso(expires),
                                   "RoleArn": f"arn:aws:iam::123456789012:role/{ROLE}"}), _JSON
            case b"GET", _ if path == MSI_PATH:
                return self._managed_identity(url, headers)
            case b"POST", _ if path == GOOGLE_TOKEN_PATH:
                return self._google_token(body)
        return None

    def issue_aws(self, source: str, asked: str = "") -> tuple[str, str, str, float]:
        key = "ASIA" + secrets.token_hex(8).upper()
        secret, token = secrets.token_urlsafe(30), secrets.token_urlsafe(60)
        expires = float(int(time.time() + self.lifetime[source]))  # AWS gives whole seconds
        self.aws[key] = _AwsKey(secret, token, expires)
        self.fetches.append(Fetch(source, time.time(), key, expires, asked))
        return key, secret, token, expires

    def issue_bearer(self, source: str, asked: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = float(int(time.time() + self.lifetime[source]))
        self.bearers[token] = (source, expires)
        self.fetches.append(Fetch(source, time.time(), token, expires, asked))
        return token, expires

    def _sts(self, body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("Action") != "AssumeRoleWithWebIdentity" or not form.get("RoleArn"):
            return _sts_error(400, "InvalidAction", "Could not find operation " + form.get("Action", ""))
        if form.get("WebIdentityToken") not in self.web_identity_tokens:
            return _sts_error(400, "InvalidIdentityToken", "The web identity token that was passed could "
                                                           "not be validated by AWS. Get a new identity token "
                                                           "from the identity provider and then retry the "
                                                           "request.")
        key, secret, token, expires = self.issue_aws("sts", form["WebIdentityToken"])
        session = form.get("RoleSessionName", "session")
        return 200, _STS_RESPONSE.format(
            role=form["RoleArn"], session=session, key=key, secret=secret, token=token, expires=_iso(expires),
        ).encode(), _XML

    def _managed_identity(self, url: bytes, headers: dict[str, str]) -> Answer:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url.decode()).query).items()}
        if headers.get("x-identity-header") != self.identity_header:
            return 401, _json({"statusCode": 401, "message": "Unauthorized request"}), _JSON
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            return 400, _json({"statusCode": 400, "message": "Bad request: api-version and resource"}), _JSON
        token, expires = self.issue_bearer("entra", query["resource"])
        return 200, _json({"access_token": token, "expires_on": str(int(expires)), "resource": query["resource"],
                           "token_type": "Bearer", "client_id": "00000000-0000-0000-0000-000000000000"}), _JSON

    def _google_token(self, body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return 400, _json({"error": "unsupported_grant_type"}), _JSON
        claims = _verified_jwt(form.get("assertion", ""), self.service_accounts)
        if claims is None or "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope")):
            return 400, _json({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}), _JSON
        token, expires = self.issue_bearer("google", str(claims["scope"]))
        return 200, _json({"access_token": token, "expires_in": int(expires - time.time()),
                           "token_type": "Bearer"}), _JSON

    # --- the LLM endpoints' checks ---

    def check_sigv4(self, method: bytes, url: bytes, headers: dict[str, str], body: bytes) -> Answer | None:
        """None when the call is signed by a live key issued here; else Bedrock's 403."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        try:
            fields = dict(part.strip().split("=", 1) for part in headers["authorization"].split(" ", 1)[1].split(","))
            key_id, date, region, service, _ = fields["Credential"].split("/")
            signed, signature = fields["SignedHeaders"].split(";"), fields["Signature"]
        except (KeyError, ValueError):
            return _aws_denied("IncompleteSignatureException", "Authorization header requires 'Credential', "
                                                               "'Signature' and 'SignedHeaders'.")
        key = self.aws.get(key_id)
        if key is None:
            return _aws_denied("UnrecognizedClientException", "The security token included in the request is "
                                                              "invalid.")
        if key.token is not None and headers.get("x-amz-security-token") != key.token:
            return _aws_denied("UnrecognizedClientException", "The security token included in the request is "
                                                              "invalid.")
        if key.expires is not None and time.time() >= key.expires:
            return _aws_denied("ExpiredTokenException", "The security token included in the request is expired")
        request = AWSRequest(method=method.decode(), url=f"http://{headers.get('host', '')}{url.decode()}",
                             data=body, headers={name: headers[name] for name in signed if name in headers})
        request.context["timestamp"] = headers.get("x-amz-date", "")
        auth = SigV4Auth(Credentials(key_id, key.secret, key.token), service, region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if expected != signature or date != request.context["timestamp"][:8]:
            return _aws_denied("InvalidSignatureException", "The request signature we calculated does not "
                                                            "match the signature you provided.")
        return None

    def check_bearer(self, headers: dict[str, str], *, google: bool) -> Answer | None:
        """None when the call carries a live bearer token issued here; else the provider's 401."""
        token = headers.get("authorization", "").removeprefix("Bearer ")
        source, expires = self.bearers.get(token, ("", 0.0))
        if source == ("google" if google else "entra") and time.time() < expires:
            return None
        if google:
            return 401, _json({"error": {"code": 401, "status": "UNAUTHENTICATED", "message": (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.")}}), _JSON
        return 401, _json({"error": {"code": "401", "message": (
            "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired.")}}), _JSON

    def signed_by(self, headers: dict[str, str]) -> str | None:
        """The access key id or bearer token a call was authorized with (for the journal)."""
        value = headers.get("authorization", "")
        if value.startswith("AWS4-HMAC-SHA256 Credential="):
            return value.split("=", 1)[1].split("/", 1)[0]
        return value.removeprefix("Bearer ") or None


_TEXT = {"content-type": "text/plain"}
_JSON = {"content-type": "application/json"}
_XML = {"content-type": "text/xml"}

_STS_RESPONSE = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:llm-edge:provider-bedrock</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>{role}/{session}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{key}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""


def _sts_error(status: int, code: str, message: str) -> Answer:
    return status, (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>").encode(), _XML


def _aws_denied(kind: str, message: str) -> Answer:
    return 403, _json({"message": message}), {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/"}


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verified_jwt(assertion: str, keys: dict[str, bytes]) -> dict[str, Any] | None:
    """The claims of an RS256 JWT signed by a registered service account's key, else None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        head, payload, signature = assertion.split(".")
        claims: dict[str, Any] = json.loads(_b64(payload))
        public = serialization.load_pem_public_key(keys[str(claims.get("iss"))])
        if not isinstance(public, rsa.RSAPublicKey):
            return None
        public.verify(_b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, KeyError, InvalidSignature):
        return None
    return claims
