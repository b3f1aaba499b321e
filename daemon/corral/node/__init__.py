"""The node's state and services: agents and baselines in memory and on disk (state), policy
into the kernel maps (sync), cgroups and the identity source (cgroups), the periodic tick
(maintenance), and the narrow services the admin API calls (agents, baselines, status, aibom;
the events service is pipeline.feed.EventFeed). corral/app.py wires them."""
