//! The double-entry ledger on disk: accounts, journal entries and their postings.
//!
//! Postings are the truth. A no-overdraft account also carries running `debits_fen` /
//! `credits_fen` totals, changed only here and only in the transaction that writes the
//! postings, so its guard is one compare-and-set UPDATE instead of a read-then-write race.
//! Accounts that may go negative (clearing accounts every payment touches) keep no running
//! totals: updating one row per payment would serialise every payment in the district on
//! that row. Their balances are summed from postings when asked.
//! [`Store::verify_ledger`] recomputes every stored total from the postings.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sqlx::{AnyConnection, Row as _};

use super::{Store, StoreError};
use crate::domain::ids::EntryId;
use crate::domain::ledger::{AccountCode, JournalEntry, LedgerError, OverdraftPolicy, Side};
use crate::domain::time::UnixMs;

/// Running totals of one account. Balance is credits minus debits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountTotals {
    pub debits_fen: i64,
    pub credits_fen: i64,
}

impl AccountTotals {
    pub fn balance_fen(self) -> i64 {
        self.credits_fen - self.debits_fen
    }
}

/// What a business event is, for the ledger: a kind (`payment`, `refund`, ...) and the id
/// of the record it books. The pair is unique, so an event cannot be booked twice.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub kind: &'a str,
    pub reference: &'a str,
    pub memo: &'a str,
}

/// Accounts known to be open, with their overdraft policy. Accounts are never closed and
/// their policy never changes, so once an account's opening has committed, later entries
/// need not open it again, and a clearing account's entries need no UPDATE at all.
#[derive(Clone, Debug, Default)]
pub struct KnownAccounts(Arc<Mutex<HashMap<String, OverdraftPolicy>>>);

/// Most accounts remembered; past it the cache stops growing and lookups fall back to SQL.
const MAX_KNOWN_ACCOUNTS: usize = 100_000;

impl KnownAccounts {
    pub fn policy(&self, code: &AccountCode) -> Option<OverdraftPolicy> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(code.as_str()).copied()
    }

    /// Call only after the transaction that opened these accounts committed.
    pub fn remember(&self, accounts: &[(AccountCode, OverdraftPolicy)]) {
        let mut known = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (code, policy) in accounts {
            if known.len() < MAX_KNOWN_ACCOUNTS {
                known.insert(code.as_str().to_owned(), *policy);
            }
        }
    }
}

/// A disagreement between an account's running totals and the sum of its postings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerMismatch {
    pub account: String,
    pub stored: AccountTotals,
    pub recomputed: AccountTotals,
}

pub(super) fn overdraft_text(policy: OverdraftPolicy) -> &'static str {
    match policy {
        OverdraftPolicy::Allowed => "allowed",
        OverdraftPolicy::Forbidden => "forbidden",
    }
}

impl Store {
    /// Open an account if it does not exist yet; opening it again changes nothing.
    pub async fn open_ledger_account(
        &self,
        code: &AccountCode,
        policy: OverdraftPolicy,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        open_account_in(&mut conn, code, policy, now).await
    }

