"""The operators' HTTP API and web console (``vpp serve``): auth, endpoints, pages, live events."""
