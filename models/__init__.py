"""Model artifacts and the recipe that trains, exports, quantizes and evaluates them.

Not built yet: this package lands with the on-device model issue.
"""

__all__: list[str] = []
