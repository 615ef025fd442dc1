"""The real Python server SDK (UnleashClient, which evaluates with Unleash's own engine) in
streaming or polling mode against a running flagpost. Started by the integration tests in
`sdk.rs`, which read what this prints, one JSON object per line (as `stream.mjs`):
  {"phase":"ready", ...}    synchronised: the number of features and FLAG's state
  {"phase":"changed", ...}  FLAG became EXPECT (after the test changed it)
The script fails if the SDK logs an error (a refused message, a failed stream), or times out.
"""

import json
import logging
import os
import sys
import tempfile
import time

from UnleashClient import UnleashClient
from UnleashClient.utils import InstanceAllowType


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"missing {name}")
    return value


class Collect(logging.Handler):
    """Every warning and error the SDK logs."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.seen = []

    def emit(self, record):
        self.seen.append(f"{record.levelname}: {record.getMessage()}")


def wait(what, check, seconds, collected):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            print(json.dumps({"phase": "failed", "what": what, "warnings": collected.seen}), flush=True)
            sys.exit(1)
        time.sleep(0.02)


def main():
    mode = env("MODE")
    flag = env("FLAG")
    expect = env("EXPECT") == "true"
    collected = Collect()
    logging.getLogger("UnleashClient").addHandler(collected)
    logging.getLogger("UnleashClient").setLevel(logging.WARNING)
    client = UnleashClient(
        url=f"{env('FLAGPOST_URL')}/api",
        app_name=f"sdk-python-{mode}-test",
        custom_headers={"Authorization": env("CLIENT_TOKEN")},
        refresh_interval=1,
        disable_metrics=True,
        disable_registration=True,
        cache_directory=tempfile.mkdtemp(prefix="flagpost-sdk-"),
        experimental_mode={"type": mode},
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
    client.initialize_client()

    def count():
        return len(client.feature_definitions())

    wait("synchronised", lambda: count() > 0, 15, collected)
    print(json.dumps({"phase": "ready", "features": count(), "enabled": client.is_enabled(flag),
                      "warnings": collected.seen}), flush=True)
    started = time.monotonic()
    wait(f"{flag} to become {expect}", lambda: client.is_enabled(flag) == expect, 15, collected)
    errors = [w for w in collected.seen if w.startswith(("ERROR", "CRITICAL"))]
    print(json.dumps({"phase": "changed", "features": count(),
                      "ms": int((time.monotonic() - started) * 1000),
                      "warnings": collected.seen, "fellBack": errors}), flush=True)
    client.destroy()
    sys.exit(0 if not errors else 1)


if __name__ == "__main__":
    main()
