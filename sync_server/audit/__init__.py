"""Audit: the server's audit log, written from typed events (`events`)."""
