"""Running a container of deploy/kubernetes/deployment.yaml for real, as its pod runs it.

Each container runs in a mount namespace of its own, chrooted into a root that is laid out the
way the container sees its filesystem: the host's /usr (the image is Debian, like this host),
the volumes at their `mountPath`s (read-only where the manifest says), and the root itself
read-only when `readOnlyRootFilesystem` says so. The process gets exactly the manifest's
identity and privileges, taken from the manifest at test time: `runAsUser`/`runAsGroup` (the
container's, else the pod's), the capability set a container runtime derives from
`capabilities` (drop/add over the runtime's default set) as its bounding, permitted and
effective sets, and no_new_privs for `allowPrivilegeEscalation: false`.

Volumes are host directories: Secret and ConfigMap volumes laid out as the kubelet writes them
(a tmpfs-like 1777 directory, the files in a timestamped directory with `defaultMode`, owned by
root, reached through `..data` and one symlink per key), emptyDirs as empty 0777 directories.
Needs root (CI runs as root): only root can chown, chroot and mount.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

RUNTIME_DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)
"""What containerd, CRI-O and Docker grant a container whose securityContext drops nothing."""


def atomic_writer_volume(root: Path, files: Mapping[str, bytes], mode: int) -> Path:
    """A directory as the kubelet's AtomicWriter leaves a Secret or ConfigMap volume: the
    files (owned by root, `mode`) in `..<timestamp>/`, `..data` pointing at it, and a symlink
    per file through `..data`."""
    root.mkdir(parents=True)
    root.chmod(0o1777)
    stamp = ".." + datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S.%f000")
    (root / stamp).mkdir(mode=0o755)
    for name, data in files.items():
        path = root / stamp / name
        path.write_bytes(data)
        os.chown(path, 0, 0)
        path.chmod(mode)
        (root / name).symlink_to(Path("..data") / name)
    (root / "..data").symlink_to(stamp)
    return root


def empty_dir(root: Path) -> Path:
    """An emptyDir volume as a container first sees it: empty, 0777, owned by root."""
    root.mkdir(parents=True)
    root.chmod(0o777)
    return root


def _identity(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    pod_context = pod.get("securityContext", {})
    context = container.get("securityContext", {})
    uid = context.get("runAsUser", pod_context.get("runAsUser", 0))
    gid = context.get("runAsGroup", pod_context.get("runAsGroup", 0))
    capabilities = context.get("capabilities", {})
    dropped = {c.upper() for c in capabilities.get("drop", [])}
    kept = set() if "ALL" in dropped else set(RUNTIME_DEFAULT_CAPS) - dropped
    kept |= {c.upper() for c in capabilities.get("add", [])}
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(kept))])
    args = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", f"--bounding-set={bounding}",
            "--inh-caps=-all"]
    groups = pod_context.get("supplementalGroups")
    if groups:
        args[2] = "--groups=" + ",".join(str(g) for g in groups)
    if context.get("allowPrivilegeEscalation") is False:
        args.append("--no-new-privs")
    return args


def _sandbox_script(
    pod: dict[str, Any], container: dict[str, Any], volumes: Mapping[str, Path],
    argv: list[str], new_root: Path,
) -> str:
    r = shlex.quote(str(new_root))
    lines = ["set -e", f"mount -t tmpfs -o mode=0755 pod-root {r}"]

    def bind(source: str | Path, target: str, read_only: bool) -> None:
        where = shlex.quote(f"{new_root}{target}")
        kind = "-d" if Path(source).is_dir() else "-f"
        lines.append(f"[ {kind} {where} ] || {'mkdir -p' if kind == '-d' else 'touch'} {where}")
        lines.append(f"mount --rbind {shlex.quote(str(source))} {where}")
        if read_only:
            lines.append(f"mount -o remount,bind,ro {where}")

    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            lines.append(f"ln -s {shlex.quote(os.readlink(host))} {r}/{top}")
        elif host.is_dir():
            bind(host, f"/{top}", True)
    bind("/usr", "/usr", True)
    lines.append(f"mkdir -p {r}/etc {r}/proc {r}/tmp")
    for name in ("passwd", "group", "nsswitch.conf", "ld.so.cache", "hosts"):
        if (Path("/etc") / name).exists():
            bind(f"/etc/{name}", f"/etc/{name}", True)
    bind("/dev", "/dev", False)
    lines.append(f"mount -t proc proc {r}/proc")
    mounts = sorted(container.get("volumeMounts", []), key=lambda m: m["mountPath"])
    for mount in mounts:
        bind(volumes[mount["name"]], mount["mountPath"], bool(mount.get("readOnly")))
    # The image's Python and keysvc: this interpreter, its virtualenv and this checkout, at
    # the same paths (their parents are created 0755 in the new root, as an image has them).
    # Bound after the volumes: a checkout under /tmp (a CI clone) would otherwise be hidden by
    # the pod's /tmp volume. Shortest path first, so a virtualenv inside the checkout stays.
    for path in sorted({Path(sys.base_prefix), Path(sys.base_prefix).resolve(),
                        Path(sys.prefix), REPO}, key=lambda p: len(p.parts)):
        bind(path, str(path), True)
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        lines.append(f"mount -o remount,ro {r}")
    environment = [f"{e['name']}={e['value']}" for e in container.get("env", [])]
    command = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/",
               "PYTHONDONTWRITEBYTECODE=1", *environment,
               "setpriv", *_identity(pod, container), "--", *argv]
    lines.append(f"exec chroot {r} " + " ".join(shlex.quote(a) for a in command))
    return "\n".join(lines)


class PodContainer:
    """One container of the pod, ready to run with `volumes` (volume name → host directory)."""

    def __init__(
        self, pod: dict[str, Any], container: dict[str, Any], volumes: Mapping[str, Path]
    ) -> None:
        self.pod = pod
        self.container = container
        self.volumes = volumes

    def popen(self, argv: list[str], **kwargs: Any) -> tuple[subprocess.Popen[str], Path]:
        new_root = Path(tempfile.mkdtemp(prefix="keysvc-pod-root-"))
        script = _sandbox_script(self.pod, self.container, self.volumes, argv, new_root)
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
        )
        return process, new_root

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        process, new_root = self.popen(argv)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            new_root.rmdir()  # the mounts went with the namespace
        return subprocess.CompletedProcess(argv, process.returncode, out, err)
