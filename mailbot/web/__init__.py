"""The web side of mailbot: the supervisors' board (:mod:`.app`) and the monitoring endpoints
(:mod:`.monitoring`), served by uvicorn from the daemon's event loop or by ``mailbot web``
(:mod:`.serve`)."""
