"""What a run of the federation is: its typed settings, read once from Flower's run config.

Both apps (``server/`` and ``client/``) and the operations layer (``fedfraud/``)
read a run through :class:`federation.settings.RunSettings`; nothing else
parses raw run-config keys. The package stands above the domain packages
(``fraud/``, ``secagg/``) whose settings it gathers, and below the apps.
"""
