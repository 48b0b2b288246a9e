"""Worker processes (Python and C functions) run sandboxed: no new programs
or processes, no network sockets of their own, no privileges to gain, no
core dumps, a private temporary directory; threads, files, AF_UNIX sockets,
calls to other functions and everything a function normally does keep
working (docs/operations.md, "Worker sandbox")."""
import os
import unittest

from fmtest import FnTestCase, main

PY = r'''
import os, socket, subprocess, tempfile, threading, resource

def attempt(what):
    try:
        if what == "exec":
            subprocess.run(["/bin/true"], check=True)
        elif what == "fork":
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        elif what == "inet":
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        elif what == "inet6":
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        elif what == "unix":
            a, b = socket.socketpair(socket.AF_UNIX)
            a.send(b"x"); assert b.recv(1) == b"x"
            a.close(); b.close()
        elif what == "thread":
            out = []
            t = threading.Thread(target=lambda: out.append(6 * 7))
            t.start(); t.join()
            assert out == [42]
        elif what == "file":
            with tempfile.NamedTemporaryFile("w+") as f:
                f.write("kept"); f.seek(0)
                assert f.read() == "kept"
        return "allowed"
    except OSError as e:
        return "refused: errno %d" % e.errno

def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    tmp = tempfile.gettempdir()
    return {"no_new_privs": fields.get("NoNewPrivs"), "seccomp": fields.get("Seccomp"),
            "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
            "tmp": tmp, "tmp_mode": oct(os.stat(tmp).st_mode & 0o777)}

def peer():
    return status()["tmp"]
'''

C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fnmesh.h>
#include <string.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

FM_EXPORT(native_attempt, "what") {
    size_t n = 0;
    const char *what = fm_get_string(fm_arg(ctx, 0), &n);
    if (!what) return fm_error(ctx, "what?");
    int rc = 0;
    errno = 0;
    if (strcmp(what, "exec") == 0) {
        char *argv[] = {"/bin/true", NULL};
        rc = execv("/bin/true", argv);
    } else if (strcmp(what, "fork") == 0) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0) waitpid(p, NULL, 0);
        rc = p < 0 ? -1 : 0;
    } else if (strcmp(what, "inet") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0) close(fd);
        rc = fd < 0 ? -1 : 0;
    } else if (strcmp(what, "vfork") == 0) {
        /* a new process sharing our memory (what posix_spawn does) */
        long p = syscall(SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0);
        if (p == 0) syscall(SYS_exit, 0);
        if (p > 0) waitpid((pid_t)p, NULL, 0);
        rc = p < 0 ? -1 : 0;
    } else if (strcmp(what, "io_uring") == 0) {
        struct io_uring_params params;
        memset(&params, 0, sizeof(params));
        long fd = syscall(SYS_io_uring_setup, 1, &params);
        if (fd >= 0) close((int)fd);
        rc = fd < 0 ? -1 : 0;
    } else if (strcmp(what, "unix") == 0) {
        int sv[2];
        rc = socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        if (rc == 0) close(sv[0]), close(sv[1]);
    }
    if (rc == 0) return fm_string(ctx, "allowed", 7);
    char buf[64];
    int len = snprintf(buf, sizeof(buf), "refused: errno %d", errno);
    return fm_string(ctx, buf, (size_t)len);
}
'''

EPERM, EACCES = 1, 13


class SandboxTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node(extra_args=["--threads", "1"])
        cls.must_deploy(cls.node, "sbx", {"index.py": PY, "native.c": C})

    def attempt(self, what, fn="attempt"):
        st, r = self.node.call("sbx", fn, what)
        self.assertEqual(st, 200, r)
        return r

    def test_python_cannot_start_programs_processes_or_network(self):
        self.assertEqual(self.attempt("exec"), "refused: errno %d" % EPERM)
        self.assertEqual(self.attempt("fork"), "refused: errno %d" % EPERM)
        self.assertEqual(self.attempt("inet"), "refused: errno %d" % EACCES)
        self.assertEqual(self.attempt("inet6"), "refused: errno %d" % EACCES)

    def test_python_keeps_threads_files_and_unix_sockets(self):
        for what in ("thread", "file", "unix"):
            self.assertEqual(self.attempt(what), "allowed", what)

    def test_c_cannot_start_programs_processes_or_network(self):
        self.assertEqual(self.attempt("exec", "native_attempt"), "refused: errno %d" % EPERM)
        self.assertEqual(self.attempt("fork", "native_attempt"), "refused: errno %d" % EPERM)
        self.assertEqual(self.attempt("inet", "native_attempt"), "refused: errno %d" % EACCES)
        self.assertEqual(self.attempt("unix", "native_attempt"), "allowed")
        # io_uring could open sockets behind the filter's back
        self.assertEqual(self.attempt("io_uring", "native_attempt"), "refused: errno %d" % EPERM)

    @unittest.skipIf(os.environ.get("ASAN_OPTIONS"),
                     "sanitizer builds let CLONE_VM clones through (LeakSanitizer needs them)")
    def test_no_process_sharing_memory_either(self):
        self.assertEqual(self.attempt("vfork", "native_attempt"), "refused: errno %d" % EPERM)

    def test_no_new_privileges_no_core_dumps_private_tmp(self):
        st, s = self.node.call("sbx", "status")
        self.assertEqual(st, 200, s)
        self.assertEqual(s["no_new_privs"], "1")
        self.assertEqual(s["seccomp"], "2")  # filter mode
        self.assertEqual(s["core"], [0, 0])
        self.assertNotEqual(s["tmp"], "/tmp")
        self.assertTrue(s["tmp"].startswith("/tmp/fnmesh-py-"), s)
        self.assertEqual(s["tmp_mode"], "0o700")
        # the node itself is not sandboxed: it still serves and deploys
        st, _ = self.node.deploy("plain", {"index.js": "export const ok = () => 1;\n"})
        self.assertIn(st, (200, 201))
        self.assertEqual(self.node.call("plain", "ok"), (200, 1))
        # refused calls did not hurt the worker: it answers the next call
        self.assertEqual(self.attempt("thread"), "allowed")

    def test_isolated_javascript_and_lua_run_sandboxed(self):
        # --isolation process (here the manifest's): JavaScript and Lua run in
        # worker processes under the same filter, and serve as in-process
        manifest = '{"isolation": "process"}'
        st, _ = self.node.deploy("iso", {
            "index.js": "export const pid = () => fnmesh.call('iso/luapid');\n",
            "lib.lua": "return { luapid = function() return 'lua' end }\n",
            "fnmesh.json": manifest})
        self.assertIn(st, (200, 201))
        self.assertEqual(self.node.call("iso", "pid"), (200, "lua"))
        workers = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
                with open("/proc/%s/status" % pid) as f:
                    fields = dict(l.partition(":")[::2] for l in f)
            except OSError:
                continue
            if fields.get("PPid", "").strip() != str(self.node.pid) or len(argv) < 2:
                continue
            workers.setdefault(argv[1].decode(), []).append(
                (fields["NoNewPrivs"].strip(), fields["Seccomp"].strip()))
        for verb in ("worker-js", "worker-lua"):
            self.assertIn(verb, workers, workers)
            # a spare started ahead has not entered the sandbox yet: the one serving has
            self.assertIn(("1", "2"), workers[verb], (verb, workers))


if __name__ == "__main__":
    main()
