"""The all-in-one server: control API and media node in one process (`make run`, the VPS default).

`lambda_api` and `media_node` never import each other; this module is the only place that joins them.
"""

from __future__ import annotations

import logging
import secrets
import sys

from call_state.settings import Settings, startup_settings

log = logging.getLogger("all_in_one")


def main() -> None:
    settings = startup_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    if not settings.stream_token_secret:
        # Both planes share this process, so a per-process secret is safe here (never for split deployments).
        from dataclasses import replace

        settings = replace(settings, stream_token_secret=secrets.token_urlsafe(32))
        log.warning("STREAM_TOKEN_SECRET not set: using a random one for this process (all-in-one only)")
    serve(settings)


def serve(settings: Settings) -> None:
    raise NotImplementedError("wired up when lambda_api and media_node land")


if __name__ == "__main__":
    main()
