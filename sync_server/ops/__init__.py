"""Operations: liveness and readiness probes, Prometheus metrics, JSON logs with request
ids, and the middleware that ties them to every request.
"""
