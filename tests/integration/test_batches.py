"""Calls sent together to one JavaScript worker (process isolation) run in
one entry into the engine, one after another: each still gets its own
answer, deadline, error and stack; a call stopped by its deadline, an async
call and a function that leaves work for microtasks end the batch, so
everything behaves as for calls run alone."""
import concurrent.futures as cf
import time

from fmtest import FnTestCase, main

JS = r"""
export function add(a, b) { return a + b; }
export function spin() { for (;;) {} }
export function boom(n) { throw new RangeError("boom " + n); }
export function grow(n) { const a = []; for (let i = 0; i < n; i++) a.push({ i }); return a.length; }
export async function later(x) { await null; return x * 2; }
export async function laterSpin() { await null; for (;;) {} }
// async through a helper: the function's own source names nothing async,
// so it runs in a batch, which its promise then ends
const twice = async (x) => { await null; return x * 2; };
const spinLater = async () => { await null; for (;;) {} };
export function viaHelper(x) { return twice(x); }
export function viaHelperSpin() { return spinLater(); }
export function stray() {
  Promise.resolve().then(() => { for (;;) {} }); // left behind: still this call's
  return 1;
}
"""

MANIFEST = ('{"isolation": "process", "max_instances": 1, "functions": {'
            '"spin": {"timeout_ms": 300}, "laterSpin": {"timeout_ms": 300},'
            ' "viaHelperSpin": {"timeout_ms": 300},'
            ' "stray": {"timeout_ms": 300}}}')


class BatchTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "bt", {"index.js": JS, "fnmesh.json": MANIFEST})

    def together(self, calls, rounds=3):
        """Sends the calls at once (each on its own connection), `rounds`
        times; returns the answers of each round, in the order given."""
        out = []
        with cf.ThreadPoolExecutor(len(calls)) as pool:
            for _ in range(rounds):
                t0 = time.monotonic()
                futs = [pool.submit(self.node.call, "bt", fn, *args) for fn, args in calls]
                out.append([f.result() for f in futs])
                # a runaway is stopped at its own deadline (300 ms), not a later call's
                self.assertLess(time.monotonic() - t0, 5.0)
        return out

    def test_each_call_of_a_batch_gets_its_own_answer(self):
        calls = [("add", (i, 1)) for i in range(48)] + [("grow", (1000,))] * 4
        for answers in self.together(calls):
            self.assertEqual(answers[:48], [(200, i + 1) for i in range(48)])
            self.assertEqual(answers[48:], [(200, 1000)] * 4)

    def test_a_runaway_call_fails_alone(self):
        calls = [("spin", ())] + [("add", (i, 2)) for i in range(12)]
        for answers in self.together(calls, rounds=2):
            st, body = answers[0]
            self.assertEqual(st, 504, body)
            self.assertEqual(answers[1:], [(200, i + 2) for i in range(12)])
        self.assertEqual(self.node.call("bt", "add", 1, 1), (200, 2))

    def test_async_calls_and_their_deadlines(self):
        for later, spin in (("later", "laterSpin"), ("viaHelper", "viaHelperSpin")):
            with self.subTest(functions=(later, spin)):
                calls = ([(later, (i,)) for i in range(8)] + [("add", (i, 3)) for i in range(8)] +
                         [(spin, ())] + [(later, (i,)) for i in range(8)])
                for answers in self.together(calls, rounds=2):
                    self.assertEqual(answers[:8], [(200, 2 * i) for i in range(8)])
                    self.assertEqual(answers[8:16], [(200, i + 3) for i in range(8)])
                    st, body = answers[16]
                    self.assertEqual(st, 504, body)
                    self.assertEqual(answers[17:], [(200, 2 * i) for i in range(8)])

    def test_errors_keep_their_own_message_and_stack(self):
        calls = [("boom", (i,)) for i in range(6)] + [("add", (i, 4)) for i in range(6)]
        for answers in self.together(calls):
            for i, (st, body) in enumerate(answers[:6]):
                self.assertEqual(st, 500, body)
                err = body["error"]
                self.assertEqual((err["name"], err["message"]), ("RangeError", "boom %d" % i))
                self.assertEqual(err["stack"].split("\n")[0], "boom@index.js:4:37", err["stack"])
                self.assertNotIn("native", err["stack"])
            self.assertEqual(answers[6:], [(200, i + 4) for i in range(6)])

    def test_work_left_for_microtasks_is_its_calls(self):
        # as in-process: the loop a call leaves behind is stopped at that
        # call's deadline, and that call fails; the others are served
        calls = [("stray", ())] + [("add", (i, 5)) for i in range(8)]
        for answers in self.together(calls, rounds=2):
            st, body = answers[0]
            self.assertEqual(st, 504, body)
            self.assertEqual(answers[1:], [(200, i + 5) for i in range(8)])


if __name__ == "__main__":
    main()
