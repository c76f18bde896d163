"""
The example application's handlers: bundle submission and status for the
XTMP server (the design documents' BundleSubmit / BundleStatus).

The configuration (xtmp-server.yaml) routes message type 0x20 to
L{submit} and 0x21 to L{status}; twistd imports this module from its
PYTHONPATH.  A handler gets the session and the message; what it returns
is the response.
"""

import json
import threading
import time

#: Bundles by id (the application's state; a real one would use a store).
BUNDLES = {}
_LOCK = threading.Lock()


def submit(session, message):
    """
    BundleSubmit (0x20): accept a bundle, answer its receipt, and publish
    its status on C{bundles.<id>.status} now and once it is confirmed.
    """
    bundle = json.loads(message.payload)
    with _LOCK:
        bundleId = "b%d" % (len(BUNDLES) + 1,)
        BUNDLES[bundleId] = {"id": bundleId, "status": "accepted",
                             "owner": session.identity.name,
                             "transactions": len(bundle["transactions"])}
    server = session.factory
    subject = "bundles.%s.status" % (bundleId,)
    server.publish(subject, json.dumps(BUNDLES[bundleId]).encode())

    def confirm():
        BUNDLES[bundleId]["status"] = "confirmed"
        server.publish(subject, json.dumps(BUNDLES[bundleId]).encode())

    session.reactor.callLater(0.05, confirm)
    return json.dumps({"bundle": bundleId, "status": "accepted"}).encode()


def status(session, message):
    """
    BundleStatus (0x21), a blocking handler (it runs in the server's
    thread pool, as a database lookup would): the bundle's record.
    """
    time.sleep(0.01)  # the "database"
    with _LOCK:
        record = BUNDLES.get(message.payload.decode())
    if record is None:
        raise KeyError("no bundle %s" % (message.payload.decode(),))
    return json.dumps(record).encode()
