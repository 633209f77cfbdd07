"""Blobs: content-addressed scan files per clinic, the resumable upload state machine,
downloads with ranges, and the backends that hold the bytes (`backends/`).
"""
