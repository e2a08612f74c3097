"""The generated project's Kubernetes manifests: built, validated and read like a cluster would.

No `kustomize` binary reaches the package index (pykustomize needs Python 3.14 and one
platform; the `kustomize` package is something else), so `build` is a small kustomize of
its own for what the project's kustomizations use: resources (files and directories),
namespace, images, replicas and strategic-merge patches. Anything else in a
kustomization.yaml fails loudly rather than being skipped; `kubectl kustomize`, where it
is installed, must build the same (tests/test_bake.py). Each built object is validated
against the Kubernetes JSON schemas `kubernetes-validate` ships (offline, strict: no
unknown field).
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
# Kinds without a namespace among those a project may hold.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass", "PriorityClass"}
# The merge key of a list in a strategic-merge patch (Kubernetes' patchMergeKey), by field
# name; every other list is replaced whole, as kustomize does for them.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet"}


class UnsupportedError(Exception):
    """A kustomization uses something this small kustomize does not do."""


def load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def build(directory: Path) -> list[Manifest]:
    """What `kustomize build directory` prints, as objects (in the order of the files)."""
    (kustomization,) = load_all(directory / "kustomization.yaml")
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise UnsupportedError(f"{directory}: {sorted(unknown)} (extend tests/manifests.py)")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects.extend(build(path) if path.is_dir() else load_all(path))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedError(f"{directory}: patch {patch} (only `path:` patches)")
        for change in load_all(directory / patch["path"]):
            target = find(objects, change["kind"], change["metadata"]["name"])
            merged = merge(target, change)
            target.clear()
            target.update(merged)
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for container in containers(objects):
            set_image(container, image)
    for replicas in kustomization.get("replicas", []):
        scalable = [o for o in objects if o["kind"] in SCALABLE]
        find(scalable, None, replicas["name"])["spec"]["replicas"] = replicas["count"]
    return objects


def find(objects: Iterable[Manifest], kind: str | None, name: str) -> Manifest:
    found = [
        o for o in objects if (kind is None or o["kind"] == kind) and o["metadata"]["name"] == name
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} objects {kind or '*'}/{name}")
    return found[0]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic-merge patch: maps merged key by key (null deletes), lists as their field says."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key.startswith("$"):
                raise UnsupportedError(f"patch directive {key}")
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            same = [i for i, old in enumerate(out) if old.get(key) == item.get(key)]
            if same:
                out[same[0]] = merge(out[same[0]], item, "")
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def pod_spec(obj: Manifest) -> Manifest | None:
    if obj["kind"] in WORKLOADS:
        spec: Manifest = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(objects: Iterable[Manifest]) -> Iterator[Manifest]:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def image_name(image: str) -> str:
    """`registry/name:tag@digest` without its tag and digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def set_image(container: Manifest, image: Manifest) -> None:
    old = container["image"]
    if image_name(old) != image["name"]:
        return
    new = image.get("newName", image["name"])
    if "digest" in image:
        container["image"] = f"{new}@{image['digest']}"
    elif "newTag" in image:
        container["image"] = f"{new}:{image['newTag']}"
    else:
        container["image"] = new + old[len(image_name(old)) :]


def key(obj: Manifest) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def schema_problems(objects: Iterable[Manifest], versions: Iterable[str]) -> list[str]:
    """Every object against the strict schema of each Kubernetes version."""
    from kubernetes_validate import utils

    problems: list[str] = []
    for version in versions:
        for obj in objects:
            try:
                utils.validate(obj, version, strict=True)
            except utils.ValidationError as error:
                path = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"{version} {'/'.join(key(obj))}: {path}: {error.message}")
            except utils.SchemaNotFoundError as error:
                problems.append(f"{version} {'/'.join(key(obj))}: {error.message}")
    return problems


def dockerfile_command(dockerfile: str) -> tuple[list[str], str]:
    """The server command the image's CMD execs, and the uid its USER sets."""
    user = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER "))
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    shell = yaml.safe_load(cmd_line.removeprefix("CMD "))[-1]
    return shlex.split(shell.rpartition("exec ")[2]), user.split(":")[0]
