"""A loopback S3 server for tests: moto's ``moto_server`` on 127.0.0.1, with the environment that points
boto3 and s3fs (in this process and in every subprocess it starts) at it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


class S3Server:
    """A running loopback S3 server."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.environment = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        """What points boto3 and s3fs (and the processes that inherit it) at this server."""

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name unless given) and return its URL, ``s3://<bucket>``."""
        import boto3

        name = name or f"test-{uuid.uuid4().hex[:16]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def s3_server(timeout_s: float = 60, set_environment: bool = True) -> Iterator[S3Server]:
    """Run ``moto_server`` on 127.0.0.1 and a free port; while it runs (with ``set_environment``), os.environ
    has its ``environment``: ``AWS_ENDPOINT_URL`` (read by botocore, so by boto3 and by s3fs through
    aiobotocore) and test credentials."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(endpoint, timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"moto_server did not answer on {endpoint}:\n{log.read().decode()[-4000:]}")
                    time.sleep(0.1)
            running = S3Server(endpoint)
            saved = {name: os.environ.get(name) for name in running.environment}
            if set_environment:
                os.environ.update(running.environment)
            try:
                yield running
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
