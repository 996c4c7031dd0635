"""The error a query raises when the service cannot answer it (pure: no ray). Its
own module so every layer of serving (the predictor, the cross-modal route, the
rerankers) raises it without importing the predictor that maps it to HTTP."""

from __future__ import annotations


class QueryError(ValueError):
    """A request the service cannot answer: `field` names the part at fault,
    `status` is the HTTP status it maps to (4xx)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status
