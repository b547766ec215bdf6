"""Fleet-wide planning: live inventory from GPU agents, placement of deployments, fleet plans.

Pure core (no I/O): ``models``, ``sizing``, ``topology``, ``placement``, ``packing``, ``pinning``
(artifacts from the engine's renderer), ``reservations``, ``registration``, ``paging``.
Asyncio adapters: ``registry`` (soft state), ``discovery``, ``watcher``, ``inventory_adapter``,
``runtime`` (wiring + settings), ``servicer`` + ``converters`` (gRPC ``FleetService``), ``evaluator``
(model metadata I/O + the engine twin). ``testing``: synthetic capture-shaped hosts and a stand-in twin.
"""
