"""A call handler for interop tests: answer, then run a real Pipecat echo pipeline.

``Pipeline([transport.input(), EchoProcessor(), transport.output()])`` with a
`SIPTransport` at the call's codec rate, as ``bot.py`` runs it without AI
keys. The handler records every call, its end reason, the keys the pipeline
saw (``EchoProcessor.digits``) and any error, for the test to assert on.
"""

from __future__ import annotations

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.call import SIPCall
from pipecat_sip.echo import EchoProcessor
from pipecat_sip.transport import SIPParams, SIPTransport


class EchoBot:
    """Call handler: answer (incoming) and echo until the call ends.

    Attributes:
        calls: Every call handled, in order.
        echoes: The `EchoProcessor` of each call (``digits`` lists the keys it saw).
        ended: Call-ID to end reason (``remote_bye``, ``local_bye``, ...).
        finished: Number of pipelines that have stopped.
        errors: Exceptions raised by a handler.
    """

    def __init__(self, *, answer: bool = True) -> None:
        self.answer = answer
        self.calls: list[SIPCall] = []
        self.echoes: list[EchoProcessor] = []
        self.ended: dict[str, str] = {}
        self.finished = 0
        self.errors: list[BaseException] = []

    async def __call__(self, call: SIPCall) -> None:
        """Answer ``call`` (if incoming and ``answer``) and echo until it ends."""
        self.calls.append(call)
        call.add_ended_handler(lambda reason: self.ended.__setitem__(call.call_id, reason))
        try:
            if self.answer and call.info.direction == "inbound":
                await call.answer()
            await self.run(call)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.finished += 1

    async def run(self, call: SIPCall) -> None:
        """Run the echo pipeline on an answered ``call`` until it ends."""
        transport = SIPTransport(call, SIPParams())
        echo = EchoProcessor()
        self.echoes.append(echo)
        rate = call.info.sample_rate
        worker = PipelineWorker(
            Pipeline([transport.input(), echo, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        if call.ended:
            return
        await runner.run()

    def digits(self, index: int = 0) -> list[str]:
        """The keys the ``index``-th call's pipeline saw."""
        return list(self.echoes[index].digits) if index < len(self.echoes) else []