    /// Book `entry` in its own transaction.
    pub async fn post_journal_entry(
        &self,
        what: EntryRef<'_>,
        entry: &JournalEntry,
        now: UnixMs,
    ) -> Result<EntryId, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = post_in(&mut tx, what, entry, now, &self.known_accounts).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// An account's totals: stored for guarded accounts, summed from postings otherwise.
    pub async fn account_totals(&self, code: &AccountCode) -> Result<Option<AccountTotals>, StoreError> {
        // CAST: PostgreSQL's SUM(BIGINT) is NUMERIC, which the portable driver cannot read.
        let row = sqlx::query(
            "SELECT a.overdraft, a.debits_fen, a.credits_fen, \
               CAST(COALESCE((SELECT SUM(amount_fen) FROM postings WHERE account_code = a.code AND side = 'debit'), 0) AS BIGINT), \
               CAST(COALESCE((SELECT SUM(amount_fen) FROM postings WHERE account_code = a.code AND side = 'credit'), 0) AS BIGINT) \
             FROM ledger_accounts a WHERE a.code = $1",
        )
        .bind(code.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let guarded = row.try_get::<String, _>(0)? == overdraft_text(OverdraftPolicy::Forbidden);
        let (debits, credits) = if guarded { (1, 2) } else { (3, 4) };
        Ok(Some(AccountTotals { debits_fen: row.try_get(debits)?, credits_fen: row.try_get(credits)? }))
    }

    /// Recompute every account's totals from its postings, and every entry's balance.
    /// An empty answer means the ledger is consistent.
    pub async fn verify_ledger(&self) -> Result<Vec<LedgerMismatch>, StoreError> {
        // CAST: PostgreSQL's SUM(BIGINT) is NUMERIC, which the portable driver cannot read.
        let rows = sqlx::query(
            "SELECT a.code, a.debits_fen, a.credits_fen, \
               CAST(COALESCE(SUM(CASE WHEN p.side = 'debit' THEN p.amount_fen ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN p.side = 'credit' THEN p.amount_fen ELSE 0 END), 0) AS BIGINT) \
             FROM ledger_accounts a LEFT JOIN postings p ON p.account_code = a.code \
             WHERE a.overdraft = 'forbidden' GROUP BY a.code, a.debits_fen, a.credits_fen ORDER BY a.code",
        )
        .fetch_all(self.pool())
        .await?;
        let mut mismatches = Vec::new();
        for row in rows {
            let stored = AccountTotals { debits_fen: row.try_get(1)?, credits_fen: row.try_get(2)? };
            let recomputed = AccountTotals { debits_fen: row.try_get(3)?, credits_fen: row.try_get(4)? };
            if stored != recomputed {
                mismatches.push(LedgerMismatch { account: row.try_get(0)?, stored, recomputed });
            }
        }
        let unbalanced = sqlx::query(
            "SELECT entry_id FROM postings GROUP BY entry_id \
             HAVING SUM(CASE WHEN side = 'debit' THEN amount_fen ELSE 0 END) \
                 <> SUM(CASE WHEN side = 'credit' THEN amount_fen ELSE 0 END)",
        )
        .fetch_all(self.pool())
        .await?;
        for row in unbalanced {
            let entry: String = row.try_get(0)?;
            mismatches.push(LedgerMismatch {
                account: format!("entry {entry} is unbalanced"),
                stored: AccountTotals { debits_fen: 0, credits_fen: 0 },
                recomputed: AccountTotals { debits_fen: 0, credits_fen: 0 },
            });
        }
        Ok(mismatches)
    }
}

/// [`Store::open_ledger_account`] inside the caller's transaction.
pub(crate) async fn open_account_in(
    conn: &mut AnyConnection,
    code: &AccountCode,
    policy: OverdraftPolicy,
    now: UnixMs,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ledger_accounts (code, overdraft, debits_fen, credits_fen, created_at_ms) \
         VALUES ($1, $2, 0, 0, $3) ON CONFLICT (code) DO NOTHING",
    )
    .bind(code.as_str())
    .bind(overdraft_text(policy))
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`open_account_in`] for several accounts in one statement (none: no statement).
pub(crate) async fn open_accounts_in(
    conn: &mut AnyConnection,
    accounts: &[(AccountCode, OverdraftPolicy)],
    now: UnixMs,
) -> Result<(), StoreError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = accounts
        .iter()
        .map(|(code, policy)| serde_json::json!({"code": code.as_str(), "overdraft": overdraft_text(*policy)}))
        .collect();
    let select = if super::Backend::of(conn) == super::Backend::Postgres {
        "SELECT r.code, r.overdraft, 0, 0, $2 FROM json_to_recordset($1::json) AS r(code TEXT, overdraft TEXT)"
    } else {
        // `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
        "SELECT value ->> 'code', value ->> 'overdraft', 0, 0, $2 FROM json_each($1) WHERE true"
    };
    let sql = format!(
        "INSERT INTO ledger_accounts (code, overdraft, debits_fen, credits_fen, created_at_ms) {select} \
         ON CONFLICT (code) DO NOTHING"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Book `entry` inside the caller's transaction, so the posting and the state change it
/// records commit or roll back together. Accounts are updated in code order, so two
/// concurrent entries touching the same accounts lock them in the same order and cannot
/// deadlock.
pub(crate) async fn post_in(
    conn: &mut AnyConnection,
    what: EntryRef<'_>,
    entry: &JournalEntry,
    now: UnixMs,
    known: &KnownAccounts,
) -> Result<EntryId, StoreError> {
    let id = EntryId::generate();
    sqlx::query("INSERT INTO journal_entries (id, kind, reference, memo, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_str())
        .bind(what.kind)
        .bind(what.reference)
        .bind(what.memo)
        .bind(now.0)
        .execute(&mut *conn)
        .await?;

    // All postings in one statement: one round trip however many there are (at most
    // MAX_POSTINGS_PER_ENTRY, so the statement is bounded).
    let postings = entry.postings();
    let placeholders: Vec<String> = (0..postings.len())
        .map(|n| format!("(${}, ${}, ${}, ${}, ${})", n * 5 + 1, n * 5 + 2, n * 5 + 3, n * 5 + 4, n * 5 + 5))
        .collect();
    let sql = format!(
        "INSERT INTO postings (entry_id, seq, account_code, side, amount_fen) VALUES {}",
        placeholders.join(", ")
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    let mut per_account: BTreeMap<&AccountCode, AccountTotals> = BTreeMap::new();
    for (seq, posting) in postings.iter().enumerate() {
        insert = insert
            .bind(id.as_str())
            .bind(seq as i64)
            .bind(posting.account.as_str())
            .bind(posting.side.as_str())
            .bind(posting.amount.fen());
        let totals = per_account.entry(&posting.account).or_insert(AccountTotals { debits_fen: 0, credits_fen: 0 });
        match posting.side {
            Side::Debit => totals.debits_fen += posting.amount.fen(),
            Side::Credit => totals.credits_fen += posting.amount.fen(),
        }
    }
    insert.execute(&mut *conn).await.map_err(|error| match &error {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
            // Name the first account not known to be open.
            let missing = postings.iter().find(|p| known.policy(&p.account).is_none()).unwrap_or(&postings[0]);
            StoreError::Ledger(LedgerError::UnknownAccount(missing.account.clone()))
        }
        _ => StoreError::from(error),
    })?;

    apply_account_totals(conn, &per_account, known).await?;
    Ok(id)
}

/// Moves the running totals of each guarded account by its summed delta, in code order (the
/// lock order every writer shares); `Overdraft` when a guard holds.
async fn apply_account_totals(
    conn: &mut AnyConnection,
    per_account: &BTreeMap<&AccountCode, AccountTotals>,
    known: &KnownAccounts,
) -> Result<(), StoreError> {
    for (account, delta) in per_account {
        if known.policy(account) == Some(OverdraftPolicy::Allowed) {
            continue;
        }
        let updated = sqlx::query(
            "UPDATE ledger_accounts SET debits_fen = debits_fen + $1, credits_fen = credits_fen + $2 \
             WHERE code = $3 AND overdraft = 'forbidden' AND credits_fen + $2 - debits_fen - $1 >= 0",
        )
        .bind(delta.debits_fen)
        .bind(delta.credits_fen)
        .bind(account.as_str())
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() == 1 {
            continue;
        }
        // No row moved: either the account may go negative (no stored totals to keep) or
        // the guard held.
        let policy: String = sqlx::query_scalar("SELECT overdraft FROM ledger_accounts WHERE code = $1")
            .bind(account.as_str())
            .fetch_one(&mut *conn)
            .await?;
        if policy != overdraft_text(OverdraftPolicy::Allowed) {
            return Err(StoreError::Ledger(LedgerError::Overdraft { account: (*account).clone() }));
        }
    }
    Ok(())
}

/// [`post_in`] for many entries with a fixed number of statements, however many entries:
/// entries and postings each travel as one JSON array the database unpacks, and each guarded
/// account moves once by the sum of its postings. For a worker recording a round of outcomes
/// in one transaction. All or nothing, like the transaction around it.
pub(crate) async fn post_many_in(
    conn: &mut AnyConnection,
    entries: &[(EntryRef<'_>, JournalEntry)],
    now: UnixMs,
    known: &KnownAccounts,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut entry_rows = Vec::with_capacity(entries.len());
    let mut posting_rows = Vec::with_capacity(entries.len() * 2);
    let mut per_account: BTreeMap<&AccountCode, AccountTotals> = BTreeMap::new();
    for (what, entry) in entries {
        let id = EntryId::generate();
        entry_rows.push(serde_json::json!({
            "id": id.as_str(), "kind": what.kind, "reference": what.reference, "memo": what.memo,
        }));
        for (seq, posting) in entry.postings().iter().enumerate() {
            posting_rows.push(serde_json::json!({
                "entry_id": id.as_str(), "seq": seq, "account_code": posting.account.as_str(),
                "side": posting.side.as_str(), "amount_fen": posting.amount.fen(),
            }));
            let totals = per_account.entry(&posting.account).or_insert(AccountTotals { debits_fen: 0, credits_fen: 0 });
            match posting.side {
                Side::Debit => totals.debits_fen += posting.amount.fen(),
                Side::Credit => totals.credits_fen += posting.amount.fen(),
            }
        }
    }
    let postgres = super::Backend::of(conn) == super::Backend::Postgres;
    let entries_sql = if postgres {
        "INSERT INTO journal_entries (id, kind, reference, memo, created_at_ms) \
         SELECT r.id, r.kind, r.reference, r.memo, $2 \
         FROM json_to_recordset($1::json) AS r(id TEXT, kind TEXT, reference TEXT, memo TEXT)"
    } else {
        "INSERT INTO journal_entries (id, kind, reference, memo, created_at_ms) \
         SELECT value ->> 'id', value ->> 'kind', value ->> 'reference', value ->> 'memo', $2 FROM json_each($1)"
    };
    sqlx::query(entries_sql)
        .bind(serde_json::Value::Array(entry_rows).to_string())
        .bind(now.0)
        .execute(&mut *conn)
        .await?;
    let postings_sql = if postgres {
        "INSERT INTO postings (entry_id, seq, account_code, side, amount_fen) \
         SELECT r.entry_id, r.seq, r.account_code, r.side, r.amount_fen \
         FROM json_to_recordset($1::json) AS r(entry_id TEXT, seq BIGINT, account_code TEXT, side TEXT, amount_fen BIGINT)"
    } else {
        "INSERT INTO postings (entry_id, seq, account_code, side, amount_fen) \
         SELECT value ->> 'entry_id', value ->> 'seq', value ->> 'account_code', value ->> 'side', \
         value ->> 'amount_fen' FROM json_each($1)"
    };
    sqlx::query(postings_sql)
        .bind(serde_json::Value::Array(posting_rows).to_string())
        .execute(&mut *conn)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
                let missing = per_account.keys().find(|account| known.policy(account).is_none());
                match missing {
                    Some(account) => StoreError::Ledger(LedgerError::UnknownAccount((*account).clone())),
                    None => StoreError::from(error),
                }
            }
            _ => StoreError::from(error),
        })?;
    apply_account_totals(conn, &per_account, known).await
}
