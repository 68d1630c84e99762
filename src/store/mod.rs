//! Persistence: the only module that holds SQL.
//!
//! One schema on two backends through sqlx's `Any` driver: SQLite (the embedded default)
//! and PostgreSQL (production, several instances sharing one server). Queries use the
//! portable subset both understand: `$n` parameters, BIGINT fen and unix-ms times, TEXT
//! ids and enumerations, unique constraints for idempotency, `INSERT ... ON CONFLICT`,
//! and compare-and-set `UPDATE ... WHERE state = $expected`. Where a backend needs its own
//! SQL the two versions sit side by side and say so.

pub mod audit;
pub mod callbacks;
pub mod console;
pub mod demo;
pub mod directory;
pub mod disbursement;
pub mod group_commit;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod payments;
pub mod reconciliation;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor as _, Transaction};

/// Which database server is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a connection of the portable pool talks to.
    pub fn of(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool bounds; named in config so an operator can see and change them.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// How long SQLite waits on a locked database before giving up.
    pub sqlite_busy_timeout_ms: u64,
    /// PostgreSQL: native connections kept beside the pool for bulk `COPY`.
    pub bulk_max_connections: u32,
    pub group_commit: group_commit::GroupCommitSettings,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
            bulk_max_connections: 2,
            group_commit: group_commit::GroupCommitSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url must start with sqlite: or postgres://")]
    UnsupportedUrl,
    /// A unique constraint refused the write; the name is the logical constraint name from
    /// the migrations, the same on both backends.
    #[error("unique constraint {0} violated")]
    Conflict(&'static str),
    /// A compare-and-set or guarded update matched no row: someone else moved first, or a
    /// guard (no overdraft, refund ceiling) held.
    #[error("guarded update matched no row")]
    GuardFailed,
    /// The ledger refused an entry (overdraft, unknown account); nothing was written.
    #[error("ledger refused the entry: {0}")]
    Ledger(crate::domain::ledger::LedgerError),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.kind() == sqlx::error::ErrorKind::UniqueViolation
            && let Some(name) = unique_constraint_name(db.as_ref())
        {
            return StoreError::Conflict(name);
        }
        StoreError::Database(error)
    }
}

/// Unique constraints the code reacts to, with the columns SQLite names in its message
/// (SQLite reports columns, PostgreSQL reports the constraint or index name).
const UNIQUE_CONSTRAINTS: &[(&str, &str)] = &[
    ("facilities_merchant_wallet_id_key", "facilities.merchant_wallet_id"),
    ("organisations_region_name_key", "organisations.region_id, organisations.name"),
    ("regions_sibling_name_key", "index 'regions_sibling_name_key'"),
    ("terminal_keys_public_key_key", "terminal_keys.public_key"),
    ("terminal_keys_one_active_key", "terminal_keys.terminal_id"),
    ("api_tokens_token_sha256_key", "api_tokens.token_sha256"),
    ("journal_entries_kind_reference_key", "journal_entries.kind, journal_entries.reference"),
    ("ledger_accounts_pkey", "ledger_accounts.code"),
    ("payments_out_trade_no_key", "payments.out_trade_no"),
    ("refunds_out_refund_no_key", "refunds.out_refund_no"),
    ("statement_files_digest_key", "statement_files.wallet_id, statement_files.business_day, statement_files.sha256"),
    ("statement_files_version_key", "statement_files.wallet_id, statement_files.business_day, statement_files.version"),
    ("subsidy_batches_uploader_key", "subsidy_batches.uploaded_by, subsidy_batches.idempotency_key"),
    ("subsidy_lines_out_transfer_no_key", "subsidy_lines.out_transfer_no"),
];

fn unique_constraint_name(db: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
    if let Some(constraint) = db.constraint() {
        return UNIQUE_CONSTRAINTS.iter().find(|(name, _)| *name == constraint).map(|(name, _)| *name);
    }
    // SQLite: "UNIQUE constraint failed: facilities.merchant_wallet_id" or, for an
    // expression index, "UNIQUE constraint failed: index 'regions_sibling_name_key'".
    let columns = db.message().strip_prefix("UNIQUE constraint failed: ")?;
    UNIQUE_CONSTRAINTS.iter().find(|(_, cols)| *cols == columns).map(|(name, _)| *name)
}

/// The connection pool and which backend it talks to.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises write transactions in this process (used on SQLite only).
    write_gate: Arc<tokio::sync::Mutex<()>>,
    pub(crate) known_accounts: ledger::KnownAccounts,
    /// PostgreSQL only: native connections beside the portable pool, for what the `Any`
    /// driver cannot speak (`COPY`). Opened lazily, so stores that never bulk-copy hold none.
    bulk: Option<sqlx::PgPool>,
    /// The writers that let concurrent payment writes share a transaction; `None` on the
    /// writers' own store.
    group: Option<group_commit::GroupCommit>,
    /// The keys audit records are appended with, shared by every clone (see
    /// [`Store::set_audit_keys`]).
    audit_keys: audit::AuditKeyCell,
    /// SQLite: the database file as it was when the pool opened it, so readiness can tell
    /// when the file at the configured path is gone or another one.
    opened_file: Option<Arc<OpenedFile>>,
}

/// A database file and the identity it had when opened.
#[derive(Debug)]
struct OpenedFile {
    path: std::path::PathBuf,
    identity: FileIdentity,
}

