"""The read-only FHIR R4 endpoint (``/fhir/R4``) and the server's FHIR export: a
patient's records gathered from the database (`gathering`), mapped by `fhir_interop`,
searched and read (`services`), served (`routes`)."""
