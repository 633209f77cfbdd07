"""The staff dashboard: server-rendered pages over the same services as the API.

Central staff sign in with password and TOTP, find patients, review a wound's
assessments, healing curve and tissue composition, look at a scan in 3D, work the
queues of bookings, orders and payments, and read the audit. Every page applies the
caller's role and clinic scope exactly as the API does, and every view of patient data
is audited like an API read. See docs/dashboard.md.
"""
