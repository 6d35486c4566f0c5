"""Renders every overlay of deploy/k8s with `kubectl kustomize` and checks that the objects
fit together and fit engramd: the kinds are there, the Service, container, probe and
InferencePool ports are the ports the ConfigMap's model.yaml listens on, the termination grace
covers the drain, images are pinned and consistent, the model comes from a volume, the
ConfigMap's model.yaml passes `engramd --check-config`, and every metric name the endpoint
picker or the ServiceMonitor names is in a real scrape of a running engramd.

Environment: ENGRAMD (the engramd binary) and ENGRAM_REPO, set by ctest; ENGRAM_KUBECTL picks
a kubectl (default: the one on PATH; Debian's kubernetes-client, kustomize v2.0.3, and newer
ones with kustomize v5 both work). Exit code 77 (skipped) when there is no kubectl.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

REPO = os.environ.get("ENGRAM_REPO", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
KUBECTL = os.environ.get("ENGRAM_KUBECTL") or shutil.which("kubectl")
OVERLAYS = sorted(glob.glob(os.path.join(REPO, "deploy", "k8s", "overlays", "*")))
# engramd aborts what is left after the grace and shuts gRPC down in up to ~7 s; the
# systemd unit keeps 20 s of margin (docs/operations.md "Timeouts"), so does the pod.
DRAIN_MARGIN_S = 20

try:
    import yaml
except ImportError:  # a failure, not a skip: scripts/setup.sh installs python3-yaml
    yaml = None


def render(overlay):
    r = subprocess.run([KUBECTL, "kustomize", overlay], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed ({r.returncode}):\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def by_kind(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if not found:
        raise AssertionError(f"no {kind}{' ' + name if name else ''} in the rendered objects")
    return found[0] if name else found


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def metric_flags(args):
    """{flag: value} of the EPP's --*-metric flags (both --flag value and --flag=value)."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a.lstrip("-").split("=")[0].endswith("-metric"):
            if "=" in a:
                k, v = a.lstrip("-").split("=", 1)
            else:
                k, v = a.lstrip("-"), args[i + 1]
                i += 1
            out[k] = v
        i += 1
    return out


