#
# The Pipecat quickstart bot, reachable over SIP.
#
#   python bot.py --transport sip      # SIP/RTP on udp 6060 (this project)
#   python bot.py                      # Pipecat's runner: WebRTC client page at :7860
#   python bot.py -t daily | -t twilio | -t telnyx | -t plivo | -t exotel | ...
#   SIP_ROUTES=routes.toml             # a prompt, voice and greeting per dialled number
#
"""Pipecat quickstart bot (Deepgram STT, OpenAI LLM, Cartesia TTS, Silero VAD) over SIP.

Without DEEPGRAM_API_KEY, OPENAI_API_KEY or CARTESIA_API_KEY the bot runs as
a keyless echo bot: a short spoken greeting, then the caller hears themselves;
key presses are logged.

With SIP_ROUTES naming a TOML file (see pipecat_sip/routes.py), each SIP call
is routed by the number or user it dialled before it is answered: its own
system prompt, Cartesia voice and greeting, a reject code, or a redirect.
On Pipecat Cloud, a session body asking for SIP (a dial-out, or a
registration) runs this same bot on a SIPTransport (see README, "Pipecat Cloud").
With SIP_RECORD_DIR set, each SIP call is recorded there as a stereo WAV
(caller left, bot right), named by time and Call-ID (pipecat_sip.recording).

With TRANSFER_TARGET set (a SIP URI, e.g. sip:agent@pbx.example.com), the AI
agent on a SIP call gets a ``transfer_to_human`` function: when the caller
asks for a person, the LLM calls it, the bot says so and hands the call over
with a SIP REFER (blind transfer); if the transfer fails the bot says sorry
and carries on.
"""

import os
import sys

from dotenv import load_dotenv
from loguru import logger
from pipecat.frames.frames import (
    LLMMessagesAppendFrame,
    LLMRunFrame,
    OutputAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_sip import SIPParams
from pipecat_sip.echo import EchoProcessor, load_greeting
from pipecat_sip.routes import RoutesError, load_routes
from pipecat_sip.runner import SIPRunnerArguments, create_transport

load_dotenv(override=True)

try:
    ROUTES = load_routes(os.getenv("SIP_ROUTES"))
except RoutesError as exc:
    if __name__ == "__main__":
        sys.exit(f"error: {exc}")  # one line, exit status 1
    raise

AI_KEYS = ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY")

SYSTEM_PROMPT = (
    "You are a friendly AI assistant on a phone call. Keep your answers short and "
    "conversational; your words are spoken aloud, so avoid lists, symbols and emojis."
)


TRANSFER_PROMPT = (
    " If the caller asks to speak to a person, or you cannot help, call the "
    "transfer_to_human function."
)


def transfer_target() -> str | None:
    """Where ``transfer_to_human`` sends the caller (TRANSFER_TARGET), or None."""
    return os.getenv("TRANSFER_TARGET") or None


def transfer_tool(transport: BaseTransport, target: str):
    """The ``transfer_to_human`` LLM function: its schema and its handler.

    The handler speaks a line, then pushes a ``SIPTransferFrame``: the output
    transport sends the REFER once that line has been played. On success the
    call ends ("transferred"); on failure ``on_transfer_failed`` asks the LLM
    to apologise and go on.
    """
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.frames.frames import FunctionCallResultProperties

    from pipecat_sip.transport import SIPTransferFrame

    schema = FunctionSchema(
        name="transfer_to_human",
        description="Transfer the caller to a human agent.",
        properties={"reason": {"type": "string", "description": "Why the caller wants a person."}},
        required=[],
    )

    async def transfer_to_human(params) -> None:
        reason = params.arguments.get("reason", "")
        logger.info(f"transfer_to_human ({reason!r}) to {target}")
        await params.llm.push_frame(TTSSpeakFrame("One moment, I'll put you through."))
        await params.llm.push_frame(SIPTransferFrame(target))
        await params.result_callback(
            {"status": "transferring"}, properties=FunctionCallResultProperties(run_llm=False)
        )

    return schema, transfer_to_human


DEFAULT_VOICE = "71a7ad14-091c-4e8e-a314-022ece01c121"
DEFAULT_GREETING = "Say hello and briefly introduce yourself."


def route_call(info):
    """The runner's routing hook: what SIP_ROUTES says for this call (None: accept)."""
    return ROUTES.decide(info) if ROUTES is not None else None


def missing_ai_keys() -> list[str]:
    """The API keys of the AI agent that are not set."""
    return [key for key in AI_KEYS if not os.getenv(key)]


def _webrtc_params():
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True)


def _daily_params():
    from pipecat.transports.daily.transport import DailyParams

    return DailyParams(audio_in_enabled=True, audio_out_enabled=True)


def _websocket_params():
    # Twilio, Telnyx, Plivo and Exotel: Pipecat sets the serializer for each.
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

    return FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)


def _livekit_params():
    from pipecat.transports.livekit.transport import LiveKitParams

    return LiveKitParams(audio_in_enabled=True, audio_out_enabled=True)


# One entry per transport Pipecat's runner offers (vonage falls back to the
# webrtc entry); create_transport() picks the one the runner asked for.
transport_params = {
    "sip": lambda: SIPParams(),
    "webrtc": _webrtc_params,
    "daily": _daily_params,
    "twilio": _websocket_params,
    "telnyx": _websocket_params,
    "plivo": _websocket_params,
    "exotel": _websocket_params,
    "websocket": _websocket_params,
    "livekit": _livekit_params,
    "moq": _webrtc_params,
}


