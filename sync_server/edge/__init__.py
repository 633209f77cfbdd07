"""Edge boxes as central sees them: a clinic's box is a device of kind ``edge`` that
relays its clinic's devices, with a self-signed TLS certificate whose fingerprint
central hands to the clinic's devices (they pin it).
"""
