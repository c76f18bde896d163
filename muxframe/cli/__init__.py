"""
The command line: C{muxframe-xtmp} (C{python3 -m muxframe.cli}).

Subcommands: C{keygen}, C{authorize} (L{keys}); C{connect}, C{send},
C{request}, C{subscribe} (L{session}, an XTMP session of their own);
C{status}, C{sessions}, C{disconnect}, C{broadcast}, C{publish}, C{stats}
(L{admin}, the admin API); C{bench} (L{bench}); C{validate}
(L{validate}); C{capture} (L{capture}).  L{main} parses with argparse;
exit codes are 0 success, 1 failure, 2 usage.  C{docs/operations.md}
section 8 has examples.
"""
