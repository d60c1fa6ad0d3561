"""``fanout backfill``: load a table's current items into sinks, stitched to its stream.

``budget`` paces the Scan by read capacity, ``records`` turns items into stream records,
``segments`` scans one segment and hands its pages to the sinks, ``runner`` fixes the stream
position, starts or resumes a backfill and saves its progress, ``report`` shows it.
The argument for why no change is lost or overwritten is in ``docs/backfill.md``.
"""
