"""deploy/k8s rendered as Kubernetes would take it: with kubectl kustomize where there is one, else a small renderer
(shared by tests/test_deploy.py, which validates the manifests, and tests/deploy, which runs them under Docker)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.processes import ROOT

K8S = ROOT / "deploy" / "k8s"


def kustomize(path: Path) -> list[dict]:
    """Render a kustomization with kubectl when there is one, else with the small renderer below."""
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120)
        if out.returncode == 0:
            return [d for d in yaml.safe_load_all(out.stdout) if d]
    return render(path)


def render(path: Path) -> list[dict]:
    """Enough of kustomize for our files: resources, generators, images, namespace, strategic-merge patches."""
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in k.get("resources", []):
        target = path / res
        docs += render(target) if target.is_dir() else [d for d in yaml.safe_load_all(target.read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": dict(x.split("=", 1) for x in gen["literals"])})
    for gen in k.get("secretGenerator", []):
        data = {Path(f).name: base64.b64encode((path / f).read_bytes()).decode() for f in gen["files"]}
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": gen["name"]}, "data": data})
    for patch in k.get("patches", []):
        for p in yaml.safe_load_all((path / patch["path"]).read_text()):
            match = [d for d in docs if d["kind"] == p["kind"] and d["metadata"]["name"] == p["metadata"]["name"]]
            assert match, f"patch for a missing {p['kind']}/{p['metadata']['name']}"
            merge(match[0], p)
    for d in docs:
        if k.get("namespace") and d["kind"] != "Namespace":
            d["metadata"]["namespace"] = k["namespace"]
        for image in k.get("images", []):
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


def merge(base, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and all(isinstance(v, dict) and "name" in v for v in value):
            for item in value:
                same = [b for b in base[key] if b.get("name") == item["name"]]
                merge(same[0], item) if same else base[key].append(item)
        else:
            base[key] = value
