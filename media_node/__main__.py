"""`python -m media_node`: the standalone media node (no control plane), as run on the AWS media nodes."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from call_state.settings import startup_settings
from call_state.store import open_store_or_exit


def main() -> None:
    settings = startup_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    from media_node.node import MediaNode, tune_gc
    from media_node.ws_server import serve_media_node

    store = open_store_or_exit(settings.call_store, time.time(), dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                               region=settings.aws_region)  # fmt: skip
    node = MediaNode(settings, store)
    tune_gc()
    try:
        import uvloop
    except ImportError:  # not on PyPI for every platform: the stdlib loop works, a little slower
        asyncio.run(serve_media_node(node, settings))
    else:
        uvloop.run(serve_media_node(node, settings))


if __name__ == "__main__":
    main()
