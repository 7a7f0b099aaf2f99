"""The ground floor every fedfraud package stands on.

It holds what all of them share and nothing else: the product's version, the
one exception hierarchy and its exit codes (:mod:`core.errors`), the small
message-level conventions the server and the institutions agree on
(:mod:`core.wire`) and where every party's files live (:mod:`core.layout`).
It imports nothing of fedfraud's own and nothing heavy.
"""

__version__ = "0.1.0"
