"""Tests of the host daemon (``relay host``)."""