def _ai_pipeline(
    transport: BaseTransport, settings: dict | None = None, transfer_to: str | None = None
):
    settings = settings or {}
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService

    stt = DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])
    prompt = settings.get("system_prompt") or SYSTEM_PROMPT
    tools = None
    if transfer_to:
        from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

        schema, handler = transfer_tool(transport, transfer_to)
        tools = ToolsSchema(standard_tools=[schema])
        prompt += TRANSFER_PROMPT
    llm = OpenAILLMService(
        api_key=os.environ["OPENAI_API_KEY"],
        settings=OpenAILLMService.Settings(system_instruction=prompt),
    )
    if transfer_to:
        llm.register_function("transfer_to_human", handler)
    tts = CartesiaTTSService(
        api_key=os.environ["CARTESIA_API_KEY"],
        settings=CartesiaTTSService.Settings(
            voice=settings.get("voice") or os.getenv("CARTESIA_VOICE_ID", DEFAULT_VOICE)
        ),
    )
    greeting = settings.get("greeting")
    context = LLMContext(tools=tools) if tools is not None else LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )

    async def greet(worker: PipelineWorker) -> None:
        if transfer_to:

            @transport.event_handler("on_transfer_failed")
            async def on_transfer_failed(transport, status_code):
                note = f"The transfer failed ({status_code or 'no answer'}). Apologise, go on."
                await worker.queue_frames(
                    [LLMMessagesAppendFrame([{"role": "user", "content": note}], run_llm=True)]
                )

        if greeting:  # the route's own words, spoken as they are
            context.add_message({"role": "assistant", "content": greeting})
            await worker.queue_frames([TTSSpeakFrame(greeting)])
            return
        context.add_message({"role": "user", "content": DEFAULT_GREETING})
        await worker.queue_frames([LLMRunFrame()])

    return pipeline, greet


def _echo_pipeline(transport: BaseTransport, record: bool = False):
    echo = EchoProcessor(pass_input=record)  # a recorder at the end needs the caller's audio
    pipeline = Pipeline([transport.input(), echo, transport.output()])
    greeting, greeting_rate = load_greeting()

    async def greet(worker: PipelineWorker) -> None:
        echo.mute_for(len(greeting) / 2 / greeting_rate)
        await worker.queue_frames(
            [OutputAudioRawFrame(audio=greeting, sample_rate=greeting_rate, num_channels=1)]
        )

    return pipeline, greet


def _call_recorder(runner_args, sample_rate: int | None):
    """A CallRecorder for this SIP call when SIP_RECORD_DIR is set, else None."""
    directory = os.getenv("SIP_RECORD_DIR")
    call = getattr(runner_args, "call", None)
    if not directory or call is None:
        return None
    from pipecat_sip.recording import CallRecorder

    return CallRecorder(directory, call.call_id, sample_rate=sample_rate)


async def run_bot(
    transport: BaseTransport,
    runner_args,
    sample_rate: int | None = None,
    settings: dict | None = None,
):
    """Run the bot on `transport` until the call or session ends.

    Args:
        transport: The session's transport.
        runner_args: The runner arguments (for the idle timeout and SIGINT).
        sample_rate: A phone call's codec rate, Hz: the pipeline runs at it.
        settings: Per-call settings from SIP_ROUTES (system_prompt, voice, greeting).
    """
    settings = settings or {}
    recorder = _call_recorder(runner_args, sample_rate)
    if missing_ai_keys():
        pipeline, greet = _echo_pipeline(transport, record=recorder is not None)
        # No LLM, no turns to track, nothing to measure: the echo bot runs lean
        # (about half the CPU per call of the full set of observers).
        options = {"enable_rtvi": False, "enable_turn_tracking": False}
        metrics = False
    else:
        # Transfers need a SIP call: on other transports the agent has no such function.
        target = transfer_target() if isinstance(runner_args, SIPRunnerArguments) else None
        pipeline, greet = _ai_pipeline(transport, settings, target)
        options, metrics = {}, True
    if recorder is not None:  # after transport.output(): hears both sides as played
        pipeline = Pipeline([pipeline, recorder.processor])
    rates = {}
    if sample_rate:  # a phone call: run at the codec rate so nothing is resampled
        rates = {"audio_in_sample_rate": sample_rate, "audio_out_sample_rate": sample_rate}
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=metrics, **rates),
        idle_timeout_secs=runner_args.pipeline_idle_timeout_secs,
        **options,
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        logger.info("Client connected")
        await greet(worker)

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info("Client disconnected")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        if recorder is not None:
            await recorder.close()


async def bot(runner_args):
    """Main bot entry point, called once per session (for SIP: once per call)."""
    transport = await create_transport(runner_args, transport_params)
    sample_rate, settings = None, {}
    if isinstance(runner_args, SIPRunnerArguments) and runner_args.call is not None:
        sample_rate = runner_args.call.info.sample_rate
        settings = runner_args.settings
    await run_bot(transport, runner_args, sample_rate, settings)


if __name__ == "__main__":
    from pipecat_sip.runner import main

    if missing := missing_ai_keys():
        logger.warning(
            f"Missing {', '.join(missing)}: running as a keyless echo bot. "
            "Set them (see .env.example) for the AI agent."
        )
    main()
