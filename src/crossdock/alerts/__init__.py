"""Alerts: tell a person when records fail, runs break, routes pause, circuits open or work backs up.

The leader (``serve``) looks at the database every few seconds (:mod:`.rules`), so failures settled by any worker
process count, turns what it finds into one message per route and digest window (:mod:`.messages`), queues it in
the store and sends it to each channel with retries (:mod:`.channels`, :mod:`.service`).
"""
