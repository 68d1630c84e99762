//! The ledger on disk agrees with the pure model, refuses overdrafts atomically (also under
//! concurrency), never books one event twice, and detects tampering.

use std::sync::Arc;

use carepay::domain::ledger::{AccountCode, JournalEntry, Ledger, LedgerError, OverdraftPolicy, Posting};
use carepay::domain::money::Amount;
use carepay::domain::time::UnixMs;
use carepay::store::StoreError;
use carepay::store::ledger::EntryRef;

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    stored_balances_match_the_model_after_a_random_sequence,
    a_refused_entry_leaves_the_ledger_unchanged,
    concurrent_debits_never_overdraw_a_guarded_account,
    one_event_is_booked_once,
    tampering_with_totals_is_detected,
);

fn code(raw: &str) -> AccountCode {
    AccountCode::parse(raw).unwrap()
}

fn fen(n: i64) -> Amount {
    Amount::from_fen(n).unwrap()
}

fn entry(debit: &str, credit: &str, amount_fen: i64) -> JournalEntry {
    JournalEntry::transfer(code(debit), code(credit), fen(amount_fen)).unwrap()
}

fn what(reference: &str) -> EntryRef<'_> {
    EntryRef { kind: "test", reference, memo: "" }
}

/// A small deterministic generator, so a failure reproduces exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

async fn stored_balances_match_the_model_after_a_random_sequence(app: TestApp) {
    let store = &app.app.store;
    let accounts = [
        ("operator:clearing", OverdraftPolicy::Allowed),
        ("facility:a:wallet", OverdraftPolicy::Forbidden),
        ("facility:b:wallet", OverdraftPolicy::Forbidden),
        ("programme:p:budget", OverdraftPolicy::Forbidden),
    ];
    let mut model = Ledger::new();
    for (name, policy) in accounts {
        model.open_account(code(name), policy).unwrap();
        store.open_ledger_account(&code(name), policy, UnixMs::now()).await.unwrap();
    }
    let mut rng = Lcg(7);
    for n in 0..120 {
        let debit = accounts[rng.next(4) as usize].0;
        let credit = accounts[rng.next(4) as usize].0;
        if debit == credit {
            continue;
        }
        let amount = 1 + rng.next(5_000) as i64;
        let candidate = entry(debit, credit, amount);
        let expected = model.apply(&candidate);
        let stored = store.post_journal_entry(what(&format!("e{n}")), &candidate, UnixMs::now()).await;
        match (&expected, &stored) {
            (Ok(()), Ok(_)) => {}
            (
                Err(LedgerError::Overdraft { account: a }),
                Err(StoreError::Ledger(LedgerError::Overdraft { account: b })),
            ) => {
                assert_eq!(a, b)
            }
            _ => panic!("model said {expected:?}, store said {stored:?}"),
        }
    }
    for (name, _) in accounts {
        let totals = store.account_totals(&code(name)).await.unwrap().unwrap();
        assert_eq!(Some(totals.balance_fen()), model.balance(&code(name)), "{name}");
        assert_eq!(Some(totals.debits_fen), model.debits(&code(name)), "{name}");
    }
    assert_eq!(store.verify_ledger().await.unwrap(), vec![]);
}

async fn a_refused_entry_leaves_the_ledger_unchanged(app: TestApp) {
    let store = &app.app.store;
    store.open_ledger_account(&code("clearing"), OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.open_ledger_account(&code("wallet"), OverdraftPolicy::Forbidden, UnixMs::now()).await.unwrap();
    store.post_journal_entry(what("fund"), &entry("clearing", "wallet", 1_000), UnixMs::now()).await.unwrap();

    // Two postings: the first would succeed alone, the second overdraws; neither may stay.
    let overdraw = JournalEntry::new(vec![
        Posting::debit(code("wallet"), fen(1_001)),
        Posting::credit(code("clearing"), fen(1_001)),
    ])
    .unwrap();
    let refused = store.post_journal_entry(what("overdraw"), &overdraw, UnixMs::now()).await;
    assert!(matches!(refused, Err(StoreError::Ledger(LedgerError::Overdraft { .. }))), "{refused:?}");
    let unknown = store.post_journal_entry(what("unknown"), &entry("wallet", "nowhere", 1), UnixMs::now()).await;
    assert!(matches!(unknown, Err(StoreError::Ledger(LedgerError::UnknownAccount(_)))), "{unknown:?}");

    assert_eq!(store.account_totals(&code("wallet")).await.unwrap().unwrap().balance_fen(), 1_000);
    assert_eq!(store.account_totals(&code("clearing")).await.unwrap().unwrap().balance_fen(), -1_000);
    let pool = app.db.raw_pool().await;
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal_entries").fetch_one(&pool).await.unwrap();
    let postings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postings").fetch_one(&pool).await.unwrap();
    assert_eq!((entries, postings), (1, 2), "refused entries left no rows");
}

async fn concurrent_debits_never_overdraw_a_guarded_account(app: TestApp) {
    let store = Arc::new(app.app.store.clone());
    store.open_ledger_account(&code("clearing"), OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.open_ledger_account(&code("wallet"), OverdraftPolicy::Forbidden, UnixMs::now()).await.unwrap();
    store.post_journal_entry(what("fund"), &entry("clearing", "wallet", 1_000), UnixMs::now()).await.unwrap();

    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.post_journal_entry(what(&format!("spend{n}")), &entry("wallet", "clearing", 100), UnixMs::now()).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StoreError::Ledger(LedgerError::Overdraft { .. })) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(accepted, 10, "exactly the funded amount was spent");
    assert_eq!(store.account_totals(&code("wallet")).await.unwrap().unwrap().balance_fen(), 0);
    assert_eq!(store.verify_ledger().await.unwrap(), vec![]);
}

async fn one_event_is_booked_once(app: TestApp) {
    let store = &app.app.store;
    store.open_ledger_account(&code("a"), OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.open_ledger_account(&code("b"), OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.post_journal_entry(what("pay-1"), &entry("a", "b", 500), UnixMs::now()).await.unwrap();
    let again = store.post_journal_entry(what("pay-1"), &entry("a", "b", 500), UnixMs::now()).await;
    assert!(matches!(again, Err(StoreError::Conflict("journal_entries_kind_reference_key"))), "{again:?}");
    assert_eq!(store.account_totals(&code("b")).await.unwrap().unwrap().balance_fen(), 500);
    // Opening an account twice is harmless and keeps its balance.
    store.open_ledger_account(&code("b"), OverdraftPolicy::Forbidden, UnixMs::now()).await.unwrap();
    assert_eq!(store.account_totals(&code("b")).await.unwrap().unwrap().balance_fen(), 500);
}

async fn tampering_with_totals_is_detected(app: TestApp) {
    let store = &app.app.store;
    store.open_ledger_account(&code("a"), OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.open_ledger_account(&code("b"), OverdraftPolicy::Forbidden, UnixMs::now()).await.unwrap();
    store.post_journal_entry(what("x"), &entry("a", "b", 500), UnixMs::now()).await.unwrap();
    assert_eq!(store.verify_ledger().await.unwrap(), vec![]);
    let pool = app.db.raw_pool().await;
    sqlx::query("UPDATE ledger_accounts SET credits_fen = 999 WHERE code = 'b'").execute(&pool).await.unwrap();
    let mismatches = store.verify_ledger().await.unwrap();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].account, "b");
    assert_eq!(mismatches[0].recomputed.credits_fen, 500);
}
