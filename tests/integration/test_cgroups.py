"""Each worker process in a cgroup of its own, where the host lets the node
make cgroups (cgroup v2 with the memory controller delegated to it, or the
v1 memory hierarchy), which the worker joins as it starts (the node makes it
ahead, so no call waits for the move): memory.max = memory_mb + 64 MiB, so the kernel stops a
worker whose memory its runtime's own cap does not see, that call fails with
a clear error, the next one gets a new worker, and the cgroups go away with
their workers (docs/operations.md, "Worker sandbox"). Where the host offers
none the node says so in its log; the suite then has nothing to check."""
import os
import re
import subprocess
import time

from fmtest import FnTestCase, main

PY = r'''
def grab(mb):
    b = bytearray(mb << 20)   # zero-filled: every page touched
    return len(b) >> 20

def me():
    import os
    return [os.getpid(), open("/proc/self/cgroup").read()]
'''


JS = r"""
// one native call touches 512 MiB: no JavaScript runs meanwhile, so the
// worker's own memory watch cannot see it; the cgroup's limit does
export function touch(mb) { return new Uint8Array(mb << 20).fill(1).length >> 20; }
export function ok() { return "ok"; }
"""


class CgroupTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        # a cgroup left by a node that is gone (killed): removed when a node starts
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        cls.dead_pid = dead.pid
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "cgsmall", {"index.py": PY, "fnmesh.json": '{"memory_mb": 16}'})
        cls.must_deploy(cls.node, "cgbig", {"index.py": PY})
        cls.must_deploy(cls.node, "cgjs", {"index.js": JS, "fnmesh.json":
                                           '{"memory_mb": 64, "isolation": "process"}'})
        m = re.search(r"worker processes get cgroups: v(\d) (\S+)", cls.node.log_text())
        cls.version, cls.base = (int(m.group(1)), m.group(2)) if m else (0, None)

    def setUp(self):
        super().setUp()
        if not self.version:
            m = re.search(r"worker processes run without cgroups \(([^)]*)\)", self.node.log_text())
            self.assertIsNotNone(m, "the node must say why its workers have no cgroups")
            self.skipTest("this host lets the node make no cgroups: " + m.group(1))

    def node_cgroups(self, node):
        """{cgroup directory: [pids in it]} of the node's cgroups now."""
        pre = "fnmesh-%d-" % node.pid
        out = {}
        for d in os.listdir(self.base):
            if d.startswith(pre):
                path = os.path.join(self.base, d)
                try:
                    with open(os.path.join(path, "cgroup.procs")) as f:
                        out[path] = [int(p) for p in f.read().split()]
                except FileNotFoundError:
                    pass
        return out

    def cgroup_of(self, groups):
        """The directory of the node's cgroup named in a /proc/<pid>/cgroup text."""
        m = re.search(r"/(fnmesh-%d-\d+)\n" % self.node.pid, groups)
        self.assertIsNotNone(m, groups)
        return os.path.join(self.base, m.group(1))

    def workers(self, node):
        out = subprocess.run(["ps", "--ppid", str(node.pid), "-o", "pid="],
                             capture_output=True, text=True).stdout
        return {int(p) for p in out.split()}

    def test_each_worker_has_its_own_cgroup_with_its_memory_limit(self):
        limit_file = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        for dep, mb in (("cgsmall", 16), ("cgbig", 128)):
            with self.subTest(deployment=dep):
                st, (wpid, groups) = self.node.call(dep, "me")
                self.assertEqual(st, 200, groups)
                path = self.cgroup_of(groups)
                with open(os.path.join(path, limit_file)) as f:
                    self.assertEqual(int(f.read()), (mb + 64) << 20)
                with open(os.path.join(path, "cgroup.procs")) as f:
                    self.assertEqual(f.read().split(), [str(wpid)])

    def test_the_kernel_stops_a_worker_past_its_limit_and_only_that_call_fails(self):
        # 16 MiB + 64 of headroom: 40 MiB fits, 200 MiB (under the 400 MiB
        # address-space cap, so malloc succeeds) is stopped by the kernel
        self.assertEqual(self.node.call("cgsmall", "grab", 40), (200, 40))
        st, body = self.node.call("cgsmall", "grab", 200)
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["name"], "MemoryError", body)
        self.assertIn("memory limit exceeded (16 MiB): the kernel stopped the Python worker at "
                      "80 MiB running grab", body["error"]["message"])
        for _ in range(4):  # whichever worker serves it now
            self.assertEqual(self.node.call("cgsmall", "grab", 40), (200, 40))
        self.assertEqual(self.node.call("cgbig", "grab", 100), (200, 100))
        # a cgroup for live workers only: the dead one's is gone (a new
        # one may be empty for a moment, until its worker has joined it)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            groups = self.node_cgroups(self.node)
            live = self.workers(self.node)
            left = {d: p for d, p in groups.items() if not p or not set(p) <= live}
            if not left:
                break
            time.sleep(0.05)
        self.assertEqual(left, {}, "cgroups of workers that are gone")

    def test_memory_a_javascript_worker_cannot_watch_is_stopped_too(self):
        self.assertEqual(self.node.call("cgjs", "touch", 16), (200, 16))
        st, body = self.node.call("cgjs", "touch", 512)
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["name"], "MemoryError", body)
        self.assertIn("memory limit exceeded (64 MiB): the kernel stopped the JavaScript worker "
                      "at 128 MiB running touch", body["error"]["message"])
        self.assertEqual(self.node.call("cgjs", "ok"), (200, "ok"))

    def test_cgroups_of_gone_nodes_are_swept_and_own_ones_removed_at_stop(self):
        stale = os.path.join(self.base, "fnmesh-%d-1" % self.dead_pid)
        os.mkdir(stale)
        n = self.start_node()
        self.must_deploy(n, "cgone", {"index.py": PY})
        st, (wpid, _) = n.call("cgone", "me")
        self.assertEqual(st, 200, wpid)
        self.assertIn([wpid], list(self.node_cgroups(n).values()))
        self.assertFalse(os.path.exists(stale), "an empty cgroup of a gone node is removed")
        n.stop()
        pre = "fnmesh-%d-" % n.pid
        self.assertEqual([d for d in os.listdir(self.base) if d.startswith(pre)], [],
                         "a stopped node leaves no cgroup behind (its spare workers' included)")


if __name__ == "__main__":
    main()
