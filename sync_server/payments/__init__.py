"""Payments the server decides: invoices numbered without gaps, payments and refunds
through a payment gateway (a sandbox shipped as a real backend), signed gateway
webhooks, REST idempotency keys and a double-entry ledger."""
