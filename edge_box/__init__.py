"""The clinic edge box: a LAN hub that keeps a clinic syncing when its uplink is down.

`coherency edge run` on a small Linux machine in a clinic: the SDK's encrypted store
(opened with a key file), a local sync server speaking the central server's sync API
to the clinic's devices, and an upstream relay that carries everything to the central
server whenever it is reachable (store and forward). Enrolled like a device, with the
role ``edge``, scoped to its clinic. It advertises itself with zeroconf
(``_coherency._tcp.local.``); devices trust it only if its TLS certificate matches the
fingerprint the central server gave them.
"""

__all__: list[str] = []
