"""One small kit per cloud: how its SDK clients are built and how its errors
become :mod:`skyhop.errors`. Every adapter of that cloud (store, queue, compute,
manifest, key wrapping) builds its clients and translates its errors here, so
they cannot drift apart. A kit imports its cloud's SDK at the top: import it
only from that cloud's adapters.
"""
