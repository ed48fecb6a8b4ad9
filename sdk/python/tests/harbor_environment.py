"""Checks of repobox.harbor.RepoboxEnvironment's calls that Harbor's oracle trial does not
make: streamed output, a non-root user, a command past its timeout, file and directory
transfer both ways (modes, nested directories, binary bytes).

    python harbor_environment.py URL      (scripts/harbor-test.sh runs it; Python 3.12+
                                           with Harbor and this SDK installed)

Not a pytest module (the SDK's suite runs on Python 3.9+ without Harbor). Exits non-zero
on the first failed check.
"""

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from harbor.models.task.config import EnvironmentConfig, NetworkMode, NetworkPolicy
from harbor.models.trial.paths import TrialPaths

from repobox.harbor import RepoboxEnvironment

TASK = Path(__file__).resolve().parent / "harbor_task"


async def main(url: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        env = RepoboxEnvironment(
            environment_dir=TASK / "environment",
            environment_name="harbor_task",
            session_id="harbor_task__check__env",
            trial_paths=TrialPaths(scratch_path / "trial"),
            task_env_config=EnvironmentConfig(),
            network_policy=NetworkPolicy(network_mode=NetworkMode.NO_NETWORK),
            url=url,
        )
        await env.start(force_build=False)
        try:
            await checks(env, scratch_path)
        finally:
            await env.stop(delete=True)
    print("harbor_environment: ok")


async def checks(env: RepoboxEnvironment, scratch: Path) -> None:
    # The Dockerfile's WORKDIR is the default directory; cwd and env are passed.
    result = await env.exec("pwd; cat built.txt")
    assert result.return_code == 0 and result.stdout == "/app\nbuilt by repobox\n", result
    result = await env.exec('echo "$GREETING in $(pwd)" >&2; exit 3', cwd="/tmp", env={"GREETING": "hi"})
    assert result.return_code == 3 and result.stderr == "hi in /tmp\n" and result.stdout is None, result

    # A user other than root.
    result = await env.exec("id -un; touch /root/mine", user="nobody")
    assert result.stdout == "nobody\n" and result.return_code != 0, result
    with env.with_default_user("nobody"):
        assert (await env.exec("id -un")).stdout == "nobody\n"
    assert (await env.exec("id -un")).stdout == "root\n"

    # Streamed output reaches the callback and the result.
    chunks: list[tuple[str, str]] = []

    async def collect(text: str, stream: str) -> None:
        chunks.append((stream, text))

    with env.scoped_output_callback(collect):
        result = await env.exec("echo out; echo err >&2; exit 5")
    assert result.return_code == 5 and result.stdout == "out\n" and result.stderr == "err\n", result
    assert ("stdout", "out\n") in chunks and ("stderr", "err\n") in chunks, chunks

    # Past its timeout: RuntimeError, as with Harbor's Docker environment.
    try:
        await env.exec("sleep 30", timeout_sec=1)
    except RuntimeError as err:
        assert "timed out" in str(err), err
    else:
        raise AssertionError("a command past its timeout did not raise")

    # Files and directories, both ways.
    source = scratch / "up"
    (source / "nested" / "deeper").mkdir(parents=True)
    (source / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (source / "run.sh").chmod(0o755)
    payload = bytes(range(256)) * 100
    (source / "nested" / "deeper" / "data.bin").write_bytes(payload)
    await env.upload_dir(source, "/srv/up")
    assert (await env.exec("/srv/up/run.sh")).stdout == "ran\n"
    assert (await env.exec("stat -c %U /srv/up/run.sh")).stdout == "root\n"
    await env.upload_file(source / "run.sh", "/srv/single/copy.sh")
    await env.download_file("/srv/single/copy.sh", scratch / "down" / "copy.sh")
    assert (scratch / "down" / "copy.sh").read_text() == "#!/bin/sh\necho ran\n"

    await env.exec("echo made > /srv/up/nested/made.txt")
    target = scratch / "back"
    target.mkdir()
    (target / "kept.txt").write_text("kept")
    await env.download_dir("/srv/up", target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "kept.txt",
        "nested/deeper/data.bin",
        "nested/made.txt",
        "run.sh",
    ]
    assert (target / "nested" / "deeper" / "data.bin").read_bytes() == payload
    assert os.access(target / "run.sh", os.X_OK)
    assert await env.is_dir("/srv/up/nested") and await env.is_file("/srv/up/run.sh")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
