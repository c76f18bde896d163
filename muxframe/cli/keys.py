"""
C{keygen} and C{authorize}: identities as PEM files (C{docs/xtmp.md}
section 7.9) and the server's authorized_keys file.
"""

import os

from muxframe.cli.common import CLIError, emitJSON, say


def addKeygen(subparsers):
    parser = subparsers.add_parser(
        "keygen", help="make an identity: a private PEM and its public key",
        description="Make an Ed25519 identity (with --mldsa, Ed25519 + "
                    "ML-DSA-65): NAME.pem (private, mode 0600) and NAME.pub "
                    "(public, for authorized_keys or to pin), and print its "
                    "fingerprint.")
    parser.add_argument("name", nargs="?", default="identity",
                        help="the files' name (default: identity -> "
                             "identity.pem, identity.pub)")
    parser.add_argument("--mldsa", action="store_true",
                        help="add an ML-DSA-65 key (post-quantum signatures)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="encrypt the private PEM with the password in FILE")
    parser.add_argument("--force", action="store_true",
                        help="replace existing files")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=keygen)


def keygen(args):
    from muxframe.xtmp import Identity
    private, public = args.name + ".pem", args.name + ".pub"
    for path in (private, public):
        if os.path.exists(path) and not args.force:
            raise CLIError("%s exists (use --force to replace it)" % (path,))
    password = None
    if args.password_file:
        try:
            with open(args.password_file, "rb") as f:
                password = f.read().rstrip(b"\r\n")
        except OSError as e:
            raise CLIError("--password-file: cannot read %s: %s"
                           % (args.password_file, e.strerror or e))
        if not password:
            raise CLIError("--password-file: %s is empty" % (args.password_file,))
    identity = Identity.generate(withMLDSA=args.mldsa)
    if args.force:
        for path in (private, public):
            if os.path.exists(path):
                os.remove(path)
    identity.savePEM(private, password)
    identity.public.savePEM(public)
    result = {"private": os.path.abspath(private),
              "public": os.path.abspath(public),
              "fingerprint": identity.public.fingerprint,
              "mldsa": args.mldsa, "encrypted": password is not None}
    if args.json:
        emitJSON(result)
    else:
        say("private identity: %s%s" % (private, " (encrypted)" if password
                                        else ""))
        say("public key:       %s" % (public,))
        say("keys:             Ed25519%s" % (" + ML-DSA-65" if args.mldsa
                                             else ""))
        say("fingerprint:      %s" % (identity.public.fingerprint,))
    return 0


def addAuthorize(subparsers):
    parser = subparsers.add_parser(
        "authorize", help="add a public key to an authorized_keys file",
        description="Append a public key (a .pub from keygen) to the "
                    "server's authorized_keys file under a name, after "
                    "checking the file stays valid (no name or key twice). "
                    "Reload the server (SIGHUP) to apply it.")
    parser.add_argument("key", help="the public key file (PEM)")
    parser.add_argument("--name", "-n", required=True,
                        help="the name the server will know the key by")
    parser.add_argument("--authorized-keys", "-f", default="authorized_keys",
                        metavar="FILE",
                        help="the file to add to (default: authorized_keys; "
                             "created if missing)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=authorize)


def _loadPublic(path):
    from muxframe.xtmp import PublicIdentity
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CLIError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        return PublicIdentity.fromPEM(data, path)
    except ValueError as e:
        raise CLIError("%s is not a public key: %s (give the .pub file "
                       "keygen wrote)" % (path, e))


#: Names the server's permissions table gives a meaning of their own.
_RESERVED_NAMES = {
    "default": "entry for every identity without one of its own",
    "anonymous": "name of sessions without a key or token",
}


def authorize(args):
    from muxframe.xtmp import parseAuthorizedKeys
    name = args.name.strip()
    if not name or "\n" in name or "\r" in name:
        raise CLIError("--name: a name is one line of text")
    if name in _RESERVED_NAMES:
        raise CLIError("--name: %r is reserved: the permissions table's %s"
                       % (name, _RESERVED_NAMES[name]))
    if any(c.isspace() or c == ":" for c in name):
        raise CLIError("--name: %r has whitespace or a colon: the server's "
                       "--permission NAME:... could not name it" % (name,))
    key = _loadPublic(args.key)
    path = args.authorized_keys
    existing = b""
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                existing = f.read()
        except OSError as e:
            raise CLIError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        current = parseAuthorizedKeys(existing, path)
    except ValueError as e:
        raise CLIError("%s is not valid now: %s" % (path, e))
    for other, known in current:
        if known == key:
            raise CLIError("%s already authorizes this key%s" % (
                path, " as %s" % (other,) if other else ""))
        if other == name:
            raise CLIError("%s already has a key named %s" % (path, name))
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    updated = existing + b"name: " + name.encode("utf-8") + b"\n" + key.toPEM()
    parseAuthorizedKeys(updated, path)
    temporary = path + ".tmp"
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode),
              "wb") as f:
        f.write(updated)
    os.replace(temporary, path)
    result = {"authorized_keys": os.path.abspath(path), "name": name,
              "fingerprint": key.fingerprint, "keys": len(current) + 1}
    if args.json:
        emitJSON(result)
    else:
        say("authorized %s (%s) in %s: %d keys; reload the server (SIGHUP) "
            "to apply" % (name, key.fingerprint[:16], path, len(current) + 1))
    return 0


__all__ = ["addAuthorize", "addKeygen", "authorize", "keygen"]
