"""pipecat-sip: a SIP/RTP transport for Pipecat."""
