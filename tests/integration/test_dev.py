"""`fnmesh dev DIR`: a real node in the foreground with DIR deployed, and
redeployed when files change (edits, new files in new folders), compile
errors printed while the previous version keeps serving, serve's options
passed through, a temporary data directory removed at exit, and a clean
stop on SIGTERM."""
import glob
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

from fmtest import BIN, FnTestCase, free_port, main


def post(port, path, args=()):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=json.dumps(list(args)).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return None, None


class DevTest(FnTestCase):
    def start_dev(self, directory, *extra):
        port = free_port()
        out = tempfile.NamedTemporaryFile(prefix="fnmesh-dev-out-", delete=False)
        self.addCleanup(os.unlink, out.name)
        env = dict(os.environ)
        env.pop("FNMESH_ADMIN_TOKEN", None)
        p = subprocess.Popen([BIN, "dev", directory, "--listen", "127.0.0.1:%d" % port] +
                             list(extra), stdout=out, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(self.stop, p)
        self.out_path = out.name
        return p, port

    def stop(self, p):
        if p.poll() is None:
            p.kill()
            p.wait()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            self.assertNotIn(marker, self.output())

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def wait_for(self, pred, what, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.1)
        self.fail("%s did not happen within %ss; output:\n%s" % (what, timeout, self.output()[-3000:]))

    def write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def test_redeploys_on_change_and_survives_errors(self):
        d = tempfile.mkdtemp(prefix="fnmesh-dev-src-")
        app = os.path.join(d, "app")
        self.write(os.path.join(app, "index.js"), "export const v = () => 1;\n")
        before = set(glob.glob("/tmp/fnmesh-dev-*"))
        p, port = self.start_dev(app)
        self.wait_for(lambda: post(port, "/fn/app/v") == (200, 1), "the first deploy")
        self.assertIn("deployed app", self.output())

        self.write(os.path.join(app, "index.js"), "export const v = () => 2;\n")
        self.wait_for(lambda: post(port, "/fn/app/v") == (200, 2), "the redeploy after an edit")

        # a syntax error is printed with file:line:column; version 2 keeps serving
        self.write(os.path.join(app, "index.js"), "export const v = () => {\n  return (;\n};\n")
        self.wait_for(lambda: "index.js:2:" in self.output(), "the compile error")
        self.assertIn("previous version keeps serving", self.output())
        self.assertEqual(post(port, "/fn/app/v"), (200, 2))

        # a new file in a new folder is watched and deployed
        self.write(os.path.join(app, "lib", "w.js"), "export const w = 7;\n")
        self.write(os.path.join(app, "index.js"),
                   'import { w } from "./lib/w.js";\nexport const v = () => w;\n')
        self.wait_for(lambda: post(port, "/fn/app/v") == (200, 7), "the deploy with lib/w.js")
        self.write(os.path.join(app, "lib", "w.js"), "export const w = 8;\n")
        self.wait_for(lambda: post(port, "/fn/app/v") == (200, 8), "the redeploy of lib/w.js")

        # a new language file becomes functions too
        self.write(os.path.join(app, "more.py"), "def py():\n    return 'py'\n")
        self.wait_for(lambda: post(port, "/fn/app/py") == (200, "py"), "the Python function")

        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=15), 0, self.output()[-2000:])
        # its temporary data directory is gone
        self.assertEqual(set(glob.glob("/tmp/fnmesh-dev-*")) - before - {self.out_path}, set())

    def test_options_pass_through_and_data_is_kept(self):
        d = tempfile.mkdtemp(prefix="fnmesh-dev-src-")
        app = os.path.join(d, "svc")
        data = os.path.join(d, "data")
        self.write(os.path.join(app, "index.js"), "export const f = () => 'ok';\n")
        p, port = self.start_dev(app, "--data", data, "--threads", "1")
        self.wait_for(lambda: post(port, "/fn/svc/f") == (200, "ok"), "the first deploy")
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=15), 0)
        self.assertTrue(os.path.exists(os.path.join(data, "fnmesh.db")))

    def test_usage_errors(self):
        for args, code in ((["dev"], 2), (["dev", "/nonexistent/dir"], 1), (["dev", "--help"], 0)):
            r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, code, (args, r.stdout, r.stderr))
        r = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=20)
        self.assertIn("dev", r.stdout)


if __name__ == "__main__":
    main()