/// What tells one file from another at the same path: device and inode on Unix; elsewhere
/// only that a file is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &std::path::Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Ok(FileIdentity { device: metadata.dev(), inode: metadata.ino() })
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            Ok(FileIdentity { device: 0, inode: 0 })
        }
    }
}

/// Why the store cannot serve now.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the database cannot be reached: {0}")]
    Unreachable(StoreError),
    /// SQLite: nothing is at the configured path any more.
    #[error("the database file opened at start is no longer at its path")]
    FileMissing,
    /// SQLite: another file is at the configured path than the one opened.
    #[error("the file at the database's path is not the one opened at start")]
    FileReplaced,
    /// The database's schema is not the one this build migrates to.
    #[error("schema version {expected} expected, found {}", found.map_or_else(|| String::from("none"), |v| v.to_string()))]
    Schema { expected: i64, found: Option<i64> },
}

/// A write transaction, holding the SQLite write gate while it lives.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// What an audit record appended in this transaction is hashed with.
    pub(crate) audit_keys: Arc<crate::domain::audit::AuditKeys>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options: AnyConnectOptions = url.parse().map_err(StoreError::Database)?;
        let busy_timeout_ms = settings.sqlite_busy_timeout_ms;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; FULL makes a commit
                        // durable across power loss, which money needs.
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_timeout_ms};"
                        );
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        // The first connection has opened (or created) the file by now.
        let opened_file = match backend {
            Backend::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions = url.parse().map_err(StoreError::Database)?;
                let path = options.get_filename().to_path_buf();
                // In-memory databases have no file to watch.
                FileIdentity::of(&path).ok().map(|identity| Arc::new(OpenedFile { path, identity }))
            }
            Backend::Postgres => None,
        };
        let bulk = match backend {
            Backend::Postgres => Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(settings.bulk_max_connections)
                    .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
                    .connect_lazy(url)?,
            ),
            Backend::Sqlite => None,
        };
        Ok(Store {
            pool,
            backend,
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            known_accounts: ledger::KnownAccounts::default(),
            bulk,
            group: None,
            audit_keys: audit::AuditKeyCell::default(),
            opened_file,
        }
        .with_group_commit(settings.group_commit))
    }

    fn with_group_commit(self, settings: group_commit::GroupCommitSettings) -> Store {
        let group = group_commit::GroupCommit::start(self.clone(), settings);
        Store { group: Some(group), ..self }
    }

    /// Hand a payment-path write to the group commit (or, on the writers' own store, write
    /// it alone).
    pub(crate) async fn group_commit<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> group_commit::Job,
    ) -> Result<T, StoreError> {
        match &self.group {
            Some(group) => group.submit(job).await,
            None => group_commit::write_alone(self, job).await,
        }
    }

    /// The native PostgreSQL pool for bulk `COPY` (None on SQLite). Its connections are not
    /// the portable pool's: a `COPY` there is its own transaction, never part of one begun
    /// with `begin_write`.
    pub(crate) fn bulk_pool(&self) -> Option<&sqlx::PgPool> {
        self.bulk.as_ref()
    }

    /// The SQLite url for a file path, creating the file when missing.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Apply pending migrations; applied ones are checked against their checksums, so
    /// running this on every start is safe.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Readiness: can we get a connection and run a query right now?
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// Readiness in full: the database answers, it is the one opened (SQLite: the same file
    /// is still at its path), and its schema is the one this build migrates to. A database
    /// dropped and recreated empty, or a deleted file, answers queries and is still not ready.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        if let Some(opened) = &self.opened_file {
            match FileIdentity::of(&opened.path) {
                Ok(identity) if identity == opened.identity => {}
                Ok(_) => return Err(NotReady::FileReplaced),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(NotReady::FileMissing),
                Err(error) => return Err(NotReady::Unreachable(StoreError::Database(sqlx::Error::Io(error)))),
            }
        }
        let expected = self.migrator().iter().map(|migration| migration.version).max().unwrap_or(0);
        let found: Option<i64> = match sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
        {
            Ok(found) => found,
            // The server answered, but has no migrations table: an empty database.
            Err(sqlx::Error::Database(_)) => None,
            Err(other) => return Err(NotReady::Unreachable(StoreError::Database(other))),
        };
        if found == Some(expected) { Ok(()) } else { Err(NotReady::Schema { expected, found }) }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. SQLite takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// SQLITE_BUSY on the upgrade without ever waiting on the busy timeout.
    ///
    /// On SQLite, writers also queue on an in-process gate first: SQLite admits one writer
    /// at a time anyway, and waiting on a lock in SQLite's busy handler means sleeping in
    /// growing steps, which under load costs far more than the writes themselves.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let (gate, tx) = match self.backend {
            Backend::Sqlite => {
                let gate = Arc::clone(&self.write_gate).lock_owned().await;
                (Some(gate), self.pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres => (None, self.pool.begin().await?),
        };
        Ok(WriteTx { tx, _gate: gate, audit_keys: self.audit_keys.get() })
    }

    /// Run one statement built at run time (administrative use: creating test databases).
    /// Never pass it anything derived from a request.
    pub async fn execute_raw(&self, statement: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(bulk) = &self.bulk {
            bulk.close().await;
        }
    }
}
