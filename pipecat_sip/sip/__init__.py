"""SIP protocol code (RFC 3261): messages, transactions and dialogs, sans-IO."""
