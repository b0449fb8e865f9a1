"""Real nginx running the shipped deploy/nginx/otf-proxy.conf.template on 127.0.0.1.

The template is rendered the way the official nginx image renders /etc/nginx/templates/*.template
(envsubst with the named variables only, so nginx's own `$host`-style variables stay), into a
conf.d directory that a minimal main configuration includes in its http{} context, exactly where
the image's nginx.conf includes /etc/nginx/conf.d/*.conf. The test runs the shipped file: nothing
of its text is copied here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.service import free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "otf-proxy.conf.template"
VARIABLES = ("KEYSVC_UPSTREAM", "OTFD_UPSTREAM", "OTF_PROXY_LISTEN", "OTF_SERVER_NAME")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render(values: dict[str, str], conf_d: Path) -> Path:
    """envsubst '$KEYSVC_UPSTREAM …' < template > conf.d/otf-proxy.conf."""
    conf_d.mkdir(parents=True, exist_ok=True)
    output = conf_d / TEMPLATE.name.removesuffix(".template")
    rendered = subprocess.run(
        ["envsubst", " ".join(f"${name}" for name in VARIABLES)],
        input=TEMPLATE.read_bytes(),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values},
        capture_output=True,
        check=True,
    )
    output.write_bytes(rendered.stdout)
    return output


def main_config(work: Path, conf_d: Path) -> Path:
    """The http{} context the template goes into, with every writable path under `work`."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach `work` (mode 0700)
    path = work / "nginx.conf"
    path.write_text(
        f"{user}worker_processes 1;\n"
        f"pid {work}/nginx.pid;\n"
        f"error_log {work}/error.log info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {work}/access.log;\n"
        f"    client_body_temp_path {work}/client_body;\n"
        f"    proxy_temp_path {work}/proxy;\n"
        f"    fastcgi_temp_path {work}/fastcgi;\n"
        f"    uwsgi_temp_path {work}/uwsgi;\n"
        f"    scgi_temp_path {work}/scgi;\n"
        f"    include {conf_d}/*.conf;\n"
        "}\n"
    )
    return path


@contextlib.contextmanager
def otf_proxy(
    work: Path, keysvc: str, otfd: str, port: int | None = None, server_name: str = "otf.example.com"
) -> Iterator[str]:
    """nginx with the shipped template in front of `keysvc` and `otfd` (host:port each);
    yields its URL. `port` defaults to a free one."""
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf_d = work / "conf.d"
    render(
        {
            "KEYSVC_UPSTREAM": keysvc,
            "OTFD_UPSTREAM": otfd,
            "OTF_PROXY_LISTEN": f"127.0.0.1:{port}",
            "OTF_SERVER_NAME": server_name,
        },
        conf_d,
    )
    config = main_config(work, conf_d)
    command = [NGINX, "-e", str(work / "error.log"), "-p", str(work), "-c", str(config)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)  # fast shutdown: master and workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
            process.wait()
        if process.stderr:
            process.stderr.close()
