"""`python -m media_node`: the standalone media node (no control plane), as run on the EC2 node."""

from __future__ import annotations

import logging
import sys
import time

from call_state.settings import startup_settings
from call_state.store import open_store_or_exit


def main() -> None:
    settings = startup_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    from media_node.app import create_media_app
    from media_node.server import run

    store = open_store_or_exit(settings.call_store, time.time(), dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                               region=settings.aws_region)  # fmt: skip
    app = create_media_app(settings, store)
    run(app, settings, app.state.node)


if __name__ == "__main__":
    main()
