"""The institution side: the Flower ClientApp, local training and the gate.

Everything an institution decides about a round (take part or refuse) goes
through :mod:`client.gate`, the one place to extend with new rules.
"""
