//! A generator writes a day's statement from a day of activity, injects every discrepancy
//! category at random, and the matcher must report each injected case in its category and
//! nothing else (100% recall and precision), through the real writer and reader.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::domain::statement::{StatementHeader, StatementLine, open_statement, write_statement};

const DAY: &str = "2026-11-28";
const FEE_RATE_PPM: u32 = 6_000;
/// A funding wallet's fee per transfer.
const TRANSFER_FEE_FEN: i64 = 10;

/// What one generated item of activity is. A returned transfer is two items with one
/// merchant number: the transfer and, later that day, its return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Movement {
    Payment,
    Refund,
    Transfer,
    ReturnedTransfer,
}

const ACTIVITIES: [Movement; 4] = [Movement::Payment, Movement::Refund, Movement::Transfer, Movement::ReturnedTransfer];

#[derive(Clone, Copy, Debug)]
enum Injection {
    None,
    DropLine,
    Amount,
    Status,
    Kind,
    DuplicateLine,
    DuplicateRecord,
    WrongDay,
    Fee,
    /// The line lacks its merchant number: the operator reference must pair it.
    NoMerchantNumber,
}

const INJECTIONS: [Injection; 10] = [
    Injection::None,
    Injection::DropLine,
    Injection::Amount,
    Injection::Status,
    Injection::Kind,
    Injection::DuplicateLine,
    Injection::DuplicateRecord,
    Injection::WrongDay,
    Injection::Fee,
    Injection::NoMerchantNumber,
];

#[derive(Clone, Debug)]
struct Activity {
    /// (what it is, amount in fen, reversed same day (payments), second of the day, injection).
    entries: Vec<(Movement, i64, bool, i64, Injection)>,
    /// Lines only the operator knows of with a merchant number.
    strangers: usize,
    /// Fees and adjustments (amount, is an adjustment).
    operator_entries: Vec<(i64, bool)>,
    /// carepay records of the next day that are not on this statement and must not show.
    next_day_records: usize,
    past_grace: bool,
}

fn arb_activity() -> impl Strategy<Value = Activity> {
    let entry = (
        prop::sample::select(ACTIVITIES.to_vec()),
        1i64..5_000_000,
        prop::bool::weighted(0.1),
        0i64..86_400,
        prop::sample::select(INJECTIONS.to_vec()),
    );
    (
        prop::collection::vec(entry, 0..40),
        0usize..4,
        prop::collection::vec((-100_000i64..100_000, any::<bool>()), 0..4),
        0usize..4,
        any::<bool>(),
    )
        .prop_map(|(entries, strangers, operator_entries, next_day_records, past_grace)| Activity {
            entries,
            strangers,
            operator_entries,
            next_day_records,
            past_grace,
        })
}

