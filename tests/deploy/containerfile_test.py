"""Checks deploy/container's Containerfiles without building them (this machine cannot pull
base images): multi-stage with a separate runtime stage, a non-root USER, EXPOSE of engramd's
default ports (from `engramd --check-config`, so a changed default shows here) and the
metrics port of deploy/k8s, a HEALTHCHECK on /health, volumes for the model and the config,
no model data copied in, no build tools in the runtime stage, and (CPU image) runtime
packages that cover every library `ldd engramd` resolves on this machine.

Environment: ENGRAMD and ENGRAM_REPO, set by ctest.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest

REPO = os.environ.get("ENGRAM_REPO", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
ENGRAMD = os.environ.get("ENGRAMD") or os.path.join(REPO, "build", "engramd")
FILES = {"cpu": "deploy/container/Containerfile", "cuda": "deploy/container/Containerfile.cuda"}
# Files that are model data or test data: never in an image.
MODEL_DATA = re.compile(r"(^|/)(models?|tests|fixtures|data)(/|$)|\.(safetensors|bin|npy|gguf)$")


def instructions(path):
    """[(KEYWORD, argument text)] with line continuations joined and comments dropped."""
    out, cur = [], ""
    with open(os.path.join(REPO, path)) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if cur and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            kw, _, rest = cur.strip().partition(" ")
            out.append((kw.upper(), rest.strip()))
            cur = ""
    return out


def stages(ins):
    """[(base image, stage name, [instructions])]."""
    out = []
    for kw, arg in ins:
        if kw == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
            out.append((m.group(1), m.group(2), []))
        elif out:
            out[-1][2].append((kw, arg))
    return out


def effective_config():
    import engramd_process
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "model.yaml")
        with open(p, "w") as f:
            f.write(f'model: "synth:tiny"\ntokenizer: "{engramd_process.FIXTURE_TOKENIZER}"\n')
        r = subprocess.run([ENGRAMD, "--check-config", p], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"engramd --check-config failed: {r.stderr}")
        return r.stdout


def listen_port(text, section):
    m = re.search(rf"^{section}:\n(?:[ ]+.*\n)*?[ ]+listen: \"?([^\"\n]*)\"?$", text, re.M)
    if not m:
        raise AssertionError(f"no {section}.listen in:\n{text}")
    return int(m.group(1).rsplit(":", 1)[1]) if m.group(1) else None


def dependency_closure(packages):
    """The packages apt installs with `packages`, from this machine's dpkg database (the
    Depends and Pre-Depends of each, recursively; alternatives all count)."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Depends}, ${Pre-Depends}\n"],
                         capture_output=True, text=True, check=True).stdout
    deps = {}
    for line in out.splitlines():
        name, _, d = line.partition("\t")
        deps[name] = {re.split(r"[ :(]", x.strip())[0] for x in re.split(r"[,|]", d) if x.strip()}
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(deps.get(p, ()))
    return seen


class Containerfiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.parsed = {k: stages(instructions(p)) for k, p in FILES.items()}
        eff = effective_config()
        cls.http_port = listen_port(eff, "http")
        cls.default_ports = {listen_port(eff, "server"), cls.http_port}
        with open(os.path.join(REPO, "deploy/k8s/base/model.yaml")) as f:
            cls.k8s_model = f.read()

    def runtime(self, kind):
        st = self.parsed[kind]
        self.assertGreaterEqual(len(st), 2, "expected a build stage and a runtime stage")
        return st[-1]

    def test_multi_stage_with_a_runtime_stage_from_a_runtime_base(self):
        for kind, st in self.parsed.items():
            with self.subTest(kind):
                self.assertTrue(st[0][1], "the build stage has a name")
                base, _, body = self.runtime(kind)
                self.assertRegex(base, r"bookworm-slim|-runtime-" if kind == "cpu" else r"nvidia/cuda:.*-runtime-")
                copies = [a for k, a in body if k == "COPY"]
                self.assertTrue(any(a.startswith(f"--from={st[0][1]} ") for a in copies),
                                "the runtime stage copies the binaries from the build stage")
                runs = " ".join(a for k, a in body if k == "RUN")
                for tool in ("build-essential", "cmake", "-dev ", "ninja-build", "nvcc"):
                    self.assertNotIn(tool, runs + " ", f"{tool} in the runtime stage")
                build_runs = " ".join(a for k, a in st[0][2] if k == "RUN")
                self.assertIn("-DENGRAM_CUDA=" + ("OFF" if kind == "cpu" else "ON"), build_runs)

    def test_user_is_not_root(self):
        for kind in self.parsed:
            with self.subTest(kind):
                _, _, body = self.runtime(kind)
                users = [a for k, a in body if k == "USER"]
                self.assertTrue(users, "no USER in the runtime stage")
                user = users[-1].split(":")[0]
                self.assertNotIn(user, ("root", "0"))
                runs = " ".join(a for k, a in body if k == "RUN")
                m = re.search(rf"useradd .*--uid (\d+) .*\b{user}\b", runs)
                self.assertTrue(m, f"the runtime stage creates no user {user} with a fixed uid")
                # deploy/k8s runs the pods as that uid
                with open(os.path.join(REPO, "deploy/k8s/base/deployment.yaml")) as f:
                    self.assertIn(f"runAsUser: {m.group(1)}", f.read())

    def test_expose_matches_the_ports(self):
        metrics = int(re.search(r'^metrics:\n\s+listen: "?[^:]+:(\d+)', self.k8s_model, re.M).group(1))
        for kind in self.parsed:
            with self.subTest(kind):
                _, _, body = self.runtime(kind)
                exposed = {int(p.split("/")[0]) for k, a in body if k == "EXPOSE" for p in a.split()}
                self.assertEqual(exposed, self.default_ports | {metrics})

    def test_healthcheck_asks_health_on_the_http_port(self):
        http = self.http_port
        for kind in self.parsed:
            with self.subTest(kind):
                _, _, body = self.runtime(kind)
                hc = [a for k, a in body if k == "HEALTHCHECK"]
                self.assertEqual(len(hc), 1)
                self.assertRegex(hc[0], rf"CMD .*http://127\.0\.0\.1:{http}/health")
                self.assertRegex(hc[0], r"--start-period=\d+m")

    def test_model_and_config_are_volumes_never_copied(self):
        for kind, st in self.parsed.items():
            with self.subTest(kind):
                _, _, body = self.runtime(kind)
                vols = " ".join(a for k, a in body if k == "VOLUME")
                self.assertIn('"/models"', vols)
                self.assertIn('"/etc/engramd"', vols)
                for _, _, b in st:
                    for k, a in b:
                        if k not in ("COPY", "ADD"):
                            continue
                        self.assertNotEqual(k, "ADD", "ADD can fetch URLs and unpack archives: use COPY")
                        words = [w for w in shlex.split(a) if not w.startswith("--")]
                        for src in words[:-1]:
                            self.assertNotIn(src, (".", "./", "*"), "COPY of the whole context")
                            if not a.startswith("--from="):
                                self.assertNotRegex(src, MODEL_DATA, f"COPY {a}")

    def test_copied_sources_are_in_the_build_context(self):
        """.dockerignore lets only the sources through: each COPY from the context names one."""
        with open(os.path.join(REPO, ".dockerignore")) as f:
            allowed = {l[1:].rstrip("/") for l in f.read().split() if l.startswith("!")}
        for kind, st in self.parsed.items():
            for _, _, b in st:
                for k, a in b:
                    if k == "COPY" and not a.startswith("--from="):
                        for src in shlex.split(a)[:-1]:
                            with self.subTest(kind=kind, src=src):
                                self.assertIn(src.split("/")[0], allowed)

    def test_cpu_runtime_packages_cover_ldd(self):
        """Every library ldd resolves for this build's engramd (except the CUDA ones and the
        base system's) is in a package the CPU runtime stage installs."""
        _, _, body = self.runtime("cpu")
        runs = " ".join(a for k, a in body if k == "RUN")
        installed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", runs.split("install", 1)[1].split("&&")[0]))
        base = {"libc6", "libstdc++6", "libgcc-s1", "zlib1g", "liblzma5", "libcap2", "libgpg-error0"}
        closure = dependency_closure(installed)
        r = subprocess.run(["ldd", ENGRAMD], capture_output=True, text=True, check=True)
        missing = {}
        for lib in re.findall(r"=> (/\S+)", r.stdout):
            if "/cuda" in lib:
                continue
            pkg = None
            for candidate in (lib, os.path.realpath(lib)):
                q = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
                if q.returncode == 0:
                    pkg = q.stdout.split(":")[0]
                    break
            if pkg is None or pkg in base:
                continue
            if pkg not in closure:
                missing[lib] = pkg
        self.assertEqual(missing, {}, "libraries of engramd no runtime package brings")

    def test_cuda_image_provides_the_gpu_overlays_command(self):
        _, _, body = self.runtime("cuda")
        runs = " ".join(a for k, a in body if k == "RUN")
        with open(os.path.join(REPO, "deploy/k8s/overlays/gpu/deployment-gpu.yaml")) as f:
            cmd = re.search(r'command: \["([^"]+)"\]', f.read()).group(1)
        self.assertIn(f"setcap cap_ipc_lock=ep {cmd}", runs)


if __name__ == "__main__":
    unittest.main()
