"""The settlement ledger out of Redis: `router ledger export` and what `router ledger` reads.

    entries.py   a stream entry as a record; what a sink is
    postgres.py  the PostgreSQL sink, and reads for `router ledger` (the only psycopg user)
    jsonl.py     the JSONL sink: one file a day, fsynced
    exporter.py  the loop: read a batch, write it everywhere, then acknowledge and trim
    report.py    records as JSON lines or CSV, and the summary of a period

Each module is imported where it is needed: reading the ledger from Redis or a file never
loads the database driver.
"""