def flag(args, name):
    for i, a in enumerate(args):
        if a.lstrip("-") == name:
            return args[i + 1]
        if a.lstrip("-").startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def scrape_metric_names():
    """The metric family names of a real engramd's GET /metrics on its HTTP port."""
    import engramd_process
    if not os.environ.get("ENGRAMD"):
        os.environ["ENGRAMD"] = os.path.join(REPO, "build", "engramd")
    d = engramd_process.EngramdProcess()
    try:
        with urllib.request.urlopen(f"http://{d.http_address}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        code = d.stop()
        if code != 0:
            raise AssertionError(f"engramd exited with {code} after SIGTERM")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


class K8sManifests(unittest.TestCase):
    rendered = {}
    scraped = None

    @classmethod
    def setUpClass(cls):
        if yaml is None:
            raise AssertionError(f"{sys.executable} cannot import yaml: run scripts/setup.sh (python3-yaml)")
        for o in OVERLAYS:
            cls.rendered[os.path.basename(o)] = render(o)

    def each(self):
        self.assertEqual(sorted(self.rendered), ["cpu", "gpu"])
        return list(self.rendered.items())

    def parts(self, docs):
        dep = by_kind(docs, "Deployment", "engramd")
        pod = dep["spec"]["template"]["spec"]
        ctr = [c for c in pod["containers"] if c["name"] == "engramd"][0]
        cms = by_kind(docs, "ConfigMap")
        cfg_vol = [v for v in pod["volumes"] if "configMap" in v][0]
        cm = [c for c in cms if c["metadata"]["name"] == cfg_vol["configMap"]["name"]]
        self.assertEqual(len(cm), 1, f"the config volume names {cfg_vol['configMap']['name']}, not a ConfigMap here")
        model = yaml.safe_load(cm[0]["data"]["model.yaml"])
        return dep, pod, ctr, model

    def test_every_kind_is_there(self):
        want = {("Deployment", "engramd"), ("Deployment", "engramd-epp"), ("Service", "engramd"),
                ("Service", "engramd-epp"), ("PodDisruptionBudget", "engramd"),
                ("Secret", "engramd-api-keys"), ("ServiceMonitor", "engramd"),
                ("InferencePool", "engramd"), ("ServiceAccount", "engramd-epp"),
                ("Role", "engramd-epp"), ("RoleBinding", "engramd-epp"), ("HTTPRoute", "engramd")}
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                have = {(d["kind"], d["metadata"]["name"]) for d in docs}
                self.assertEqual(want - have, set())
                self.assertEqual(len([d for d in docs if d["kind"] == "ConfigMap"]), 1)
                self.assertEqual(by_kind(docs, "ServiceMonitor")[0]["apiVersion"], "monitoring.coreos.com/v1")
                self.assertEqual(by_kind(docs, "InferencePool", "engramd")["apiVersion"],
                                 "inference.networking.k8s.io/v1")

    def test_ports_agree_with_model_yaml(self):
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                _, pod, ctr, model = self.parts(docs)
                listens = {"grpc": port_of(model["server"]["listen"]), "http": port_of(model["http"]["listen"]),
                           "metrics": port_of(model["metrics"]["listen"])}
                cports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
                self.assertEqual(cports, listens)
                svc = by_kind(docs, "Service", "engramd")
                self.assertTrue(selects(svc["spec"]["selector"], pod_labels(docs)))
                for p in svc["spec"]["ports"]:
                    target = p["targetPort"]
                    target = cports[target] if isinstance(target, str) else target
                    self.assertEqual(p["port"], target, p["name"])
                    self.assertEqual(cports.get(p["name"]), target, p["name"])
                    self.assertIn("appProtocol", p)
                self.assertEqual({p["name"] for p in svc["spec"]["ports"]}, set(listens))
                grpc_port = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"][0]
                self.assertEqual(grpc_port["appProtocol"], "kubernetes.io/h2c")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    self.assertEqual(ctr[probe].get("grpc"), {"port": listens["grpc"], "service": ""}, probe)
                # the startup probe allows a long table load: at least deploy/systemd's 30 minutes
                sp = ctr["startupProbe"]
                self.assertGreaterEqual(sp["periodSeconds"] * sp["failureThreshold"], 1800)
                pool = by_kind(docs, "InferencePool", "engramd")["spec"]
                self.assertEqual(pool["targetPorts"], [{"number": listens["http"]}])

    def test_config_secret_and_model_paths_match_the_mounts(self):
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                _, pod, ctr, model = self.parts(docs)
                mounts = {m["name"]: m for m in ctr["volumeMounts"]}
                vols = {v["name"]: v for v in pod["volumes"]}
                cfg_mount = [m for m in ctr["volumeMounts"] if "configMap" in vols[m["name"]]][0]
                self.assertEqual(ctr["args"], ["--config", cfg_mount["mountPath"]])
                key_file = model["server"]["api_key_file"]
                secret_mounts = [m for m in ctr["volumeMounts"] if "secret" in vols[m["name"]]
                                 and key_file.startswith(m["mountPath"].rstrip("/") + "/")]
                self.assertEqual(len(secret_mounts), 1, f"no Secret mounted where {key_file} is")
                secret = by_kind(docs, "Secret", vols[secret_mounts[0]["name"]]["secret"]["secretName"])
                self.assertIn(os.path.basename(key_file), secret.get("stringData", secret.get("data", {})))
                tls = model["server"].get("tls") or {}
                for k in ("cert", "key", "client_ca"):
                    if k in tls:
                        self.assertTrue(any(tls[k].startswith(m["mountPath"] + "/") and "secret" in vols[n]
                                            for n, m in mounts.items()), tls[k])
                # the model (and its tables) come from a volume, never the image
                models = [m for m in ctr["volumeMounts"] if model["model"].startswith(m["mountPath"] + "/")]
                self.assertEqual(len(models), 1, f"model {model['model']} is on no volume")
                self.assertTrue({"persistentVolumeClaim", "hostPath"} & set(vols[models[0]["name"]]),
                                "the model volume is neither a PVC nor a hostPath")
                self.assertTrue(models[0].get("readOnly"))

    def test_termination_grace_covers_the_drain(self):
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                _, pod, ctr, model = self.parts(docs)
                pre_stop = 0
                cmd = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                if cmd[:1] == ["sleep"]:
                    pre_stop = int(cmd[1])
                drain = model["server"].get("drain_grace_s", 10)
                self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], pre_stop + drain + DRAIN_MARGIN_S)

    def test_images_are_pinned_and_consistent(self):
        tags = {}
        for name, docs in self.each():
            with self.subTest(overlay=name):
                images = set()
                for d in docs:
                    if d["kind"] != "Deployment":
                        continue
                    for c in d["spec"]["template"]["spec"]["containers"]:
                        ref = c["image"]
                        self.assertRegex(ref, r"^[a-z0-9.-]+(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+$", ref)
                        self.assertFalse(ref.endswith(":latest"), ref)
                        if c["name"] == "engramd":
                            images.add(ref)
                self.assertEqual(len(images), 1, images)
                tags[name] = images.pop().rsplit(":", 1)[1]
        self.assertEqual(len(set(tags.values())), 1, f"the overlays pin different engramd tags: {tags}")

    def test_pool_picker_monitor_and_budget_select_the_right_pods(self):
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                labels = pod_labels(docs)
                epp = by_kind(docs, "Deployment", "engramd-epp")
                epp_labels = epp["spec"]["template"]["metadata"]["labels"]
                pool = by_kind(docs, "InferencePool", "engramd")
                sel = pool["spec"]["selector"]["matchLabels"]
                self.assertTrue(selects(sel, labels))
                self.assertFalse(selects(sel, epp_labels), "the pool would select the picker's own pods")
                ref = pool["spec"]["endpointPickerRef"]
                epp_svc = by_kind(docs, "Service", ref["name"])
                self.assertTrue(selects(epp_svc["spec"]["selector"], epp_labels))
                svc_port = [p for p in epp_svc["spec"]["ports"] if p["port"] == ref["port"]["number"]]
                self.assertEqual(len(svc_port), 1)
                ectr = epp["spec"]["template"]["spec"]["containers"][0]
                eports = {p["name"]: p["containerPort"] for p in ectr["ports"]}
                target = svc_port[0]["targetPort"]
                self.assertEqual(eports.get(target, target), int(flag(ectr["args"], "grpc-port")))
                self.assertEqual(flag(ectr["args"], "pool-name"), pool["metadata"]["name"])
                self.assertEqual(flag(ectr["args"], "pool-group"), pool["apiVersion"].split("/")[0])
                for probe in ("livenessProbe", "readinessProbe"):
                    self.assertEqual(ectr[probe]["grpc"]["port"], int(flag(ectr["args"], "grpc-health-port")))
                # the picker's scheduling profile scores on queue, running requests and KV
                cfg = yaml.safe_load(flag(ectr["args"], "config-text"))
                self.assertEqual(cfg["kind"], "EndpointPickerConfig")
                declared = {p["type"] for p in cfg["plugins"]}
                for prof in cfg["schedulingProfiles"]:
                    refs = {r["pluginRef"] for r in prof["plugins"]}
                    self.assertLessEqual(refs, declared, "a pluginRef names no declared plugin")
                    self.assertLessEqual({"queue-scorer", "running-requests-size-scorer",
                                          "kv-cache-utilization-scorer"}, refs)
                sm = by_kind(docs, "ServiceMonitor", "engramd")
                svc = by_kind(docs, "Service", "engramd")
                self.assertTrue(selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]))
                for ep in sm["spec"]["endpoints"]:
                    self.assertIn(ep["port"], {p["name"] for p in svc["spec"]["ports"]})
                pdb = by_kind(docs, "PodDisruptionBudget", "engramd")
                self.assertTrue(selects(pdb["spec"]["selector"]["matchLabels"], labels))
                dep = by_kind(docs, "Deployment", "engramd")
                self.assertEqual(dep["spec"]["selector"]["matchLabels"], pdb["spec"]["selector"]["matchLabels"])

    def test_gpu_overlay_asks_for_a_gpu_huge_pages_and_ipc_lock(self):
        docs = self.rendered["gpu"]
        _, pod, ctr, model = self.parts(docs)
        res = ctr["resources"]
        self.assertEqual(str(res["limits"]["nvidia.com/gpu"]), "1")
        self.assertEqual(res["requests"]["hugepages-2Mi"], res["limits"]["hugepages-2Mi"])
        self.assertEqual(res["requests"]["memory"], res["limits"]["memory"])
        self.assertIn("IPC_LOCK", ctr["securityContext"]["capabilities"]["add"])
        self.assertEqual(model["backend"]["kind"], "cuda")
        self.assertEqual(model["tables"]["tier"], "dram")
        cpu = self.parts(self.rendered["cpu"])[3]
        self.assertEqual(cpu["backend"]["kind"], "cpu")

    def test_model_yaml_passes_check_config(self):
        """The ConfigMap's model.yaml, with the model swapped for synth:tiny, the key file for a
        temporary one and (for the GPU) the backend for cpu, is a configuration engramd takes."""
        import engramd_process
        binary = os.environ.get("ENGRAMD") or os.path.join(REPO, "build", "engramd")
        for overlay, docs in self.each():
            with self.subTest(overlay=overlay):
                model = self.parts(docs)[3]
                with tempfile.TemporaryDirectory() as d:
                    keys = os.path.join(d, "api_keys")
                    with open(keys, "w") as f:
                        f.write("# test\n" + "k" * 32 + "\n")
                    model["model"] = "synth:tiny"
                    model["tokenizer"] = engramd_process.FIXTURE_TOKENIZER
                    model["server"]["api_key_file"] = keys
                    model["backend"] = {"kind": "cpu", "threads": 1}
                    path = os.path.join(d, "model.yaml")
                    with open(path, "w") as f:
                        yaml.safe_dump(model, f)
                    r = subprocess.run([binary, "--check-config", path], capture_output=True, text=True,
                                       timeout=120)
                    self.assertEqual(r.returncode, 0, r.stderr)

    def test_every_metric_named_is_served(self):
        named = {}
        for name, docs in self.each():
            with self.subTest(overlay=name):
                epp = by_kind(docs, "Deployment", "engramd-epp")["spec"]["template"]["spec"]["containers"][0]
                flags = metric_flags(epp["args"])
                for k in ("total-queued-requests-metric", "total-running-requests-metric",
                          "kv-cache-usage-percentage-metric"):
                    self.assertIn(k, flags)
                self.assertEqual(flags["total-queued-requests-metric"], "engram_num_requests_waiting")
                self.assertEqual(flags["total-running-requests-metric"], "engram_num_requests_running")
                self.assertEqual(flags["kv-cache-usage-percentage-metric"], "engram_kv_cache_usage_perc")
                for k, v in flags.items():
                    if v:  # "" turns a scrape off (--lora-info-metric)
                        named[v.split("{")[0]] = f"{name}: EPP --{k}"
                for d in docs:
                    if d["kind"] in ("ServiceMonitor", "Deployment", "InferencePool"):
                        for m in re.findall(r"\bengram_[a-z0-9_]+", yaml.safe_dump(d)):
                            named.setdefault(m, f"{name}: {d['kind']} {d['metadata']['name']}")
        served = scrape_metric_names()
        missing = {m: where for m, where in named.items() if m not in served}
        self.assertEqual(missing, {}, "named in deploy/k8s but not in engramd's /metrics")


def pod_labels(docs):
    return by_kind(docs, "Deployment", "engramd")["spec"]["template"]["metadata"]["labels"]


if __name__ == "__main__":
    if not KUBECTL:
        print("SKIP: no kubectl on PATH (Debian: apt install kubernetes-client; scripts/setup.sh "
              "does): deploy/k8s cannot be rendered")
        sys.exit(77)
    unittest.main()
