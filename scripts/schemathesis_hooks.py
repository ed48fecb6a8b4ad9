"""Schemathesis hooks of scripts/schemathesis.sh: in the stateful phase, a create names
the repository the script serves (SCHEMATHESIS_REPO_URL), so that it succeeds and the
phase follows the document's links to every route behind a container's id (with any
other URL the create is a correct 400: ALLOWED_GIT_HOSTS, which no schema can say).
The other phases keep the generated URL: a sandbox per generated create would only
take the machine's time, and MAX_CONTAINERS, before the stateful phase starts.

What would end the sandbox before the scenario reaches its routes is left out too: a
lifetime of a second (it is 20 s), a memory limit of a few MiB, an image to pull (from
the internet), a snapshot or built image that does not exist."""

import os

import schemathesis
from schemathesis.generation.meta import TestPhase

REPO_URL = os.environ["SCHEMATHESIS_REPO_URL"]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.meta is None or case.meta.phase.name != TestPhase.STATEFUL:
        return
    body = case.body
    if not isinstance(body, dict):
        return
    route = f"{case.operation.method.upper()} {case.operation.path}"
    if route == "POST /api/v1/containers":
        body["repo_url"] = REPO_URL
        for field in ("image", "image_id", "snapshot_id", "resources"):
            body.pop(field, None)
        # Long enough for a scenario; short enough that the reaper makes room under
        # MAX_CONTAINERS for the next ones.
        body["max_runtime_secs"] = 20
    elif route == "POST /api/v1/jobs":
        # One entry, and a short deadline: a job of many would hold the machine.
        body["repos"] = [{"repo_url": REPO_URL}]
        for field in ("image", "image_id", "resources"):
            body.pop(field, None)
        body["timeout_secs"] = 10
