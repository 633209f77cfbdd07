"""Identity: organisations and clinics (tenancy), staff users, device enrolment and
login, refresh-token sessions, the server's signing key and its JWT access tokens, and
the admin routes that manage them.
"""
