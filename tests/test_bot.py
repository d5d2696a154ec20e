"""bot.py builds its pipelines with the Pipecat 1.14 API (no service is contacted)."""

import importlib
import sys
from pathlib import Path

import pytest
from pipecat.transports.base_transport import TransportParams

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bot_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("PYTHON_DOTENV_DISABLED", "1")
    sys.modules.pop("bot", None)
    return importlib.import_module("bot")


class _FakeTransport:
    def __init__(self):
        from pipecat.processors.frame_processor import FrameProcessor

        self._in, self._out = FrameProcessor(), FrameProcessor()

    def input(self):
        return self._in

    def output(self):
        return self._out


def test_missing_keys_select_the_echo_bot(bot_module, monkeypatch):
    for key in bot_module.AI_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert bot_module.missing_ai_keys() == list(bot_module.AI_KEYS)
    pipeline, greet = bot_module._echo_pipeline(_FakeTransport())
    assert callable(greet) and len(pipeline.processors) >= 3


def test_ai_pipeline_builds_with_keys(bot_module, monkeypatch):
    for key in bot_module.AI_KEYS:
        monkeypatch.setenv(key, "test-key")
    assert bot_module.missing_ai_keys() == []
    pipeline, greet = bot_module._ai_pipeline(_FakeTransport())
    names = " ".join(type(p).__name__ for p in pipeline.processors)
    for service in ("DeepgramSTTService", "OpenAILLMService", "CartesiaTTSService"):
        assert service in names, names


def test_transport_params_has_a_sip_entry(bot_module):
    from pipecat_sip import SIPParams

    assert isinstance(bot_module.transport_params["sip"](), SIPParams)
    assert isinstance(bot_module.transport_params["webrtc"](), TransportParams)


def test_ai_pipeline_offers_transfer_to_human_with_a_target(bot_module, monkeypatch):
    for key in bot_module.AI_KEYS:
        monkeypatch.setenv(key, "test-key")
    monkeypatch.setenv("TRANSFER_TARGET", "sip:agent@pbx.example.com")
    assert bot_module.transfer_target() == "sip:agent@pbx.example.com"
    pipeline, _ = bot_module._ai_pipeline(_FakeTransport(), None, bot_module.transfer_target())
    llm = next(p for p in pipeline.processors if type(p).__name__ == "OpenAILLMService")
    assert llm.has_function("transfer_to_human")
    schema, handler = bot_module.transfer_tool(_FakeTransport(), "sip:agent@pbx.example.com")
    assert schema.name == "transfer_to_human" and callable(handler)


async def test_transfer_to_human_speaks_then_pushes_the_transfer_frame(bot_module):
    from pipecat.frames.frames import TTSSpeakFrame

    from pipecat_sip.transport import SIPTransferFrame

    pushed, results = [], []

    class Params:
        arguments = {"reason": "billing"}

        class llm:  # noqa: N801 - stands in for the LLM service
            @staticmethod
            async def push_frame(frame):
                pushed.append(frame)

        @staticmethod
        async def result_callback(result, properties=None):
            results.append((result, properties.run_llm))

    _, handler = bot_module.transfer_tool(_FakeTransport(), "sip:agent@pbx.example.com")
    await handler(Params)
    assert isinstance(pushed[0], TTSSpeakFrame) and isinstance(pushed[1], SIPTransferFrame)
    assert pushed[1].target == "sip:agent@pbx.example.com"
    assert results == [({"status": "transferring"}, False)]
