"""Rendered Kubernetes manifests run under Docker: one container per workload, as the kubelet would configure it.

Everything comes from the manifests: the pod's args, its environment (envFrom ConfigMaps, env values), its
volumes (Secrets written out as files with the Secret's defaultMode, group-owned by fsGroup as the kubelet does;
emptyDirs and volume claims as host folders), its user, group and fsGroup, its container securityContext, its
resource limits and its readiness probe (as Docker's healthcheck). Each container joins one user-defined network
under its workload's name and the names of the Services that select it, so `tcp://layer1:5710` resolves as in the
cluster. What Docker cannot express (a Service port mapped to another target port, valueFrom, Secret items) is
refused with an assertion, so the test never silently runs something other than the manifests.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

WORKLOADS = ("Deployment", "StatefulSet")


@dataclass
class Pod:
    """One workload's single container, ready for `docker run`."""

    name: str  # the workload's name: the container's name on the network
    aliases: list[str]  # the Services that select it
    args: list[str]  # after the image's entry point (ffstream)
    env: dict[str, str]
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)  # (host path, container path, read-only)
    options: list[str] = field(default_factory=list)  # user, groups, capabilities, limits, healthcheck

    def run_argv(self, image: str, network: str, prefix: str) -> list[str]:
        argv = ["docker", "run", "-d", "--name", f"{prefix}{self.name}", "--hostname", self.name, "--network", network,
                *[x for alias in (self.name, *self.aliases) for x in ("--network-alias", alias)], *self.options]
        for key, value in sorted(self.env.items()):
            argv += ["-e", f"{key}={value}"]
        for host, target, read_only in self.mounts:
            argv += ["-v", f"{host}:{target}{':ro' if read_only else ''}"]
        return [*argv, image, *self.args]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity ("500m", "2") as docker's --cpus."""
    q = str(quantity)
    return str(int(q[:-1]) / 1000) if q.endswith("m") else q


def memory(quantity: str) -> str:
    """A Kubernetes memory quantity ("512Mi", "4Gi") as docker's --memory."""
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    q = str(quantity)
    return q[:-2] + units[q[-2:]] if q[-2:] in units else q


def pods(docs: list[dict], scratch: Path) -> list[Pod]:
    """Every workload of the rendered manifests as a Pod; host folders for its volumes are made under scratch."""
    config_maps, secrets, services = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret"), by_kind(docs, "Service")
    result = []
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        name = doc["metadata"]["name"]
        spec = doc["spec"]["template"]["spec"]
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        (container,) = spec["containers"]  # one container per worker
        aliases = []
        for svc_name, svc in services.items():
            selector = svc["spec"].get("selector", {})
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                for port in svc["spec"]["ports"]:
                    assert port.get("targetPort", port["port"]) == port["port"], f"Service {svc_name} remaps {port}: not under Docker"
                if svc_name != name:
                    aliases.append(svc_name)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"{name}: envFrom {source}"
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        for var in container.get("env", []):
            assert "value" in var, f"{name}: env {var['name']} has no plain value"
            env[var["name"]] = var["value"]
        pod = Pod(name, aliases, [*container.get("command", [])[1:], *container.get("args", [])], env)
        if container.get("command"):
            pod.options += ["--entrypoint", container["command"][0]]

        ctx = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        fs_group = spec.get("securityContext", {}).get("fsGroup")
        if "runAsUser" in ctx:
            pod.options += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
        if fs_group is not None:
            pod.options += ["--group-add", str(fs_group)]
        if ctx.get("readOnlyRootFilesystem"):
            pod.options.append("--read-only")
        if ctx.get("allowPrivilegeEscalation") is False:
            pod.options += ["--security-opt", "no-new-privileges"]
        for cap in ctx.get("capabilities", {}).get("drop", []):
            pod.options += ["--cap-drop", cap]
        limits = container.get("resources", {}).get("limits", {})
        if "cpu" in limits:
            pod.options += ["--cpus", cpus(limits["cpu"])]
        if "memory" in limits:
            pod.options += ["--memory", memory(limits["memory"])]
        probe = container.get("readinessProbe", {})
        if "exec" in probe:  # the exec form: Docker runs it as the container's healthcheck, readiness as "healthy"
            # `exec` and a KILL at the timeout, as the kubelet ends an overrunning probe (Docker leaves it running).
            timeout_s = probe.get("timeoutSeconds", 1)
            pod.options += ["--health-cmd", f"exec timeout -s KILL {timeout_s} {' '.join(probe['exec']['command'])}",
                            "--health-interval", f"{probe.get('periodSeconds', 10)}s",
                            "--health-timeout", f"{probe.get('timeoutSeconds', 1)}s", "--health-retries", str(probe.get("failureThreshold", 3))]

        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        for mount in container.get("volumeMounts", []):
            host = scratch / name / mount["name"]
            host.mkdir(parents=True)
            volume = volumes.get(mount["name"], {})
            if "secret" in volume:
                write_secret(secrets[volume["secret"]["secretName"]], volume["secret"], host, fs_group)
            elif "projected" in volume:  # several Secrets in one folder (one per CURVE role), defaultMode for all
                projected = volume["projected"]
                for source in projected["sources"]:
                    assert set(source) == {"secret"}, f"{name}: projected source {source} is not reproduced here"
                    write_secret(secrets[source["secret"]["name"]], {**source["secret"], "defaultMode": projected.get("defaultMode", 0o644)},
                                 host, fs_group)
            elif "emptyDir" in volume:
                host.chmod(0o777)  # the kubelet's emptyDir
            else:
                assert mount["name"] in claims, f"{name}: volume {mount['name']} is neither a Secret, an emptyDir nor a claim"
                os.chown(host, 0, fs_group if fs_group is not None else 0)  # a fresh claim, handed to fsGroup
                host.chmod(0o2775)
            pod.mounts.append((host, mount["mountPath"], bool(mount.get("readOnly"))))
        result.append(pod)
    return result


def write_secret(secret: dict, volume: dict, folder: Path, fs_group: int | None) -> None:
    """The Secret's files as the kubelet writes them: defaultMode, owned by root and group fsGroup."""
    assert "items" not in volume, "Secret items are not reproduced here"
    mode = volume.get("defaultMode", 0o644)
    for key, value in secret.get("data", {}).items():
        path = folder / key
        path.write_bytes(base64.b64decode(value))
        os.chown(path, 0, fs_group if fs_group is not None else 0)
        path.chmod(mode)
    folder.chmod(0o755)
