"""The stdout of a test's subprocess (bot.py, an instance), collected line by line as it comes."""

from __future__ import annotations

import asyncio
import contextlib

MAX_LINES = 200_000  # a runaway log cannot fill the test's memory


class FollowedLog:
    """Mixin: ``self.proc``'s merged stdout/stderr as ``self.lines``, with :meth:`wait_line`.

    The class using it sets ``self.proc`` and calls :meth:`follow` once the
    process is started; ``what`` names the process in assertion messages.
    """

    what = "the process"
    proc: asyncio.subprocess.Process | None

    def _init_log(self) -> None:
        self.lines: list[str] = []
        self._cond = asyncio.Condition()
        self._pump: asyncio.Task[None] | None = None

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def follow(self) -> None:
        """Start collecting ``self.proc``'s output."""
        self._pump = asyncio.ensure_future(self._read_log())

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            async with self._cond:
                if len(self.lines) < MAX_LINES:
                    self.lines.append(line.decode("utf-8", errors="replace").rstrip())
                self._cond.notify_all()
        async with self._cond:
            self._cond.notify_all()

    async def wait_line(self, text: str, timeout: float) -> str:
        """The first log line containing ``text``, waiting up to ``timeout`` s."""

        async def waiter() -> str:
            async with self._cond:
                while True:
                    for line in self.lines:
                        if text in line:
                            return line
                    if self._pump is not None and self._pump.done():
                        raise AssertionError(f"{self.what} exited before {text!r}:\n{self.log}")
                    await self._cond.wait()

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {text!r} in the log of {self.what} after {timeout} s:\n{self.log}"
            ) from None

    async def log_ended(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until the output is read to its end, then stop reading."""
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, timeout)
            self._pump.cancel()
