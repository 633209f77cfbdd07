"""Commerce the server decides: the supplies catalogue, stock by lot and location,
orders from devices (reserved first-expiry-first-out, held until paid) and
prescriptions for prescription-only supplies."""
