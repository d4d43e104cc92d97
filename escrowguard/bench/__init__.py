"""``escrowguard bench``: the scorer measured against a bare Faust agent and a naive scorer.

``harness`` runs the phases, ``bare`` and ``naive`` are the two yardsticks (child
processes), ``latency`` measures produce-to-output latency under offered load, ``measure``
and ``status`` observe the processes, ``profile`` samples a worker with py-spy, ``report``
builds the JSON and the table. docs/performance.md has the method and the figures.
"""
