/* worker.c - a Python worker process (`fnmesh worker-python`).
 *
 * Started by the node with exec (never forked from it: the node runs
 * JavaScriptCore, whose helper threads do not survive a fork), one socket on
 * fd 3. It unpacks the deployment into a private temporary directory, puts
 * it first on sys.path, imports the entry files with the embedded
 * bootstrap.py and then serves calls one at a time until the socket closes.
 * The node interrupts a call past its deadline with SIGINT (Python's
 * KeyboardInterrupt, in the main thread where calls run) and kills the
 * process if that does not end it. This file never touches JavaScriptCore. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/python/python_int.h"
#include "runtime/sandbox.h"

extern const char fm_py_bootstrap[]; /* bootstrap.py, NUL-terminated */

__asm__(".section .rodata\n"
        ".global fm_py_bootstrap\n"
        ".type fm_py_bootstrap, @object\n"
        "fm_py_bootstrap:\n"
        ".incbin \"" FM_PY_BOOTSTRAP_PATH "\"\n"
        ".byte 0\n"
        ".previous\n");

static int sock = FM_PY_WORKER_FD;

static PyObject *py_log(PyObject *self, PyObject *args) {
    int level;
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "is#", &level, &text, &len)) return NULL;
    unsigned char lv = (unsigned char)(level < 0 ? 0 : level > 3 ? 3 : level);
    fm_py_send(sock, 'L', &lv, 1, text, (size_t)len);
    Py_RETURN_NONE;
}

/* mesh(payload) -> (ok, text): asks the node to call a function and waits
 * for the answer ('M' out, 'm' back: u8 ok, JSON). Other frames cannot
 * arrive meanwhile: the node sends nothing else to a busy worker. */
static PyObject *py_mesh(PyObject *self, PyObject *args) {
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "s#", &text, &len)) return NULL;
    if (fm_py_send(sock, 'M', text, (size_t)len, NULL, 0) != 0)
        return Py_BuildValue("(Os)", Py_False, "{\"message\":\"the node is gone\"}");
    char *answer = NULL;
    size_t alen = 0;
    int type;
    Py_BEGIN_ALLOW_THREADS
    type = fm_py_recv_only(sock, 'm', &answer, &alen);
    Py_END_ALLOW_THREADS
    if (type != 'm' || alen < 1) {
        free(answer);
        return Py_BuildValue("(Os)", Py_False, "{\"message\":\"the node is gone\"}");
    }
    PyObject *r = Py_BuildValue("(Os#)", answer[0] ? Py_True : Py_False, answer + 1,
                                (Py_ssize_t)(alen - 1));
    free(answer);
    return r;
}

static PyMethodDef fnmesh_methods[] = {
    {"log", py_log, METH_VARARGS, "log(level, text): a line in the node's log"},
    {"mesh", py_mesh, METH_VARARGS, "mesh(json) -> (ok, json): call another function"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fnmesh_module = {PyModuleDef_HEAD_INIT, "_fnmesh", NULL, -1,
                                           fnmesh_methods, NULL, NULL, NULL, NULL};

static PyObject *init_fnmesh(void) {
    return PyModule_Create(&fnmesh_module);
}

/* Unpacks the artifact under dir; returns the entries as a Python list. */
static PyObject *unpack(const unsigned char *p, size_t len, const char *dir) {
    const unsigned char *end = p + len;
    size_t ml = strlen(FM_PY_MAGIC);
    if (len < ml + 4 || memcmp(p, FM_PY_MAGIC, ml) != 0) return NULL;
    p += ml;
    PyObject *entries = PyList_New(0);
    uint32_t ne = fm_get_u32(p);
    p += 4;
    for (uint32_t i = 0; i < ne; i++) {
        if (end - p < 4) goto bad;
        uint32_t l = fm_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < l) goto bad;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p, l, "replace");
        PyList_Append(entries, s);
        Py_DECREF(s);
        p += l;
    }
    if (end - p < 4) goto bad;
    uint32_t nf = fm_get_u32(p);
    p += 4;
    char path[4096];
    for (uint32_t i = 0; i < nf; i++) {
        if (end - p < 4) goto bad;
        uint32_t pl = fm_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < (size_t)pl + 4) goto bad;
        int n = snprintf(path, sizeof(path), "%s/%.*s", dir, (int)pl, (const char *)p);
        p += pl;
        uint32_t dl = fm_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < dl || n <= 0 || (size_t)n >= sizeof(path)) goto bad;
        char *slash = strrchr(path, '/');
        *slash = '\0';
        fm_mkdirs(path, 0700);
        *slash = '/';
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, p, dl);
            (void)w;
            close(fd);
        }
        p += dl;
    }
    return entries;
bad:
    Py_DECREF(entries);
    return NULL;
}

