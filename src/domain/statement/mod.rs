//! The operator's wallet statement file (`statement-format.md`): its typed lines, the trailer
//! arithmetic, a writer and a streaming reader that agree byte for byte.

mod read;
mod write;

pub use read::{
    LINE_MINUTES_BEFORE_DAY, LineRef, ReadError, Reason, StatementReader, TextEncoding, open_statement,
    parse_yuan_fen as parse_signed_yuan_fen,
};
pub use write::{
    COLUMNS, EntryKind, EntryStatus, StatementError, StatementHeader, StatementLine, StatementTotals, Yuan,
    mask_wallet_id, push_header, push_line, push_trailer, totals, write_statement, write_statement_with_totals,
};
