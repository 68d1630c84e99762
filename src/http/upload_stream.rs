//! An uploaded file spooled to an unlinked temporary file before anything reads it: the batch
//! upload is one write transaction, and on SQLite (a single writer) a client sending its body
//! slowly would otherwise hold the database's write lock for as long as it takes. Spooled, the
//! transaction lasts as long as the parse, whatever the connection. The REST batch upload and
//! the console's batch upload form both come through here; the file never sits in memory
//! (one write buffer), and is gone with the reader (or a crash).

use std::io::{self, Seek as _};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::AsyncWriteExt as _;

/// Bytes gathered before each write to the spool file.
const SPOOL_BUFFER_BYTES: usize = 1 << 20;
/// Bytes the spooled file is read with.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Why a file could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    /// The body did not arrive whole (the connection broke or was cut off).
    #[error("the file could not be read to its end: {0}")]
    Body(io::Error),
    /// The temporary file could not be written (disk full, no temporary directory).
    #[error("cannot spool the file: {0}")]
    Disk(io::Error),
}

/// The spooled file, read from its start.
pub type Spooled = io::BufReader<std::fs::File>;

/// Read `file` to its end into an unlinked temporary file (in `TMPDIR`), refusing it as soon as
/// more than `limit_bytes` came.
pub async fn spool<S, E>(mut file: S, limit_bytes: usize) -> Result<Spooled, SpoolError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let created = tokio::task::spawn_blocking(tempfile::tempfile).await.map_err(|e| SpoolError::Disk(e.into()))?;
    let mut out = tokio::io::BufWriter::with_capacity(
        SPOOL_BUFFER_BYTES,
        tokio::fs::File::from_std(created.map_err(SpoolError::Disk)?),
    );
    let mut seen = 0usize;
    while let Some(frame) = file.next().await {
        let data = frame.map_err(|error| SpoolError::Body(io::Error::other(error)))?;
        seen = seen.saturating_add(data.len());
        if seen > limit_bytes {
            return Err(SpoolError::TooLarge { limit_bytes });
        }
        out.write_all(&data).await.map_err(SpoolError::Disk)?;
    }
    out.flush().await.map_err(SpoolError::Disk)?;
    let mut spooled = out.into_inner().into_std().await;
    tokio::task::spawn_blocking(move || {
        spooled.rewind()?;
        Ok(io::BufReader::with_capacity(READ_BUFFER_BYTES, spooled))
    })
    .await
    .map_err(|e| SpoolError::Disk(e.into()))?
    .map_err(SpoolError::Disk)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use axum::body::Body;

    use super::{SpoolError, spool};

    #[tokio::test]
    async fn an_upload_is_spooled_whole_and_one_over_the_limit_is_refused() {
        let file = "name,citizen_id\n".repeat(100_000).into_bytes();
        let mut spooled = spool(Body::from(file.clone()).into_data_stream(), file.len()).await.unwrap();
        let mut read = Vec::new();
        spooled.read_to_end(&mut read).unwrap();
        assert_eq!(read, file);
        let refused = spool(Body::from(file.clone()).into_data_stream(), file.len() - 1).await;
        assert!(matches!(refused, Err(SpoolError::TooLarge { limit_bytes }) if limit_bytes == file.len() - 1));
        let broken = futures_util::stream::iter([
            Ok(axum::body::Bytes::from_static(b"name\n")),
            Err(std::io::Error::other("reset")),
        ]);
        assert!(matches!(spool(broken, 1_000).await, Err(SpoolError::Body(_))));
    }
}