/* Formats the pending Python exception as {message, stack} JSON. */
static char *exception_json(PyObject *boot) {
    PyObject *type = NULL, *exc = NULL, *tb = NULL;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc && tb) PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *fmt = PyObject_GetAttrString(boot, "_error");
    PyObject *r = fmt && exc ? PyObject_CallOneArg(fmt, exc) : NULL;
    char *out = NULL;
    if (r && PyUnicode_Check(r)) out = strdup(PyUnicode_AsUTF8(r));
    else out = strdup("{\"message\":\"the worker could not load the deployment\"}");
    PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(fmt);
    Py_XDECREF(exc);
    return out;
}

int fm_python_worker_main(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the node */
    /* Everything up to the 'Q' frame is the same for every deployment, so
     * the node may start this worker ahead of need: Python is initialised
     * while no call waits for it. */
    char dir[] = "/tmp/fnmesh-py-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char tmp[sizeof(dir) + 8]; /* the function's own temporary directory, removed with dir */
    snprintf(tmp, sizeof(tmp), "%s/.tmp", dir);
    if (mkdir(tmp, 0700) != 0) return 2;
    setenv("TMPDIR", tmp, 1); /* before Python copies the environment */

    PyImport_AppendInittab("_fnmesh", init_fnmesh);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 1; /* SIGINT -> KeyboardInterrupt: the deadline */
    config.write_bytecode = 0;
    PyStatus st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        const char *m = "{\"message\":\"cannot initialise Python\"}";
        fm_py_send(sock, 'X', m, strlen(m), NULL, 0);
        return 2;
    }
    PyObject *code = Py_CompileString(fm_py_bootstrap, "fnmesh-bootstrap", Py_file_input);
    PyObject *boot = code ? PyImport_ExecCodeModule("fnmesh_bootstrap", code) : NULL;
    Py_XDECREF(code);
    /* now the deployment: its memory cap and the sandbox, then its code */
    char *init = NULL;
    size_t ilen = 0;
    if (fm_worker_take_quota(sock) != 0 || fm_py_recv(sock, -1, &init, &ilen) != 'I') {
        fm_rmtree(dir);
        return 2;
    }
    PyObject *entries = unpack((const unsigned char *)init, ilen, dir);
    free(init);
    if (!boot || !entries) {
        PyErr_Print();
        const char *m = "{\"message\":\"cannot start the Python worker\"}";
        fm_py_send(sock, 'X', m, strlen(m), NULL, 0);
        return 2;
    }
    PyObject *exports = PyObject_CallMethod(boot, "load", "sO", dir, entries);
    Py_DECREF(entries);
    if (!exports) {
        char *e = exception_json(boot);
        fm_py_send(sock, 'X', e, strlen(e), NULL, 0);
        free(e);
        fm_rmtree(dir);
        return 1;
    }
    const char *ej = PyUnicode_AsUTF8(exports);
    fm_py_send(sock, 'E', ej, strlen(ej), NULL, 0);
    fm_worker_ready(sock);
    Py_DECREF(exports);

    PyObject *call = PyObject_GetAttrString(boot, "call");
    for (;;) {
        char *req = NULL;
        size_t rlen = 0;
        int type = fm_py_recv_next(sock, &req, &rlen);
        if (type < 0) break; /* the node closed the socket */
        fm_call_frame f;
        if (type != 'C' || fm_call_frame_parse(req, rlen, &f) != 0) {
            if (type == 'C') fm_worker_reject_call(sock, req, rlen);
            free(req);
            continue;
        }
        unsigned char id[4];
        memcpy(id, f.id, 4);
        PyObject *holes = Py_None; /* arguments not given: their defaults apply */
        if (f.nholes) {
            holes = PyTuple_New(f.nholes);
            for (uint32_t i = 0; i < f.nholes; i++)
                PyTuple_SET_ITEM(holes, i, PyLong_FromUnsignedLong(fm_call_frame_hole(&f, i)));
        } else {
            Py_INCREF(holes);
        }
        PyObject *r = PyObject_CallFunction(call, "Is#N", (unsigned)f.index, f.args,
                                            (Py_ssize_t)f.args_len, holes);
        free(req);
        if (!r) { /* a KeyboardInterrupt outside the guarded call */
            PyErr_Clear();
            const char *m = "{\"message\":\"interrupted\",\"name\":\"KeyboardInterrupt\"}";
            fm_worker_reply(sock, 'F', id, m, strlen(m));
            continue;
        }
        int ok = PyObject_IsTrue(PyTuple_GetItem(r, 0));
        Py_ssize_t tl = 0;
        const char *text = PyUnicode_AsUTF8AndSize(PyTuple_GetItem(r, 1), &tl);
        fm_worker_reply(sock, ok ? 'R' : 'F', id, text ? text : "null", text ? (size_t)tl : 4);
        Py_DECREF(r);
    }
    Py_XDECREF(call);
    Py_DECREF(boot);
    Py_FinalizeEx();
    fm_rmtree(dir);
    return 0;
}
