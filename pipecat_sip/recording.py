"""Call recording: one stereo WAV per call (caller left, bot right), written off the event loop.

:class:`CallRecorder` wraps Pipecat's ``AudioBufferProcessor`` (stereo: the
user's ``InputAudioRawFrame`` audio on the left channel, the bot's
``OutputAudioRawFrame`` audio on the right, the two tracks kept time-aligned
by the processor's silence padding). Put :attr:`CallRecorder.processor` at
the end of the pipeline, after ``transport.output()``, where the output
transport hands on each chunk of bot audio as it is played and the caller's
audio arrives as it is heard.

Every second or so (``chunk_s``) the processor hands over the audio of that
time; the recorder appends it to the WAV file in a worker thread of its own
(a daemon thread, so its writes keep their order and a stalled disk holds
up only that recording, never the process's exit), never in the event
loop, and each write leaves a valid WAV header behind (the file is playable
even if the process dies). What the disk cannot take is
dropped, not queued without bound: at most ``max_pending_s`` of audio waits
for the thread. An error opening or writing the file (a full disk, a
read-only or missing directory) is logged once; the recording stops there,
what was written stays, and the call goes on.

File names: ``<UTC time>_<Call-ID>.wav`` in the recording directory, the
Call-ID reduced to letters, digits, ``.``, ``_`` and ``-`` (it comes from
the caller: no path tricks) and cut to 64 characters; an existing file is
never overwritten (``-1``, ``-2``, ... are added).

Example::

    recorder = CallRecorder("/var/spool/calls", call.call_id, sample_rate=16000)
    pipeline = Pipeline([transport.input(), stt, llm, tts, transport.output(),
                         recorder.processor])
    ...
    await recorder.close()  # after the pipeline ended: waits for the last writes
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import re
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from loguru import logger
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

__all__ = ["CallRecorder", "recording_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID = 64


class _SerialWriter:
    """One daemon thread that runs a recording's jobs in order; results come back as futures.

    A job that never returns (a hung disk) holds this thread only: other
    recordings have their own, and the process can still exit.
    """

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(*args)``; the future completes on the running event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """End the thread once the queued jobs are done."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the loop, raised there
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def recording_path(directory: str | Path, call_id: str, when: dt.datetime | None = None) -> Path:
    """The file name for a call's recording: ``<UTC time>_<safe Call-ID>.wav`` in ``directory``.

    Args:
        directory: The recording directory.
        call_id: The SIP Call-ID (any text: reduced to ``[A-Za-z0-9._-]``, 64
            characters at most).
        when: The call's start; default now (UTC).

    Returns:
        The path (not created).
    """
    when = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    safe = _UNSAFE.sub("_", call_id).strip("._")[:_MAX_ID] or "call"
    return Path(directory) / f"{when:%Y%m%dT%H%M%SZ}_{safe}.wav"


def _open_exclusive(path: Path) -> BinaryIO:
    """Create ``path``, or ``path-1``, ``path-2``, ... when it exists (never overwrite)."""
    for n in range(100):
        candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            return open(candidate, "xb")  # closed by the recorder
        except FileExistsError:
            continue
    raise FileExistsError(f"{path} and 99 numbered variants exist")


