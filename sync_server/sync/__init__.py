"""Sync: push and pull of replicated records over each clinic's change feed, the
long-poll notifier, the documents and their relational projections, and the staff
reads of those projections.
"""
