//! Concurrent payment writes share transactions (group commit), yet each keeps its own
//! outcome: a repeated request id in the same batch, a payment moved twice at once, and one
//! write the database refuses change nothing for the others.

use std::sync::Arc;

use carepay::domain::directory::WalletId;
use carepay::domain::ids::{FacilityId, PaymentId, TerminalId};
use carepay::domain::ledger::{AccountCode, JournalEntry, OverdraftPolicy};
use carepay::domain::money::Amount;
use carepay::domain::payment::{Payment, PaymentMethod, PaymentStatus};
use carepay::domain::time::UnixMs;
use carepay::store::ledger::EntryRef;
use carepay::store::payments::{Begun, Booking, Effects, RequestKind, TerminalRequest, TradeFacts};
use carepay::store::{Store, StoreError};

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::terminal_client::terminal;

backend_tests!(
    concurrent_starts_with_repeated_request_ids_create_each_payment_once,
    concurrent_moves_keep_their_own_outcomes_when_one_is_refused,
);

const WALLET: &str = "0021000000000777";

fn pending_payment(terminal: &TerminalId, facility: &FacilityId, request_id: &str, amount_fen: i64) -> Payment {
    let id = PaymentId::generate();
    let now = UnixMs::now();
    Payment {
        out_trade_no: id.to_string(),
        id,
        facility_id: facility.clone(),
        terminal_id: terminal.clone(),
        request_id: request_id.to_owned(),
        merchant_wallet_id: WalletId::parse(WALLET).unwrap(),
        method: PaymentMethod::PayerCode,
        status: PaymentStatus::Processing,
        amount: Amount::from_fen(amount_fen).unwrap(),
        refund_reserved: Amount::ZERO,
        refunded: Amount::ZERO,
        description: String::from("午餐"),
        trade_no: None,
        fail_code: None,
        qr_payload: None,
        expires_at: None,
        paid_at: None,
        version: 1,
        created_at: now,
        updated_at: now,
        // Far off, so the payments worker leaves these to the test.
        next_check_at: Some(UnixMs(now.0 + 3_600_000)),
        check_attempts: 0,
    }
}

async fn begin(store: &Store, payment: &Payment, digest: &str) -> Result<Begun<Payment>, StoreError> {
    let request = TerminalRequest {
        terminal_id: &payment.terminal_id,
        request_id: &payment.request_id,
        request_sha256: digest,
        kind: RequestKind::Payment,
        object_id: payment.id.as_str(),
        now: payment.created_at,
    };
    store.begin_payment(payment, &request).await
}

async fn ids(app: &TestApp) -> (TerminalId, FacilityId) {
    let terminal = terminal(app, WALLET).await;
    (TerminalId::from_trusted(terminal.id), FacilityId::from_trusted(terminal.facility_id))
}

async fn concurrent_starts_with_repeated_request_ids_create_each_payment_once(app: TestApp) {
    let (terminal, facility) = ids(&app).await;
    let store = app.app.store.clone();
    // Forty starts at once over twenty request ids: each id twice, with different payments.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        let payment = pending_payment(&terminal, &facility, &format!("req-{}", n % 20), 1_250);
        tasks.push(tokio::spawn(async move { (n % 20, payment.id.clone(), begin(&store, &payment, "digest").await) }));
    }
    let mut created = std::collections::HashMap::new();
    let mut seen = Vec::new();
    for task in tasks {
        let (request, id, begun) = task.await.unwrap();
        match begun.unwrap() {
            Begun::Created(payment) => {
                assert_eq!(payment.id, id);
                assert!(created.insert(request, id).is_none(), "request {request} created twice");
            }
            Begun::Seen(seen_request) => seen.push((request, seen_request.object_id)),
        }
    }
    assert_eq!(created.len(), 20, "every request id creates one payment");
    assert_eq!(seen.len(), 20, "every repeat sees the first");
    for (request, object_id) in seen {
        assert_eq!(created[&request].as_str(), object_id, "a repeat names the payment its id created");
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&app.db.raw_pool().await).await.unwrap();
    assert_eq!(stored, 20);
}

