"""Settings of the Vertex AI adapter (Gemini models on Google Cloud): the project and location whose
endpoint serves the calls, from the variables Google's own SDKs read when the entry leaves them out. Calls
are authenticated with Google application default credentials (`credentials.py`, the optional extra
`llm-edge[google]`), never with an API key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from services.providers.extras import missing
from shared.config import ProviderSettings

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class VertexSettings(ProviderSettings, frozen=True, kw_only=True, tag="vertex"):
    project: str | None = None
    location: str = "global"  # or a region ("us-central1"), whose endpoint is `{location}-aiplatform…`
    # The OAuth scopes asked of the application default credentials.
    scopes: tuple[str, ...] = (CLOUD_PLATFORM,)

    env: ClassVar[Mapping[str, str]] = {"GOOGLE_CLOUD_PROJECT": "project", "GOOGLE_CLOUD_LOCATION": "location"}

    def problem(self) -> str | None:
        if not self.project:
            return "project: Vertex AI needs the Google Cloud project (or GOOGLE_CLOUD_PROJECT)"
        if self.api_key is not None:
            return ("api_key: Vertex AI authenticates with Google application default credentials, not an API "
                    "key (a Gemini API key belongs to the `gemini` adapter)")
        if problem := missing("google.auth", "google", "Vertex AI authenticates with application default "
                                                       "credentials"):
            return f"project: {problem}"
        return None
