"""The errors of the FHIR mapping.

FhirError                 anything this package refuses (malformed input, an id FHIR
|                         cannot carry, a bundle that is not one)
+-- FhirValidationError   a resource or Bundle that does not validate against the
                          FHIR R4B models; `.problems` lists each problem
"""

from __future__ import annotations

__all__ = ["FhirError", "FhirValidationError"]


class FhirError(Exception):
    """The FHIR mapping refused its input."""


class FhirValidationError(FhirError):
    """A resource (or Bundle) does not validate against the FHIR R4B models.

    Attributes:
        problems: One line per problem, "<element path>: <what is wrong>".
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message + (": " + "; ".join(problems[:5]) if problems else ""))
        self.problems = problems
