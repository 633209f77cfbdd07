"""The clinic edge box: a LAN hub that keeps a clinic syncing when its uplink is down.

`coherency edge run` on a small Linux machine in a clinic: the SDK's encrypted store
(opened with a key file), a local sync server speaking the central server's sync API
to the clinic's devices, and an upstream relay that carries everything to the central
server whenever it is reachable (store and forward). Enrolled like a device, with the
role ``edge``, scoped to its clinic. It advertises itself with zeroconf
(``_coherency._tcp.local.``); devices trust it only if its TLS certificate matches the
fingerprint the central server gave them.

    box = EdgeBox.init(folder, key_file)          # once
    box.enroll(central_url, edge_token)           # once, with an admin's edge token
    with EdgeBox.open(folder, key_file) as box, BoxService(box) as service:
        ...                                        # serving on service.url
"""

from edge_box._advertise import PROTOCOL_VERSION, SERVICE_TYPE, Advertiser
from edge_box._box import BoxInputError, DeviceSeen, EdgeBox, EdgeStatus
from edge_box._relay import Relay
from edge_box._service import BoxService
from edge_box._tls import make_certificate

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advertiser",
    "BoxInputError",
    "BoxService",
    "DeviceSeen",
    "EdgeBox",
    "EdgeStatus",
    "Relay",
    "make_certificate",
]
