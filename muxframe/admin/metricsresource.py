"""
The admin service's C{/metrics} resource.

prometheus_client's own Twisted resource wraps its WSGI application, and
twisted.web's WSGI container reads the peer address's host, which the peer
of a C{unix:} socket has not: every scrape of an admin service on a UNIX
socket was a 500.  This one renders the same exposition without WSGI.

Rules:
  - GET and HEAD only (405 with C{Allow} otherwise, as the admin API);
    a path below it is a JSON 404, as below any admin leaf;
  - the format follows the scraper's C{Accept} (Prometheus text, or
    OpenMetrics when asked), and C{name[]} arguments select families, as
    prometheus_client's application does;
  - the registry renders in the reactor's thread pool (its role collector
    takes its snapshot in the reactor thread), and nothing is written to a
    request whose client went away meanwhile.
"""

from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from muxframe.admin.http import errorBody, logFault, notFound, respond


class MetricsResource(Resource):
    """
    C{registry} (a prometheus_client C{CollectorRegistry}) as Prometheus
    exposition, rendered in C{reactor}'s thread pool.
    """

    isLeaf = True

    def __init__(self, registry, reactor):
        Resource.__init__(self)
        self.registry = registry
        self.reactor = reactor

    def render(self, request):
        """
        GET or HEAD: the exposition, once rendered; other methods: 405.
        """
        if request.postpath not in ([], [b""]):
            # (/metrics/anything: not a resource, as under the API.)
            return notFound(request).render(request)
        if request.method not in (b"GET", b"HEAD"):
            return respond(request, 405, errorBody(
                405, "method not allowed: %s"
                % (request.method.decode("ascii", "replace"),)),
                headers=[(b"allow", b"GET, HEAD")])
        # (prometheus_client 0.4 names openmetrics.exposition without
        # importing it.)
        import prometheus_client.openmetrics.exposition  # noqa: F401
        from prometheus_client.exposition import choose_encoder
        encoder, contentType = choose_encoder(
            (request.getHeader(b"accept") or b"").decode("latin-1"))
        names = [n.decode("utf-8", "replace")
                 for n in request.args.get(b"name[]", [])]
        registry = self.registry.restricted_registry(names) if names \
            else self.registry
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def rendered(body):
            if gone:
                return
            request.setHeader(b"content-type", contentType.encode("ascii"))
            request.write(body)
            request.finish()

        def failed(failure):
            logFault("rendering /metrics failed", failure)
            if not gone:
                request.write(respond(request, 500,
                                      errorBody(500, "internal error")))
                request.finish()

        deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                          encoder, registry).addCallbacks(rendered, failed)
        return NOT_DONE_YET


__all__ = ["MetricsResource"]
