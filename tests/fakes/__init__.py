"""Fake Twilio and Telegram API servers on loopback, for driving the real SDKs in tests."""
