"""
The benchmark suite's progress display.

On a terminal (or with C{--progress bar}) a live tqdm bar on stderr shows
the runs done of the total, the run in progress and how long it has been
running, refreshed twice a second while the suite waits for its
processes; each finished run's line is printed above the bar (on
stdout).  Elsewhere (CI logs, C{--progress lines}) each run's line is
printed when it ends, as before, with no bar; C{--progress none} prints
the lines only.
"""

import sys
import threading
import time

MODES = ("auto", "bar", "lines")


class Progress:
    """
    Progress over C{total} runs.

    @param mode: C{"auto"} (a bar when C{stream} is a terminal), C{"bar"}
        or C{"lines"}.
    @param stream: where the bar goes (default stderr).
    @param out: where the run lines go (default stdout).
    """

    interval = 0.5

    def __init__(self, total, mode="auto", stream=None, out=None, clock=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.current = None
        self.currentSince = None
        self.bar = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if mode == "bar" or (mode == "auto" and _isTerminal(self.stream)):
            self.bar = _makeBar(total, self.stream)
        if self.bar is not None:
            self._thread = threading.Thread(target=self._tick,
                                            name="bench-progress", daemon=True)
            self._thread.start()

    def start(self, label):
        """
        A run of C{label} (e.g. C{"bulk mio run 2/3"}) begins.
        """
        with self._lock:
            self.current = label
            self.currentSince = self.clock()
            self._refresh()

    def done(self, line):
        """
        A run ended: print C{line}, count it.
        """
        with self._lock:
            self.current = None
            if self.bar is not None:
                self.bar.write(line, file=self.out)
                self.bar.update(1)
                self._refresh()
            else:
                self.out.write(line + "\n")
                self.out.flush()

    def close(self):
        """
        Stop the display.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval)
        if self.bar is not None:
            with self._lock:
                self.bar.close()

    def status(self):
        """
        What the bar's text says now.
        """
        if self.current is None:
            return "between runs"
        return "%s (%.0f s)" % (self.current, self.clock() - self.currentSince)

    def _refresh(self):
        if self.bar is not None:
            self.bar.set_postfix_str(self.status(), refresh=False)
            self.bar.refresh()

    def _tick(self):
        while not self._stop.wait(self.interval):
            with self._lock:
                self._refresh()


def _isTerminal(stream):
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _makeBar(total, stream):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", file=stream, dynamic_ncols=True,
                desc="muxframe bench", mininterval=0,
                bar_format="{desc}: {n}/{total} runs |{bar}| {elapsed}"
                           "{postfix}")


__all__ = ["MODES", "Progress"]