class CallRecorder:
    """Records one call as a stereo 16-bit WAV: caller on the left, bot on the right.

    Args:
        directory: Where the file goes (see :func:`recording_path`).
        call_id: The SIP Call-ID, for the file name and the log lines.
        sample_rate: Rate of the recording, Hz; default the pipeline's output
            rate. Audio at other rates is resampled by the processor.
        chunk_s: Seconds of audio per write.
        max_pending_s: Most audio, seconds, that may wait for the writer
            thread; more is dropped (and counted in :attr:`dropped_s`).
        opener: Opens the file for writing, binary, given the path (for
            tests); default: create it, never overwrite.
        close_timeout_s: Longest :meth:`close` waits for the queued writes
            and the file's close, seconds; past it (a stalled disk) the
            recording is abandoned with an error line and ``close`` returns.

    Attributes:
        processor: The Pipecat ``AudioBufferProcessor`` to put in the
            pipeline, after ``transport.output()``.
        path: The file the recording goes to (the name actually used once
            opened).
        error: The first error opening or writing the file, or None.
        written_s: Seconds of audio written so far.
        dropped_s: Seconds of audio dropped (the writer was too far behind,
            or the file had failed).
    """

    def __init__(
        self,
        directory: str | Path,
        call_id: str,
        *,
        sample_rate: int | None = None,
        chunk_s: float = 1.0,
        max_pending_s: float = 30.0,
        opener: Callable[[Path], BinaryIO] | None = None,
        close_timeout_s: float = 10.0,
    ):
        if chunk_s <= 0 or max_pending_s <= 0 or close_timeout_s <= 0:
            raise ValueError("chunk_s, max_pending_s and close_timeout_s must be positive")
        self.call_id = call_id
        self.path = recording_path(directory, call_id)
        self.error: BaseException | None = None
        self.written_s = 0.0
        self.dropped_s = 0.0
        self._opener = opener or _open_exclusive
        self._rate = sample_rate
        self._chunk_s = chunk_s
        self._max_pending_s = max_pending_s
        self._pending_s = 0.0
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._futures: set[asyncio.Future] = set()
        self._closed = False
        self._warned_drop = False
        self._close_timeout_s = close_timeout_s
        self._write_error: BaseException | None = None  # the writer thread's own record
        self._writer: _SerialWriter | None = None  # started at the first write
        # buffer_size counts bytes of one (mono, 16-bit) track.
        rate = sample_rate or 16000
        self.processor = AudioBufferProcessor(
            sample_rate=sample_rate,
            num_channels=2,
            buffer_size=max(2, int(rate * chunk_s) * 2),
            auto_start_recording=True,
            name=f"CallRecorder[{call_id}]",
        )
        self.processor.add_event_handler("on_audio_data", self._on_audio_data)

    # --- event loop side ------------------------------------------------------------------

    async def _on_audio_data(
        self, processor: Any, audio: bytes, sample_rate: int, num_channels: int
    ) -> None:
        """AudioBufferProcessor handler: hand the chunk to the writer thread, never wait."""
        if not audio:
            return
        seconds = len(audio) / (2 * num_channels * sample_rate) if sample_rate else 0.0
        if self._closed or self.error is not None:
            self.dropped_s += seconds
            return
        if self._pending_s + seconds > self._max_pending_s:
            self.dropped_s += seconds
            if not self._warned_drop:
                self._warned_drop = True
                logger.warning(
                    f"CallRecorder[{self.call_id}]: {self.path} is not keeping up: "
                    f"dropping audio (more than {self._max_pending_s:g} s waiting)"
                )
            return
        self._pending_s += seconds
        if self._writer is None:
            self._writer = _SerialWriter(f"sip-recording {self.path.name}")  # a safe name
        future = self._writer.submit(self._write, audio, sample_rate, num_channels)
        self._futures.add(future)
        future.add_done_callback(lambda f, s=seconds: self._written(f, s))

    def _written(self, future: asyncio.Future, seconds: float) -> None:
        self._futures.discard(future)
        self._pending_s -= seconds
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.written_s += seconds
            return
        self.dropped_s += seconds
        if self.error is None:
            self.error = error
            logger.error(
                f"CallRecorder[{self.call_id}]: recording to {self.path} stopped: {error}; "
                f"{self.written_s:.1f} s kept, the call goes on"
            )

    async def close(self) -> None:
        """Wait for the queued writes, then close the file (idempotent; never raises)."""
        if self._closed:
            return
        # The processor's last on_audio_data (at EndFrame/CancelFrame) runs in an event
        # task of its own; let those run before waiting for the writes they queue.
        tasks = [task for _, task in getattr(self.processor, "_event_tasks", ())]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout_s
        try:
            while self._futures:
                await asyncio.wait_for(
                    asyncio.gather(*list(self._futures), return_exceptions=True),
                    max(0.0, deadline - loop.time()),
                )
            if self._writer is not None:
                await asyncio.wait_for(
                    self._writer.submit(self._close_file), max(0.0, deadline - loop.time())
                )
        except TimeoutError:  # a stalled disk: the call ends anyway
            if self._writer is not None:
                self._writer.submit(self._abandon)  # if the stuck write ever returns
            logger.error(
                f"CallRecorder[{self.call_id}]: {self.path} did not finish writing within "
                f"{self._close_timeout_s:g} s; the recording is abandoned "
                f"({self.written_s:.1f} s written)"
            )
        except Exception as error:  # a failed close is logged, not raised
            logger.error(f"CallRecorder[{self.call_id}]: closing {self.path} failed: {error}")
        else:
            if self.written_s and self.error is None:
                logger.info(
                    f"CallRecorder[{self.call_id}]: recorded {self.written_s:.1f} s to {self.path}"
                )
        finally:
            if self._writer is not None:
                self._writer.stop()  # the thread ends after its last job (if that ever returns)

    # --- writer thread --------------------------------------------------------------------

    def _write(self, audio: bytes, sample_rate: int, num_channels: int) -> None:
        # Chunks queued before the loop saw the error must not open the file again.
        if self._write_error is not None:
            raise self._write_error
        wav = self._wav
        try:
            if wav is None:
                self._file = self._opener(self.path)
                name = getattr(self._file, "name", None)
                if isinstance(name, str) and Path(name).parent == self.path.parent:
                    self.path = Path(name)  # a numbered variant, if the name was taken
                wav = wave.open(self._file, "wb")  # closed in _close_file
                wav.setnchannels(num_channels)
                wav.setsampwidth(2)
                wav.setframerate(sample_rate)
                self._wav = wav
            # writeframes also rewrites the header's sizes: the file stays a valid WAV.
            wav.writeframes(audio)
            self._file.flush()
        except BaseException as error:
            self._write_error = error
            self._abandon()
            raise

    def _abandon(self) -> None:
        """After an error: close what is open without writing more."""
        file, wav = self._file, self._wav
        self._file = self._wav = None
        if wav is not None:
            wav._file = None  # noqa: SLF001 (so its __del__ writes no header to a dead file)
        if file is not None:
            try:
                file.close()
            except OSError:
                pass

    def _close_file(self) -> None:
        wav, file = self._wav, self._file
        self._wav = self._file = None
        try:
            if wav is not None:
                wav.close()  # patches the header; does not close a file it was given
        finally:
            if file is not None:
                file.close()