fn booking(payment: &Payment) -> Booking<'_> {
    let payers = AccountCode::parse("ecny:payers").unwrap();
    let wallet = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    Booking {
        what: EntryRef { kind: "payment", reference: payment.id.as_str(), memo: "" },
        entry: JournalEntry::transfer(payers.clone(), wallet.clone(), payment.amount).unwrap(),
        accounts: vec![(payers, OverdraftPolicy::Allowed), (wallet, OverdraftPolicy::Forbidden)],
    }
}

async fn concurrent_moves_keep_their_own_outcomes_when_one_is_refused(app: TestApp) {
    let (terminal, facility) = ids(&app).await;
    let store = app.app.store.clone();
    let mut payments = Vec::new();
    for n in 0..24 {
        let payment = pending_payment(&terminal, &facility, &format!("move-{n}"), 100 + n);
        assert!(matches!(begin(&store, &payment, "digest").await.unwrap(), Begun::Created(_)));
        payments.push(Arc::new(payment));
    }
    // Payment 7's entry is already booked: its move must fail alone, whatever it shares.
    let refused = Arc::clone(&payments[7]);
    let payers = AccountCode::parse("ecny:payers").unwrap();
    let wallet = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    store.open_ledger_account(&payers, OverdraftPolicy::Allowed, UnixMs::now()).await.unwrap();
    store.open_ledger_account(&wallet, OverdraftPolicy::Forbidden, UnixMs::now()).await.unwrap();
    let entry = JournalEntry::transfer(payers.clone(), wallet.clone(), Amount::from_fen(1).unwrap()).unwrap();
    store
        .post_journal_entry(
            EntryRef { kind: "payment", reference: refused.id.as_str(), memo: "" },
            &entry,
            UnixMs::now(),
        )
        .await
        .unwrap();

    // Every payment moved by two writers at once (the request and, say, a notification).
    let mut tasks = Vec::new();
    for payment in payments.iter().chain(payments.iter()) {
        let store = store.clone();
        let payment = Arc::clone(payment);
        tasks.push(tokio::spawn(async move {
            let facts = TradeFacts { trade_no: Some(format!("T{}", payment.id)), ..TradeFacts::default() };
            let effects = Effects { booking: Some(booking(&payment)), events: Vec::new() };
            let outcome = store
                .transition_payment(
                    &payment.id,
                    &[PaymentStatus::Processing],
                    PaymentStatus::Succeeded,
                    &facts,
                    effects,
                    UnixMs::now(),
                )
                .await;
            (payment.id.clone(), outcome)
        }));
    }
    let mut moved = std::collections::HashMap::<PaymentId, u32>::new();
    for task in tasks {
        let (id, outcome) = task.await.unwrap();
        if id == refused.id {
            assert!(
                matches!(outcome, Err(StoreError::Conflict("journal_entries_kind_reference_key"))),
                "the refused move fails with its own error: {outcome:?}"
            );
            continue;
        }
        if outcome.expect("the other moves succeed or find it moved") {
            *moved.entry(id).or_default() += 1;
        }
    }
    assert_eq!(moved.len(), 23, "every other payment moved");
    assert!(moved.values().all(|count| *count == 1), "each moved exactly once: {moved:?}");
    let still = store.payment(&refused.id).await.unwrap().unwrap();
    assert_eq!(still.status, PaymentStatus::Processing, "the refused payment is unchanged");
    assert_eq!(still.trade_no, None);

    let expected_fen: i64 = (0..24).filter(|n| *n != 7).map(|n| 100 + n).sum::<i64>() + 1;
    let totals = store.account_totals(&wallet).await.unwrap().unwrap();
    assert_eq!(
        totals.credits_fen - totals.debits_fen,
        expected_fen,
        "one entry per moved payment, and the pre-booked one"
    );
    assert!(store.verify_ledger().await.unwrap().is_empty(), "ledger balanced");
}
