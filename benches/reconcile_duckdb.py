"""DuckDB doing the reconciliation classification carepay's bench measures: a full outer join
of the statement file and a CSV export of carepay's side, one category per row, the result
written to CSV. Prints one JSON line: seconds, peak resident memory and counts per category.

Usage: python3 reconcile_duckdb.py STATEMENT.csv CAREPAY.csv OUT.csv
"""

import json
import sys
import time

import duckdb

statement_path, carepay_path, out_path = sys.argv[1:4]

started = time.monotonic()
con = duckdb.connect()
# Two lines of header, then detail lines; the trailer has five columns, padded with NULLs.
con.execute(
    f"""
    CREATE TEMP VIEW statement AS
    SELECT ltrim(c2, '`') AS out_no,
           ltrim(c1, '`') AS operator_ref,
           ltrim(c3, '`') AS kind,
           ltrim(c4, '`') AS status,
           CAST(replace(ltrim(c5, '`'), '.', '') AS BIGINT) AS amount_fen,
           CAST(replace(ltrim(c6, '`'), '.', '') AS BIGINT) AS fee_fen
    FROM read_csv('{statement_path}', skip = 2, header = false, all_varchar = true, null_padding = true,
                  quote = '"', escape = '"', delim = ',',
                  names = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8'])
    WHERE NOT starts_with(c0, '#')
    """
)
con.execute(
    f"""
    CREATE TEMP VIEW carepay AS
    SELECT * FROM read_csv('{carepay_path}', header = true,
        columns = {{'out_no': 'VARCHAR', 'kind': 'VARCHAR', 'status': 'VARCHAR', 'amount_fen': 'BIGINT',
                    'fee_fen': 'BIGINT', 'business_day': 'VARCHAR'}})
    """
)
con.execute(
    f"""
    COPY (
        SELECT CASE
                 WHEN s.out_no IS NULL THEN 'missing_in_statement'
                 WHEN c.out_no IS NULL AND s.out_no = '' THEN 'operator_entry'
                 WHEN c.out_no IS NULL THEN 'missing_in_carepay'
                 WHEN s.kind <> c.kind THEN 'kind_mismatch'
                 WHEN s.status <> c.status THEN 'status_mismatch'
                 WHEN s.amount_fen <> c.amount_fen THEN 'amount_mismatch'
                 WHEN s.fee_fen <> c.fee_fen THEN 'fee_mismatch'
                 ELSE 'matched'
               END AS category,
               coalesce(s.out_no, c.out_no) AS out_no, s.operator_ref,
               s.kind AS statement_kind, s.status AS statement_status, s.amount_fen AS statement_amount_fen,
               s.fee_fen AS statement_fee_fen, c.kind AS carepay_kind, c.status AS carepay_status,
               c.amount_fen AS carepay_amount_fen, c.fee_fen AS carepay_fee_fen, c.business_day
        FROM statement s FULL OUTER JOIN carepay c ON s.out_no = c.out_no
    ) TO '{out_path}' (HEADER, DELIMITER ',')
    """
)
counts = dict(
    con.execute(f"SELECT category, count(*) FROM read_csv('{out_path}', header = true) GROUP BY category").fetchall()
)
seconds = time.monotonic() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec, so it would
# report the carepay bench's own peak.
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_kib": peak_kib, "counts": counts}))
