"""The resident worker (`fim-server serve`): one model behind a ZeroMQ ROUTER socket.

    server (sockets, replies) -> scheduler (queue, latest-wins, deadlines, micro-batches) -> engine
    stats: what a health message reports
"""
