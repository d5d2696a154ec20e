"""RTP (RFC 3550) and RFC 4733 telephone events, sans-IO."""
