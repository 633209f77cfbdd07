"""Capture sources and the point-cloud pipeline that measures a wound.

Not built yet: this package lands with the capture issue (synthetic scans, PLY/PCD
and RGB-D files, ARKit through pyobjus, depth cameras through Open3D). Until then
assessments are written through `edge_sdk.EdgeClient.assessments` with measurements
supplied by the caller.
"""

__all__: list[str] = []
