"""Drop-in for the original Compendium relay client.

Change ``from compendium.wss.client import WssClient, WssClientListener`` to
``from compendium_wss.compat.client import ...`` (and ``compendium.wss.message`` to
``compendium_wss.compat.message``), or import everything from here.
"""

from .client import DEFAULT_ADDRESS, WssClient, WssClientListener
from .message import DELIVER, ERROR, INIT, INITRESP, MSG, ROUTE, TYPE, Message

__all__ = [
    "DEFAULT_ADDRESS",
    "DELIVER",
    "ERROR",
    "INIT",
    "INITRESP",
    "MSG",
    "Message",
    "ROUTE",
    "TYPE",
    "WssClient",
    "WssClientListener",
]
