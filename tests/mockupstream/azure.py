"""Azure OpenAI as the mock speaks it: OpenAI's bodies and stream at Azure's routes, with Azure's additions
(the deployment as the model, the prompt-filter chunk that opens a stream) and Azure's error bodies.

Routes and bodies after learn.microsoft.com/azure/ai-foundry/openai/reference (chat completions) and
.../concepts/content-filter (the `content_filter` 400 and its `innererror`).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote

from tests.mockupstream.formats import (
    Dialect,
    Plan,
    Stream,
    encode,
    openai_body,
    openai_plan,
    openai_stream,
)

_DEPLOYMENTS = b"/openai/deployments/"

_SAFE = {"filtered": False, "severity": "safe"}
_FILTER_RESULTS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def _plan(url: bytes, body: bytes) -> Plan:
    plan = openai_plan(url, body)
    path = url.split(b"?", 1)[0]
    if path.startswith(_DEPLOYMENTS):  # the deployment in the path is the model; the body's is ignored
        deployment = path[len(_DEPLOYMENTS) :].split(b"/", 1)[0]
        plan = dataclasses.replace(plan, model=unquote(deployment.decode()))
    return plan


def _stream(p: Plan, seq: int, chunks: int) -> Stream:
    head, content, tail = openai_stream(p, seq, chunks)
    # Azure opens every stream with a chunk that has no choices, no id and the prompt's filter results.
    prompt = {"prompt_index": 0, "content_filter_results": _FILTER_RESULTS}
    opening = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [prompt],
    }
    return [b"data: " + encode(opening) + b"\n\n", *head], content, tail


# status -> (code, message), as Azure OpenAI returns them.
_ERRORS = {
    400: (
        "content_filter",
        (
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry."
        ),
    ),
    401: (
        "401",
        (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
            "valid key for an active subscription and use a correct regional API endpoint for your "
            "resource."
        ),
    ),
    404: (
        "DeploymentNotFound",
        (
            "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again."
        ),
    ),
    429: (
        "429",
        (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 1 second."
        ),
    ),
    500: ("InternalServerError", "The server had an error while processing your request."),
}


def error(status: int, message: str | None, seq: int) -> bytes:
    code, text = _ERRORS.get(status, (str(status), "The service is temporarily unavailable."))
    detail: dict[str, object] = {"code": code, "message": message or text}
    if code == "content_filter":
        detail |= {
            "param": "prompt",
            "type": None,
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": _FILTER_RESULTS
                | {"violence": {"filtered": True, "severity": "medium"}},
            },
        }
    return encode({"error": detail})


DIALECT = Dialect(_plan, openai_body, _stream, error)


def matches(path: bytes) -> bool:
    return (path.startswith(_DEPLOYMENTS) and path.endswith(b"/chat/completions")) or (
        path == b"/openai/v1/chat/completions"
    )