/// What the generator expects for one item: its identity, category and differing fields.
type Expected = Vec<(String, Category, Vec<&'static str>)>;

struct Generated {
    lines: Vec<StatementLine>,
    carepay: Vec<CarepayEntry>,
    expected: Expected,
}

fn time_of_day(second: i64) -> String {
    format!("{DAY} {:02}:{:02}:{:02}", second / 3600, second / 60 % 60, second % 60)
}

fn generate(activity: &Activity) -> Generated {
    let day_start = day_start_ms(DAY).unwrap();
    let mut lines = Vec::new();
    let mut carepay = Vec::new();
    let mut expected: Expected = Vec::new();
    let line_id = |operator_ref: &str, occurrence: usize| format!("{operator_ref}#{occurrence}");

    for (i, &(what, amount_fen, reversed, second, injection)) in activity.entries.iter().enumerate() {
        let is_payment = what == Movement::Payment;
        let kind = match what {
            Movement::Payment => EntryKind::Payment,
            Movement::Refund => EntryKind::Refund,
            Movement::Transfer | Movement::ReturnedTransfer => EntryKind::Transfer,
        };
        let status = if is_payment && reversed { EntryStatus::Reversed } else { EntryStatus::Success };
        let fee_fen = match kind {
            EntryKind::Payment if status == EntryStatus::Success => expected_fee_fen(amount_fen, FEE_RATE_PPM),
            EntryKind::Transfer => TRANSFER_FEE_FEN.min(amount_fen),
            _ => 0,
        };
        let prefix = match kind {
            EntryKind::Payment => "P",
            EntryKind::Refund => "R",
            _ => "T",
        };
        let out_no = format!("{prefix}-{i:05}");
        if what == Movement::ReturnedTransfer {
            // The money came back: a credit on the same number, which carepay recorded from
            // an earlier statement and matches whatever befell the transfer itself.
            let operator_ref = format!("OPRET{i:06}");
            expected.push((line_id(&operator_ref, 0), Category::Matched, vec![]));
            carepay.push(CarepayEntry {
                out_no: out_no.clone(),
                operator_ref: Some(operator_ref.clone()),
                kind: EntryKind::TransferReturn,
                status: EntryStatus::Success,
                amount_fen,
                expected_fee_fen: 0,
                settled_at_ms: day_start + 86_399_000,
            });
            lines.push(StatementLine {
                settled_at: time_of_day(86_399),
                operator_ref,
                out_no: out_no.clone(),
                kind: EntryKind::TransferReturn,
                status: EntryStatus::Success,
                amount_fen,
                fee_fen: 0,
                counterparty: String::from("0021****9002"),
                memo: String::from("钱包已冻结，退回"),
            });
        }
        let operator_ref = format!("OP{i:06}");
        let settled_at_ms = day_start + second * 1000;
        let mut record = CarepayEntry {
            out_no: out_no.clone(),
            operator_ref: Some(operator_ref.clone()),
            kind,
            status,
            amount_fen,
            expected_fee_fen: fee_fen,
            settled_at_ms,
        };
        let mut line = StatementLine {
            settled_at: time_of_day(second),
            operator_ref: operator_ref.clone(),
            out_no,
            kind,
            status,
            amount_fen,
            fee_fen,
            counterparty: String::from("0021****5678"),
            memo: format!("午餐, \"{i}\"\n套餐"),
        };
        let mut expect =
            |category, fields: Vec<&'static str>| expected.push((line_id(&operator_ref, 0), category, fields));
        match injection {
            Injection::None => expect(Category::Matched, vec![]),
            Injection::DropLine => {
                let category = if activity.past_grace { Category::MissingInStatement } else { Category::Expected };
                expected.push((format!("carepay:{operator_ref}"), category, vec![]));
                carepay.push(record);
                continue;
            }
            Injection::Amount => {
                line.amount_fen += 1 + (amount_fen % 997);
                expect(Category::AmountMismatch, vec!["amount"]);
            }
            Injection::Status => {
                line.status = if status == EntryStatus::Success { EntryStatus::Reversed } else { EntryStatus::Success };
                expect(Category::StatusMismatch, vec!["status"]);
            }
            Injection::Kind => {
                line.kind = if is_payment { EntryKind::Refund } else { EntryKind::Payment };
                expect(Category::KindMismatch, vec!["kind"]);
            }
            Injection::DuplicateLine => {
                expect(Category::Matched, vec![]);
                expected.push((line_id(&operator_ref, 1), Category::Duplicate, vec!["out_no"]));
                lines.push(line.clone());
            }
            Injection::DuplicateRecord => {
                expect(Category::Matched, vec![]);
                let mut twin = record.clone();
                twin.operator_ref = Some(format!("OPTWIN{i:06}"));
                expected.push((format!("carepay:OPTWIN{i:06}"), Category::Duplicate, vec!["out_no"]));
                carepay.push(record.clone());
                carepay.push(twin);
                lines.push(line);
                continue;
            }
            Injection::WrongDay => {
                // carepay saw it settle just across midnight, on the day before or after.
                let shift = if second % 2 == 0 { -MS_PER_DAY } else { MS_PER_DAY };
                record.settled_at_ms += shift;
                expect(Category::WrongDay, vec!["business_day"]);
            }
            Injection::Fee if status == EntryStatus::Reversed => {
                // A REVERSED line's fee is given back with it: not compared.
                line.fee_fen += 1 + (amount_fen % 89);
                expect(Category::Matched, vec![]);
            }
            Injection::Fee => {
                line.fee_fen += 1 + (amount_fen % 89);
                expect(Category::FeeMismatch, vec!["fee"]);
            }
            Injection::NoMerchantNumber => {
                line.out_no = String::new();
                expect(Category::Matched, vec!["out_no"]);
            }
        }
        carepay.push(record);
        lines.push(line);
    }

    for j in 0..activity.strangers {
        let operator_ref = format!("OPSTRANGER{j}");
        expected.push((line_id(&operator_ref, 0), Category::MissingInCarepay, vec![]));
        lines.push(StatementLine {
            settled_at: time_of_day(3600),
            operator_ref,
            out_no: format!("X-{j}"),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen: 100,
            fee_fen: expected_fee_fen(100, FEE_RATE_PPM),
            counterparty: String::new(),
            memo: String::new(),
        });
    }
    for (j, &(amount_fen, adjustment)) in activity.operator_entries.iter().enumerate() {
        let operator_ref = format!("OPOWN{j}");
        expected.push((line_id(&operator_ref, 0), Category::OperatorEntry, vec![]));
        let (kind, amount_fen) =
            if adjustment { (EntryKind::Adjustment, amount_fen) } else { (EntryKind::Fee, amount_fen.abs()) };
        lines.push(StatementLine {
            settled_at: time_of_day(86_399),
            operator_ref,
            out_no: String::new(),
            kind,
            status: EntryStatus::Success,
            amount_fen,
            fee_fen: 0,
            counterparty: String::new(),
            memo: String::from("运营机构差错调整"),
        });
    }
    for j in 0..activity.next_day_records {
        carepay.push(CarepayEntry {
            out_no: format!("P-next-{j}"),
            operator_ref: Some(format!("OPNEXT{j}")),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen: 100,
            expected_fee_fen: 1,
            settled_at_ms: day_start + MS_PER_DAY + 1,
        });
    }
    Generated { lines, carepay, expected }
}

/// Writes the statement, reads it back into a side as the use case does and runs the
/// matcher, naming each outcome the way the generator named its expectation.
fn run(generated: &Generated, past_grace: bool) -> Expected {
    run_with(generated, &generated.carepay, past_grace)
}

fn run_with(generated: &Generated, carepay_entries: &[CarepayEntry], past_grace: bool) -> Expected {
    let header = StatementHeader {
        wallet_id: String::from("0021000000000001"),
        date: DAY.to_owned(),
        generated_at: String::from("2026-11-29T09:00:00+08:00"),
    };
    let bytes = write_statement(&header, &generated.lines).unwrap();
    let mut reader = open_statement(bytes.as_slice()).unwrap();
    reader.expect("0021000000000001", DAY).unwrap();
    let mut statement = StatementSide::default();
    let mut ids = HashMap::new();
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    while let Some(line) = reader.next_line_ref().unwrap() {
        let occurrence = occurrences.entry(line.operator_ref.to_owned()).or_default();
        let id = format!("{}#{occurrence}", line.operator_ref);
        *occurrence += 1;
        statement.push(&line).unwrap();
        ids.insert(statement.len() as u32 - 1, id);
    }
    let mut carepay = CarepaySide::default();
    for entry in carepay_entries {
        carepay.push(entry).unwrap();
    }

    let settings = MatchSettings { date: DAY.to_owned(), past_grace, listed_elsewhere: Default::default() };
    let mut outcomes = Vec::new();
    reconcile(&settings, &statement, &carepay, |outcome| outcomes.push(outcome));
    outcomes
        .into_iter()
        .map(|outcome| {
            let id = match (outcome.line, outcome.entry) {
                (Some(line), _) => ids[&line].clone(),
                (None, Some(entry)) => format!("carepay:{}", carepay.item(entry).operator_ref.unwrap_or_default()),
                (None, None) => unreachable!("an outcome always has a side"),
            };
            (id, outcome.category, outcome.fields.names().collect())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_injected_case_is_reported_in_its_category_and_nothing_else(activity in arb_activity()) {
        let generated = generate(&activity);
        let mut actual = run(&generated, activity.past_grace);
        let mut expected = generated.expected.clone();
        actual.sort();
        expected.sort();
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn running_twice_gives_the_same_result(activity in arb_activity()) {
        let generated = generate(&activity);
        prop_assert_eq!(run(&generated, activity.past_grace), run(&generated, activity.past_grace));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Only which of two records with one merchant number counts as the duplicate follows
    /// the order they were loaded in.
    #[test]
    fn the_order_carepay_loads_its_records_in_changes_nothing_else(activity in arb_activity()) {
        let generated = generate(&activity);
        let mut reversed = generated.carepay.clone();
        reversed.reverse();
        let normalised = |mut outcomes: Expected| {
            for (id, category, _) in &mut outcomes {
                if *category == Category::Duplicate && id.starts_with("carepay:") {
                    *id = String::from("carepay duplicate");
                }
            }
            outcomes.sort();
            outcomes
        };
        let in_order = normalised(run(&generated, activity.past_grace));
        let out_of_order = normalised(run_with(&generated, &reversed, activity.past_grace));
        prop_assert_eq!(in_order, out_of_order);
    }
}

proptest! {
    #[test]
    fn ordering_a_side_is_a_stable_sort(keys in prop::collection::vec("[a-c]{0,3}", 0..200), sorted_run in any::<bool>()) {
        let mut keys = keys;
        if sorted_run {
            // Mostly in order with a few strays, as real days come.
            keys.sort();
            if keys.len() > 4 {
                let last = keys.len() - 2;
                keys.swap(1, last);
            }
        }
        let mut expected: Vec<u32> = (0..keys.len() as u32).collect();
        expected.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
        prop_assert_eq!(stable_order(keys.len(), |index| keys[index as usize].as_str()), expected);
    }
}

#[test]
fn fields_are_listed_in_a_fixed_order_and_stored_as_one_byte() {
    let mut fields = Fields::NONE;
    fields.insert(Fields::FEE);
    fields.insert(Fields::OUT_NO);
    assert_eq!(fields.joined(), "out_no,fee");
    assert_eq!(Fields::from_bits(fields.bits()), Some(fields));
    assert_eq!(Fields::from_bits(0b100_0000), None);
    assert_eq!(Fields::NONE.joined(), "");
}

/// A funding wallet's day with every injection on a transfer and on a transfer that came
/// back, in a fixed order and in one shuffled by a fixed seed: each case in its category.
#[test]
fn a_funding_wallets_day_reports_every_injected_case_in_its_category() {
    let mut entries = Vec::new();
    for (n, injection) in INJECTIONS.iter().enumerate() {
        for (m, movement) in [Movement::Transfer, Movement::ReturnedTransfer].into_iter().enumerate() {
            let second = 60 * (2 * n as i64 + m as i64) + 1;
            entries.push((movement, 30_000 + 100 * n as i64, false, second, *injection));
        }
    }
    let mut shuffled = entries.clone();
    let mut seed: u64 = 0x5eed_2026_1128;
    for i in (1..shuffled.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        shuffled.swap(i, (seed >> 33) as usize % (i + 1));
    }
    for entries in [entries, shuffled] {
        for past_grace in [false, true] {
            let activity = Activity {
                entries: entries.clone(),
                strangers: 2,
                operator_entries: vec![(61, false)],
                next_day_records: 0,
                past_grace,
            };
            let generated = generate(&activity);
            let mut actual = run(&generated, past_grace);
            let mut expected = generated.expected.clone();
            actual.sort();
            expected.sort();
            assert_eq!(actual, expected);
            let returns =
                actual.iter().filter(|(id, category, _)| id.starts_with("OPRET") && *category == Category::Matched);
            assert_eq!(returns.count(), INJECTIONS.len(), "every return matched, whatever befell its transfer");
        }
    }
}

#[test]
fn a_summary_counts_each_category_and_nets_the_statement() {
    let generated = generate(&Activity {
        entries: vec![
            (Movement::Payment, 10_000, false, 10, Injection::None),
            (Movement::Refund, 2_500, false, 20, Injection::Amount),
        ],
        strangers: 1,
        operator_entries: vec![(-100, true)],
        next_day_records: 0,
        past_grace: false,
    });
    let mut builder = SummaryBuilder::default();
    let mut statement = StatementSide::default();
    for (i, line) in generated.lines.iter().enumerate() {
        let line = LineRef {
            line_no: i as u64 + 3,
            settled_at: &line.settled_at,
            operator_ref: &line.operator_ref,
            out_no: &line.out_no,
            kind: line.kind,
            status: line.status,
            amount_fen: line.amount_fen,
            fee_fen: line.fee_fen,
            counterparty: &line.counterparty,
            memo: &line.memo,
        };
        statement.push(&line).unwrap();
    }
    let mut carepay = CarepaySide::default();
    for entry in &generated.carepay {
        carepay.push(entry).unwrap();
    }
    let settings = MatchSettings { date: DAY.to_owned(), past_grace: false, listed_elsewhere: Default::default() };
    reconcile(&settings, &statement, &carepay, |outcome| builder.add(&outcome, &statement, &carepay));
    let summary = builder.finish();
    // Statement: +100.00 payment, -(25.00 + 1 + 2500 % 997 fen) refund, +1.00 stranger, -1.00 adjustment.
    let refund_on_statement = 2_500 + 1 + 2_500 % 997;
    assert_eq!(summary.statement_net_fen, 10_000 - refund_on_statement + 100 - 100);
    assert_eq!(summary.carepay_net_fen, 10_000 - 2_500);
    assert_eq!(summary.statement_fee_fen, 60 + 1);
    assert_eq!(summary.net_settlement_fen, summary.statement_net_fen - 61);
    assert_eq!(summary.open_discrepancies, 2);
    let count = |name: &str| summary.categories.iter().find(|c| c.category == name).map(|c| c.count);
    assert_eq!(count("matched"), Some(1));
    assert_eq!(count("amount_mismatch"), Some(1));
    assert_eq!(count("missing_in_carepay"), Some(1));
    assert_eq!(count("operator_entry"), Some(1));
    // Category amounts are signed like the net: the refund counts against it, and every line
    // being in one category, they add up to the statement's net.
    let amount = |name: &str| summary.categories.iter().find(|c| c.category == name).map(|c| c.amount_fen);
    assert_eq!(amount("amount_mismatch"), Some(-refund_on_statement));
    assert_eq!(amount("operator_entry"), Some(-100));
    assert_eq!(summary.categories.iter().map(|c| c.amount_fen).sum::<i64>(), summary.statement_net_fen);
}

#[test]
fn business_days_are_shanghai_dates() {
    let start = day_start_ms(DAY).unwrap();
    assert_eq!(business_day(UnixMs(start)), DAY);
    assert_eq!(business_day(UnixMs(start - 1)), "2026-11-27");
    assert_eq!(neighbourhood_ms(DAY), Some((start - MS_PER_DAY, start + 2 * MS_PER_DAY)));
    assert_eq!(day_start_ms("2026-13-01"), None);
}

#[test]
fn a_record_a_neighbouring_days_statement_lists_is_a_timing_difference_not_a_missing_one() {
    let start = day_start_ms(DAY).unwrap();
    let record = |out_no: &str, settled_at_ms: i64, amount_fen: i64| CarepayEntry {
        out_no: out_no.to_owned(),
        operator_ref: Some(format!("OP{out_no}")),
        kind: EntryKind::Payment,
        status: EntryStatus::Success,
        amount_fen,
        expected_fee_fen: 0,
        settled_at_ms,
    };
    let mut carepay = CarepaySide::default();
    carepay.push(&record("P-late", start + MS_PER_DAY - 1_000, 1_250)).unwrap();
    carepay.push(&record("P-gone", start + 3_600_000, 800)).unwrap();
    let statement = StatementSide::default();
    let settings = MatchSettings {
        date: DAY.to_owned(),
        past_grace: true,
        listed_elsewhere: HashSet::from([String::from("P-late")]),
    };
    let mut outcomes = Vec::new();
    let mut summary = SummaryBuilder::default();
    reconcile(&settings, &statement, &carepay, |outcome| {
        summary.add(&outcome, &statement, &carepay);
        outcomes.push(outcome);
    });
    assert_eq!(
        outcomes,
        [
            Outcome { category: Category::MissingInStatement, line: None, entry: Some(1), fields: Fields::NONE },
            Outcome { category: Category::WrongDay, line: None, entry: Some(0), fields: Fields::BUSINESS_DAY },
        ]
    );
    assert!(outcomes[0].is_discrepancy() && !outcomes[0].is_timing());
    assert!(outcomes[1].is_timing() && !outcomes[1].is_discrepancy());
    assert_eq!(summary.finish().open_discrepancies, 1);
}

#[test]
fn a_pair_across_midnight_is_timing_only_while_nothing_but_the_day_differs() {
    let pair = |fields: Fields| Outcome { category: Category::WrongDay, line: Some(0), entry: Some(0), fields };
    let mut by_reference = Fields::BUSINESS_DAY;
    by_reference.insert(Fields::OUT_NO);
    let mut fee_too = Fields::BUSINESS_DAY;
    fee_too.insert(Fields::FEE);
    assert!(pair(Fields::BUSINESS_DAY).is_timing());
    assert!(pair(by_reference).is_timing());
    assert!(!pair(fee_too).is_timing() && pair(fee_too).is_discrepancy());
    let expected = Outcome { category: Category::Expected, line: None, entry: Some(0), fields: Fields::NONE };
    assert!(!expected.is_timing() && expected.is_discrepancy());
}
