"""The ground floor every fedfraud package stands on.

It holds what all of them share and nothing else: the product's version, the
one exception hierarchy (:mod:`core.errors`) and the small message-level
conventions the server and the institutions agree on (:mod:`core.wire`). It
imports nothing of fedfraud's own and nothing heavy.
"""

__version__ = "0.1.0"
